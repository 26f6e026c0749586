"""What a person sees while a run goes: notes on stderr, and live progress per stage.

On a terminal, one live bar per stage (rich): measured requests done of planned, failures, req/s,
output tok/s (inputs/s and input tok/s for embeddings and rerank), elapsed and remaining time;
finished stages stay on screen. When stderr is not a terminal (CI logs), plain lines: the same
figures every PLAIN_INTERVAL_S seconds and at each stage's end. Redraws happen on the client's
event loop between requests, never from another thread, so no redraw lands inside a timestamp.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from bench.load.plan import Stage
from bench.records import RequestRecord

PLAIN_INTERVAL_S = 5.0
LIVE_INTERVAL_S = 0.25


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StageCounts:
    """What has landed of one stage so far."""

    def __init__(self, stage: Stage, total_stages: int) -> None:
        self.label = f"stage {stage.index + 1}/{total_stages} {stage.schedule.label()}"
        self.planned = stage.requests
        self.duration_s = stage.duration_s
        self.phases = {"warmup": 0, "measured": 0, "cooldown": 0}
        self.ok = self.failed = self.cancelled = 0
        self.output_tokens = 0
        self.inputs = self.input_tokens = 0  # embeddings and rerank: nothing is generated
        self.started = time.monotonic()

    def add(self, record: RequestRecord) -> None:
        self.phases[record.phase] = self.phases.get(record.phase, 0) + 1
        if record.status == "ok":
            self.ok += 1
            self.output_tokens += record.output_tokens or 0
            if record.inputs is not None:
                self.inputs += record.inputs
                self.input_tokens += record.prompt_tokens or 0
        elif record.status == "error":
            self.failed += 1
        else:
            self.cancelled += 1

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rates(self) -> str:
        elapsed = max(self.elapsed, 1e-9)
        if self.inputs:
            return f"{self.inputs / elapsed:6.1f} inputs/s | {self.input_tokens / elapsed:7.1f} in tok/s"
        return f"{self.ok / elapsed:5.2f} req/s | {self.output_tokens / elapsed:7.1f} out tok/s"

    def line(self) -> str:
        p = self.phases
        bound = f" (at most {self.duration_s:g} s)" if self.duration_s else ""
        return (
            f"{self.label} | measured {p['measured']}/{self.planned}{bound} (+{p['warmup']} warmup, "
            f"+{p['cooldown']} cooldown) | ok {self.ok} failed {self.failed} | {self.elapsed:6.1f} s | "
            f"{self.rates()}"
        )


class RunDisplay:
    """The quiet display (a run started from Python): notes and progress go nowhere."""

    def note(self, message: str) -> None:
        pass

    def stage_started(self, stage: Stage, total_stages: int) -> None:
        self.current = StageCounts(stage, total_stages)

    def record(self, record: RequestRecord) -> None:
        self.current.add(record)

    def tick(self) -> None:
        pass

    def stage_ended(self) -> None:
        pass

    def close(self) -> None:
        pass

    interval_s = PLAIN_INTERVAL_S


class PlainDisplay(RunDisplay):
    """Notes and progress as lines (CI logs)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.current: StageCounts | None = None

    def note(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def tick(self) -> None:
        if self.current is not None:
            self.note(self.current.line())

    def stage_ended(self) -> None:
        self.tick()
        self.current = None


class LiveDisplay(RunDisplay):
    """A rich progress bar per stage, redrawn from the event loop."""

    interval_s = LIVE_INTERVAL_S

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=stream)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
            auto_refresh=False,
        )
        self.progress.start()
        self.current: StageCounts | None = None
        self.task = None

    def note(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False)
        self.progress.refresh()

    def stage_started(self, stage: Stage, total_stages: int) -> None:
        self.current = StageCounts(stage, total_stages)
        self.task = self.progress.add_task(self.current.label, total=stage.requests, detail="")
        self.progress.refresh()

    def tick(self) -> None:
        c = self.current
        if c is None or self.task is None:
            return
        extra = f"+{c.phases['warmup']} warmup" if not c.phases["measured"] else ""
        detail = f"failed {c.failed} | {c.rates()} {extra}".rstrip()
        self.progress.update(self.task, completed=c.phases["measured"], detail=detail)
        self.progress.refresh()

    def stage_ended(self) -> None:
        self.tick()
        self.current = None

    def close(self) -> None:
        self.progress.stop()


def display_for(stream: TextIO = sys.stderr) -> RunDisplay:
    return LiveDisplay(stream) if stream.isatty() else PlainDisplay(stream)
