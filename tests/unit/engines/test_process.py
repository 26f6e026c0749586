"""Engine processes: a child that ignores SIGTERM is killed after the grace period, its whole group goes, and a
death the rig did not cause is told apart from the rig's own stop."""

import os
import signal
import time

import psutil
import pytest

from bench.engines.base import EngineDriver
from bench.engines.process import ManagedProcess


class Holder(EngineDriver):
    """Just enough of a driver to read death() from a process it holds."""

    name = "test"

    def __init__(self, process):
        self._p = process

    @property
    def process(self):
        return self._p

    @classmethod
    def from_spec(cls, engine, context):
        raise NotImplementedError

    def start(self, run_dir):
        raise NotImplementedError

    def stop(self):
        self._p.stop(grace_s=0.5)

    def record(self):
        return {}


STUBBORN = ["sh", "-c", "trap '' TERM; sleep 60 & wait; sleep 60"]  # ignores SIGTERM, has a child


def until(condition, unmet, timeout_s=10.0):
    """Wait for condition() to come true, polling, and return its value; past the deadline fail with `unmet`."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout_s} s, {unmet}")
        time.sleep(0.01)
    return value


def sleeping_tree(proc):
    """The child's descendants once its `sleep` runs: the shell starts it only after its `trap` line, so from
    then on the shell and the sleep ignore SIGTERM as the test means them to."""

    def descendants():
        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
            return tree if any(p.name() == "sleep" for p in tree) else None
        except psutil.NoSuchProcess:  # a shell forked for a moment
            return None

    return until(descendants, "the child's sleep has not started")


def gone(pids):
    """No process left of these, but zombies (a SIGKILLed process still needs a CPU to exit: wait for this)."""

    def alive(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return not any(alive(pid) for pid in pids)


def test_a_child_that_ignores_sigterm_is_killed_with_its_group_after_the_grace(tmp_path):
    proc = ManagedProcess(STUBBORN, tmp_path / "engine.log")
    proc.start()
    children = [p.pid for p in sleeping_tree(proc)]
    started = time.monotonic()
    holder = Holder(proc)
    holder.stop()
    assert 0.5 <= time.monotonic() - started < 5
    assert proc.escalated and proc.popen.returncode == -signal.SIGKILL
    until(lambda: gone(children), "a descendant is still alive")
    assert holder.death() is None  # the rig's own SIGKILL after the grace is not a death


def test_a_child_that_ignores_sigterm_is_killed_when_the_leader_exits_within_the_grace(tmp_path):
    """The leader goes at SIGTERM (no escalation), but its worker ignores it, as an engine's worker process
    may: the stop still leaves nothing of the group alive."""
    proc = ManagedProcess(["sh", "-c", "(trap '' TERM; sleep 60) & wait"], tmp_path / "engine.log")
    proc.start()
    children = [p.pid for p in sleeping_tree(proc)]
    proc.stop(grace_s=2.0)
    assert not proc.escalated and proc.popen.returncode == -signal.SIGTERM
    until(lambda: gone(children), "a descendant is still alive")


def test_an_engine_killed_by_someone_else_is_a_death_even_after_a_clean_stop(tmp_path):
    proc = ManagedProcess(["sleep", "60"], tmp_path / "engine.log")
    proc.start()
    holder = Holder(proc)
    os.kill(proc.pid, signal.SIGKILL)
    # until it has died, but unreaped: stop() reaps it, as in a run
    until(lambda: os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG), "the engine has not died")
    holder.stop()
    assert proc.exited_before_stop and "exited with code -9 before the run ended" in holder.death()


def test_an_engine_that_outlives_sigkill_is_an_error_not_a_hang_or_a_traceback(tmp_path, monkeypatch):
    """A process stuck in the kernel (a GPU driver call) survives SIGKILL past the grace: stop() says so as an
    EngineError, after the group and the remembered descendants were signalled, and keeps it for the exit
    sweep. Stuck is replayed here: the child's wait and poll say it still runs."""
    import subprocess

    from bench.engines import process as process_module
    from bench.errors import EngineError

    proc = ManagedProcess(STUBBORN, tmp_path / "engine.log")
    proc.start()
    children = [p.pid for p in sleeping_tree(proc)]
    real_wait, real_poll = proc.popen.wait, proc.popen.poll

    def stuck_wait(timeout=None):
        raise subprocess.TimeoutExpired(proc.argv, timeout)

    monkeypatch.setattr(proc.popen, "wait", stuck_wait)
    monkeypatch.setattr(proc.popen, "poll", lambda: None)
    with pytest.raises(EngineError, match=r"did not exit 0.2 s after SIGKILL"):
        proc.stop(grace_s=0.2)
    assert proc.escalated and proc in process_module._live
    monkeypatch.setattr(proc.popen, "wait", real_wait)
    monkeypatch.setattr(proc.popen, "poll", real_poll)
    until(lambda: gone(children), "a descendant is still alive")  # the SIGKILLs were sent all the same
    assert proc.stop(grace_s=2.0) == -signal.SIGKILL and proc not in process_module._live
