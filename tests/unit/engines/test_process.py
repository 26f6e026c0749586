"""Engine processes: a child that ignores SIGTERM is killed after the grace period, its whole group goes, and a
death the rig did not cause is told apart from the rig's own stop."""

import os
import signal
import time

import psutil

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


def test_a_child_that_ignores_sigterm_is_killed_with_its_group_after_the_grace(tmp_path):
    proc = ManagedProcess(STUBBORN, tmp_path / "engine.log")
    proc.start()
    time.sleep(0.3)
    children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    started = time.monotonic()
    holder = Holder(proc)
    holder.stop()
    assert 0.5 <= time.monotonic() - started < 5
    assert proc.escalated and proc.popen.returncode == -signal.SIGKILL
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in children)
    assert holder.death() is None  # the rig's own SIGKILL after the grace is not a death


def test_a_child_that_ignores_sigterm_is_killed_when_the_leader_exits_within_the_grace(tmp_path):
    """The leader goes at SIGTERM (no escalation), but its worker ignores it, as an engine's worker process
    may: the stop still leaves nothing of the group alive."""
    proc = ManagedProcess(["sh", "-c", "(trap '' TERM; sleep 60) & wait"], tmp_path / "engine.log")
    proc.start()
    time.sleep(0.3)
    children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    assert children
    proc.stop(grace_s=2.0)
    time.sleep(0.1)
    assert not proc.escalated and proc.popen.returncode == -signal.SIGTERM
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in children)


def test_an_engine_killed_by_someone_else_is_a_death_even_after_a_clean_stop(tmp_path):
    proc = ManagedProcess(["sleep", "60"], tmp_path / "engine.log")
    proc.start()
    holder = Holder(proc)
    os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.2)
    holder.stop()
    assert proc.exited_before_stop and "exited with code -9 before the run ended" in holder.death()
