"""The closed-loop load generator: N workers, each sending its next request when the last one ends.

It knows schedules and records; it does not know which engine is behind the endpoint. Every
request that ends, well or badly, becomes one record handed to `sink` at once (the run directory
appends it to disk). The run stops by request count, by duration, when the engine fails, or when
asked to stop (Ctrl-C, SIGTERM); requests then in flight are cancelled and recorded as cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.clients.http import perf_ns
from bench.clients.openai import OpenAIClient, PreparedRequest

ENGINE_CHECK_INTERVAL_S = 0.1


@dataclass
class LoadResult:
    stop_reason: str | None  # None: every planned request ran (or the duration ended)
    measured_started_ns: int | None


class ClosedLoop:
    def __init__(
        self,
        client: OpenAIClient,
        concurrency: int,
        sink: Callable[[dict[str, Any]], None],
        engine_failure: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.client = client
        self.concurrency = concurrency
        self.sink = sink
        self.engine_failure = engine_failure
        self.stop_reason: str | None = None
        self._tasks: list[asyncio.Task] = []

    def request_stop(self, reason: str) -> None:
        """Stop sending and cancel what is in flight (from a signal handler or the engine watcher)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        for task in self._tasks:
            task.cancel()

    async def _worker(self, worker_id: int, queue: list[PreparedRequest], deadline_ns: int | None) -> None:
        while queue and self.stop_reason is None:
            if deadline_ns is not None and perf_ns() >= deadline_ns:
                return
            request = queue.pop()
            started = perf_ns()
            try:
                record = await self.client.execute(request, worker_id)
            except asyncio.CancelledError:
                self.sink(
                    self._unfinished(
                        request, worker_id, started, "cancelled", f"cancelled in flight: {self.stop_reason}"
                    )
                )
                raise
            except Exception as exc:  # a client defect must cost one record, not a worker
                record = self._unfinished(
                    request, worker_id, started, "error", f"client error: {type(exc).__name__}: {exc}"
                )
            self.sink(record)

    def _unfinished(
        self, request: PreparedRequest, worker_id: int, started_ns: int, status: str, error: str
    ) -> dict[str, Any]:
        anchor = self.client.anchor_ns
        return {
            "request_id": request.request_id,
            "phase": request.phase,
            "worker": worker_id,
            "max_tokens": request.max_tokens,
            "prompt_tokens_expected": request.prompt_tokens_expected,
            "status": status,
            "error": error,
            "t_send_ns": started_ns - anchor,
            "t_end_ns": perf_ns() - anchor,
            "output_times_ns": [],
            "output_tokens": None,
            "prompt_tokens": None,
            "tokens_source": None,
        }

    async def _phase(self, requests: list[PreparedRequest], duration_s: float | None) -> None:
        queue = list(reversed(requests))  # pop() from the end keeps request order
        deadline = perf_ns() + int(duration_s * 1e9) if duration_s else None
        self._tasks = [asyncio.create_task(self._worker(w, queue, deadline)) for w in range(self.concurrency)]
        outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for outcome in outcomes:  # cancellation is expected on stop; anything else is a defect to surface
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome

    async def _watch_engine(self) -> None:
        while True:
            await asyncio.sleep(ENGINE_CHECK_INTERVAL_S)
            failure = self.engine_failure()
            if failure:
                self.request_stop(failure)
                return

    async def run(
        self, warmup: list[PreparedRequest], measured: list[PreparedRequest], duration_s: float | None
    ) -> LoadResult:
        watcher = asyncio.create_task(self._watch_engine())
        measured_started = None
        try:
            if warmup:
                await self._phase(warmup, None)
            if self.stop_reason is None:
                measured_started = perf_ns()
                await self._phase(measured, duration_s)
        finally:
            watcher.cancel()
        # A request that failed because the engine died may finish before the watcher notices.
        if self.stop_reason is None and (failure := self.engine_failure()):
            self.stop_reason = failure
        return LoadResult(self.stop_reason, measured_started)
