"""Engine child processes: own process group, log to a file, stopped on every exit path."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path

import psutil

from bench.errors import EngineError

PR_SET_PDEATHSIG = 1
_live: set[ManagedProcess] = set()


def die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGKILL if the rig dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """A child in its own session and process group, so one signal reaches everything it spawns."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.popen: subprocess.Popen | None = None
        self._descendants: dict[int, psutil.Process] = {}  # kept as Process: kill() checks the pid was not reused
        self.exited_before_stop: bool | None = None  # known once stop() ran: it had ended by itself
        self.escalated = False  # stop() had to SIGKILL it after the grace period

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        _live.add(self)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def exit_code(self) -> int | None:
        """None while running."""
        return self.popen.poll() if self.popen else None

    def tree_pids(self) -> list[int]:
        """The child and all its descendants now (remembered, so stop() can reach ones that left the group)."""
        if not self.popen or self.popen.poll() is not None:
            return []
        try:
            root = psutil.Process(self.popen.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        for proc in tree:
            self._descendants.setdefault(proc.pid, proc)
        return [proc.pid for proc in tree]

    def log_tail(self, lines: int = 25) -> str:
        try:
            with self.log_path.open("r", encoding="utf-8", errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines)).rstrip()
        except FileNotFoundError:
            return "(no engine log)"

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM to the group, SIGKILL after the grace period; then sweep stray descendants."""
        if not self.popen:
            return None
        self.tree_pids()
        if self.exited_before_stop is None:
            self.exited_before_stop = self.popen.poll() is not None
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.escalated = True
                _signal_group(self.popen.pid, signal.SIGKILL)
                try:
                    self.popen.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:  # stuck in the kernel (a GPU driver call): say so, sweep the rest
                    pass
        _signal_group(self.popen.pid, signal.SIGKILL)  # children that outlived the leader
        for proc in self._descendants.values():
            try:
                proc.kill()  # psutil refuses a pid now held by another process
            except psutil.Error:
                pass
        if self.popen.poll() is None:
            raise EngineError(
                f"the engine (pid {self.popen.pid}) did not exit {grace_s:g} s after SIGKILL (stuck in the kernel, "
                "e.g. in a GPU driver call); it may still hold its port and memory"
            )
        _live.discard(self)
        return self.popen.returncode


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _stop_all() -> None:
    for proc in list(_live):
        try:
            proc.stop(grace_s=5.0)
        except EngineError:
            pass  # nothing more can be done at exit
