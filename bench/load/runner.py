"""The load generator: runs stages (closed-loop or open-loop) and hands every finished request to `sink`.

It knows schedules, phases and records; it does not know which engine is behind the endpoint.
Each request that ends, well or badly, becomes one record at once (the run directory appends it
to disk). A stage stops by request count, duration, max errors or error rate; the run stops when
the engine fails or when asked (Ctrl-C, SIGTERM). Requests then in flight are cancelled and
recorded as cancelled.

Phases. Within a stage, the first requests are `warmup`, then `measured`, then `cooldown`; warmup
and cooldown are extra requests (by count and/or seconds) that keep the load steady while the
measured ones start and finish. All are written to disk; metrics use `measured` only. In an open
loop a request's phase follows from its *intended* send time, so it is a function of the schedule.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import math
import os
import platform
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.clients.base import PreparedRequest
from bench.clients.http import ClientLimitError, perf_ns
from bench.clients.streaming import StreamingClient
from bench.load.plan import Stage
from bench.load.schedules import ClosedLoop, OpenLoop, TraceArrivals, intended_offsets
from bench.load.workload import WorkItem
from bench.records import RequestRecord

ENGINE_CHECK_INTERVAL_S = 0.1
ERROR_RATE_MIN_FINISHED = 10  # judge a stage's error rate only once this many requests ended
NS = 1_000_000_000


@dataclass
class StageOutcome:
    stage: int
    stop_reason: str | None  # why the stage ended early, or None
    sent: dict[str, int] = field(default_factory=dict)


def arrival_budget(stage: Stage) -> int:
    """How many arrivals to draw for an open-loop stage: its count bounds, plus what its time bounds (warmup,
    cooldown, ramp) can take. The arrivals in a time are random (Poisson, gamma), so drawing only their mean
    ended a timed cooldown early in about half the stages; this draws to 8 standard deviations above it. The
    clock ends the stage; draws are one sequence, so the first arrivals are the same whatever the budget."""
    schedule = stage.schedule
    if isinstance(schedule, TraceArrivals):
        return len(schedule.offsets_s)
    assert isinstance(schedule, OpenLoop)
    expected = schedule.rate * (stage.warmup_s + stage.cooldown_s + schedule.ramp_s)
    # the count's variance over its mean: a renewal process's squared CV of its gaps
    spread = {"constant": 0.0, "poisson": 1.0}.get(schedule.arrival, 1.0 / max(schedule.burstiness, 1e-9))
    timed = expected + 8 * math.sqrt(expected * spread) + 8 if expected else 0
    return stage.warmup_requests + stage.requests + stage.cooldown_requests + math.ceil(timed)


class PhaseClock:
    """Which phase the next request of a stage belongs to, or None when the stage is done sending."""

    def __init__(self, stage: Stage, start_ns: int) -> None:
        self.stage = stage
        self.start_ns = start_ns
        self.sent = {"warmup": 0, "measured": 0, "cooldown": 0}
        self.measured_start_ns: int | None = None
        self.cooldown_start_ns: int | None = None

    def next(self, at_ns: int) -> str | None:
        s = self.stage
        if self.measured_start_ns is None:
            if self.sent["warmup"] < s.warmup_requests or at_ns - self.start_ns < s.warmup_s * NS:
                return self._take("warmup")
            self.measured_start_ns = at_ns
        if self.cooldown_start_ns is None:
            in_time = s.duration_s is None or at_ns - self.measured_start_ns < s.duration_s * NS
            if self.sent["measured"] < s.requests and in_time:
                return self._take("measured")
            self.cooldown_start_ns = at_ns
        if self.sent["cooldown"] < s.cooldown_requests or at_ns - self.cooldown_start_ns < s.cooldown_s * NS:
            return self._take("cooldown")
        return None

    def _take(self, phase: str) -> str:
        self.sent[phase] += 1
        return phase


def follow_up(chat: bool, previous: PreparedRequest, output: str, turn: PreparedRequest) -> PreparedRequest:
    """The next turn of a conversation: the earlier prompt and answer, then the new user text."""
    if chat:
        history = (
            previous.prompt if isinstance(previous.prompt, list) else [{"role": "user", "content": previous.prompt}]
        )
        new = turn.prompt if isinstance(turn.prompt, str) else turn.prompt[-1]["content"]
        prompt: Any = [*history, {"role": "assistant", "content": output}, {"role": "user", "content": new}]
    else:
        prompt = f"{previous.prompt}{output}\n\n{turn.prompt}"
    return PreparedRequest(prompt, turn.max_tokens, None, turn.extra_body)


class LoadRunner:
    def __init__(
        self,
        client: StreamingClient,
        work: Iterator[WorkItem],
        sink: Callable[[RequestRecord], None],
        engine_failure: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.client = client
        self.work = work
        self.sink = sink
        self.engine_failure = engine_failure
        self.stop_reason: str | None = None  # stops the whole run
        self._stage_stop: str | None = None  # stops the current stage
        self._in_flight: set[asyncio.Task] = set()
        self._next_id = 0
        self._young_work = 0  # starts and output times counted since this runner's last young collection
        self._finished = 0
        self._errors = 0
        self._finishing: asyncio.Queue = asyncio.Queue()
        self._stop_event = asyncio.Event()  # set by any stop; wakes the open-loop dispatcher
        self._limit: ClientLimitError | None = None  # a limit of this machine that stopped the run

    # -- stopping --------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop the run and cancel what is in flight (from a signal handler or the engine watcher)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._cancel_in_flight()

    def _stop_stage(self, reason: str) -> None:
        if self._stage_stop is None:
            self._stage_stop = reason
        self._cancel_in_flight()

    def _cancel_in_flight(self) -> None:
        self._stop_event.set()
        for task in list(self._in_flight):
            task.cancel()

    def _stopping(self) -> bool:
        return self.stop_reason is not None or self._stage_stop is not None

    # -- one work item ---------------------------------------------------------------------------
    async def _execute(self, item: WorkItem, stage: Stage, phase: str, worker: int, t_intended_ns: int | None,
                       ramp_level: float | None = None):  # fmt: skip
        previous: PreparedRequest | None = None
        output = ""
        conversation = len(item.turns) > 1
        for turn_index, turn in enumerate(item.turns):
            request = turn if previous is None else follow_up(self.client.chat, previous, output, turn)
            request_id = self._next_id
            self._next_id += 1
            load = {"stage": stage.index, "phase": phase, "case_id": item.case_id, "ramp_level": ramp_level}
            if t_intended_ns is not None:
                load["t_intended_ns"] = (t_intended_ns if turn_index == 0 else perf_ns()) - self.client.anchor_ns
            if item.conversation is not None:
                load.update(conversation=item.conversation, turn=turn_index)
            self._add_young_work(YOUNG_WORK_PER_START)
            started = perf_ns()
            try:
                sent = await self.client.send(request, worker, request_id)
            except asyncio.CancelledError:
                reason = f"cancelled in flight: {self.stop_reason or self._stage_stop}"
                self.sink(
                    _placed(self.client.unfinished(request, request_id, worker, started, "cancelled", reason), load)
                )
                raise
            except ClientLimitError as exc:  # no connection can be opened: every request would fail the same way
                self._limit = self._limit or exc
                self.sink(
                    _placed(self.client.unfinished(request, request_id, worker, started, "error", str(exc)), load)
                )
                self.request_stop(f"stopped by a limit of this machine: {exc}")
                return
            except Exception as exc:  # a client defect must cost one record, not a worker
                error = f"client error: {type(exc).__name__}: {exc}"
                self._finalize(
                    stage, _placed(self.client.unfinished(request, request_id, worker, started, "error", error), load)
                )
                return
            if sent.failed_early and (failure := self.engine_failure()):
                self.request_stop(failure)  # a dead engine fails requests in microseconds
            if not conversation:
                # Decoding waits its turn in the finalizer, so this worker sends its next request now
                # and no burst of decoding delays the timestamps of other streams.
                self._finishing.put_nowait((stage, sent, load))
                return
            record, cancelled = await self._decode_through_a_stop(sent)  # the next turn needs this answer now
            self._finalize(stage, _placed(record, load))
            if cancelled:
                raise asyncio.CancelledError
            if record.status != "ok" or self._stopping():
                return
            previous, output = request, record.output_text or ""

    def _add_young_work(self, work: int) -> None:
        """Collect the young generation once the work counted since this runner's last collection reaches
        YOUNG_WORK_PER_COLLECTION (see run_event_loop): a request start counts YOUNG_WORK_PER_START, a finished
        record its output times. Only while run_event_loop keeps the collector to the young generation."""
        if not _gc_by_runner:
            return
        self._young_work += work
        if self._young_work >= YOUNG_WORK_PER_COLLECTION:
            self._young_work = 0
            gc.collect(0)

    async def _decode(self, sent) -> RequestRecord:
        try:
            return await self.client.complete(sent)
        except Exception as exc:  # a decoding defect costs this record's details, never the run
            sent.record.status, sent.record.error = "error", f"client error: {type(exc).__name__}: {exc}"
            return self.client.mask(sent.record)

    async def _decode_through_a_stop(self, sent) -> tuple[RequestRecord, bool]:
        """The record of a response that has arrived, even where a stop cancels this task meanwhile (a tokenizer
        count is the one wait in a decode, and a short one); with it, whether a cancel came."""
        decoding = asyncio.ensure_future(self._decode(sent))
        cancelled = False
        while True:
            try:
                return await asyncio.shield(decoding), cancelled
            except asyncio.CancelledError:
                if decoding.cancelled():  # the decode itself was cancelled (never by a stop): nothing to keep
                    raise
                cancelled = True

    def _finalize(self, stage: Stage, record: RequestRecord) -> None:
        self.sink(record)
        self._count(stage, record)
        self._add_young_work(len(record.output_times_ns))  # its list is young until a collection follows it

    async def _finalizer(self) -> None:
        """Decodes finished responses one per event-loop turn, so sockets are polled between any two."""
        while True:
            job = await self._finishing.get()
            if job is None:
                return
            stage, sent, load = job
            self._finalize(stage, _placed(await self._decode(sent), load))
            await asyncio.sleep(0)

    def _count(self, stage: Stage, record: RequestRecord) -> None:
        self._finished += 1
        if record.status == "error":
            self._errors += 1
        if stage.max_errors is not None and self._errors > stage.max_errors:
            self._stop_stage(f"more than {stage.max_errors} errors")
        elif (
            stage.max_error_rate is not None
            and self._finished >= ERROR_RATE_MIN_FINISHED
            and self._errors / self._finished > stage.max_error_rate
        ):
            self._stop_stage(f"error rate {self._errors / self._finished:.0%} above {stage.max_error_rate:.0%}")

    async def _tracked(self, coro) -> None:
        task = asyncio.current_task()
        self._in_flight.add(task)
        try:
            await coro
        finally:
            self._in_flight.discard(task)

    # -- schedules -------------------------------------------------------------------------------
    async def _closed_loop(self, stage: Stage, clock: PhaseClock) -> None:
        schedule = stage.schedule
        assert isinstance(schedule, ClosedLoop)

        async def worker(worker_id: int, start_s: float) -> None:
            if start_s:  # a ramp: this stream joins later
                await self._wait_until(clock.start_ns + int(start_s * NS))
            while not self._stopping():
                now = perf_ns()
                phase = clock.next(now)
                item = next(self.work, None) if phase else None
                if item is None:
                    return
                level = schedule.level_at((now - clock.start_ns) / NS)
                await self._execute(item, stage, phase, worker_id, None, level)

        starts = schedule.start_offsets_s()
        tasks = [asyncio.create_task(self._tracked(worker(w, start))) for w, start in enumerate(starts)]
        await self._join(tasks)

    async def _open_loop(self, stage: Stage, clock: PhaseClock, seed: int) -> None:
        schedule = stage.schedule
        assert isinstance(schedule, OpenLoop | TraceArrivals)
        cap = asyncio.Semaphore(schedule.max_concurrency) if schedule.max_concurrency else None
        budget = arrival_budget(stage)
        tasks: list[asyncio.Task] = []

        async def send(item: WorkItem, phase: str, index: int, t_intended: int, level: float | None) -> None:
            if cap is None:
                return await self._execute(item, stage, phase, index, t_intended, level)
            async with cap:  # the wait here is client queueing: t_send - t_intended shows it
                await self._execute(item, stage, phase, index, t_intended, level)

        for index, offset in enumerate(intended_offsets(schedule, budget, seed, stage.index)):
            intended = clock.start_ns + round(offset * NS)
            phase = clock.next(intended)
            if phase is None or self._stopping():
                break
            await self._wait_until(intended)
            if self._stopping():
                break
            item = next(self.work, None)
            if item is None:
                break
            level = schedule.level_at(offset)
            tasks.append(asyncio.create_task(self._tracked(send(item, phase, index, intended, level))))
        await self._join(tasks)

    async def _wait_until(self, t_ns: int) -> None:
        """Sleep until t_ns, never earlier: the loop's timers have millisecond resolution and may fire
        early, so the last stretch yields to the loop (which still polls sockets) until the time comes."""
        delay = (t_ns - perf_ns()) / NS
        if delay > 0.002:
            try:  # a stop ends the wait at once, however low the rate
                await asyncio.wait_for(self._stop_event.wait(), delay - 0.001)
            except TimeoutError:
                pass
        while perf_ns() < t_ns and not self._stopping():
            await asyncio.sleep(0)

    @staticmethod
    async def _join(tasks: list[asyncio.Task]) -> None:
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
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

    async def run_stage(self, stage: Stage, seed: int = 0) -> StageOutcome:
        self._stage_stop = None
        if self.stop_reason is None:
            self._stop_event.clear()
        self._finished = self._errors = 0
        schedule = stage.schedule
        closed = isinstance(schedule, ClosedLoop)
        streams = schedule.concurrency if closed else getattr(schedule, "max_concurrency", None)
        if streams:
            self.client.http.reserve(streams)  # raises ClientLimitError, naming the limit, before anything is sent
        clock = PhaseClock(stage, perf_ns())
        watcher = asyncio.create_task(self._watch_engine())
        finalizer = asyncio.create_task(self._finalizer())
        try:
            if self.stop_reason is None:
                if isinstance(stage.schedule, ClosedLoop):
                    await self._closed_loop(stage, clock)
                else:
                    await self._open_loop(stage, clock, seed)
        finally:
            watcher.cancel()
            self._finishing.put_nowait(None)  # every finished request is decoded and written, even on stop
            await finalizer
            if _gc_by_runner:
                gc.collect()  # between stages nothing is timed: the older generations too
        if self._limit is not None:
            raise self._limit  # a BenchError: the run ends with its message
        # A request that failed because the engine died may end before the watcher notices.
        if self.stop_reason is None and (failure := self.engine_failure()):
            self.stop_reason = failure
        return StageOutcome(stage.index, self._stage_stop, dict(clock.sent))


def _placed(record: RequestRecord, load: dict[str, Any]) -> RequestRecord:
    """The record with where the load generator put it: stage, phase, intended time, conversation, case."""
    for name, value in load.items():
        setattr(record, name, value)
    return record


LATENCY_SLICE_NS = 100_000  # the shortest slice Linux grants (0.1 ms)
YOUNG_THRESHOLD = 100  # new tracked objects (net) that start a young collection while the load runs
# How much a young collection may follow, counted as references (an object of a request start, an item of a list):
# at about 45 ns each on the development VM, 2,048 are about 0.1 ms, well under a token gap.
YOUNG_WORK_PER_COLLECTION = 2048
YOUNG_WORK_PER_START = 64  # a request start's new objects (its task, coroutines, futures, response): 32 per collection
YOUNG_ONLY = 2**31 - 1  # a threshold for the older generations that is never reached
_gc_by_runner = False  # run_event_loop keeps the collector to the young generation: LoadRunner collects
_latency_slice_ns = 0  # the slice run_event_loop asked for (restored when busy-polling stops)
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274, "arm64": 274}


def request_latency_slice(slice_ns: int) -> bool:
    """Ask Linux (6.12 and later, EEVDF) for a short scheduler slice for the calling thread, so that when a
    read wakes it on a core another task is using (the engine, or the server that just wrote the token) it
    preempts that task at once instead of waiting for the task's slice to end. No privilege is needed and
    the thread's share of the CPU is unchanged (that is its nice value); 0 restores the default slice.
    Returns whether the kernel took it (older kernels and other systems ignore it)."""
    number = _SCHED_SETATTR.get(platform.machine())
    if not sys.platform.startswith("linux") or number is None:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        # struct sched_attr (version 1, 56 bytes): size, policy SCHED_OTHER, flags, nice, priority,
        # runtime (the slice), deadline, period, util_min, util_max
        attr = ctypes.create_string_buffer(struct.pack("IIQiIQQQII", 56, 0, 0, nice, 0, slice_ns, 0, 0, 0, 0))
        if libc.syscall(number, 0, attr, 0) != 0:
            return False
        if not slice_ns:
            return True
        with open("/proc/thread-self/sched") as handle:  # a kernel without custom slices ignores the runtime
            return any(line.startswith("se.slice") and int(line.split(":")[1]) == slice_ns for line in handle)
    except (OSError, ValueError, AttributeError):
        return False


def run_event_loop(coro_factory, latency_slice_ns: int = LATENCY_SLICE_NS) -> Any:
    """Run the client's event loop: on uvloop where installed (its lower per-event overhead tightens
    timestamps), on a thread that asked for a short scheduler slice (request_latency_slice), with the
    garbage collector kept from pausing the loop at random.

    Python's collector runs when enough objects were allocated, wherever that happens (in the middle of
    a read's callback too), and a collection of the older generations walks every live object: at 256
    streams x 256 tokens it paused the loop for 100-190 ms at a time, which landed in the timestamps
    of every stream then in flight. Here everything that exists before the load starts is frozen out
    of collection, only the young generation is collected while the load runs, and LoadRunner collects
    everything between stages. The young generation is collected as it fills (Python's own threshold,
    YOUNG_THRESHOLD objects) and by LoadRunner whenever the request starts and output times it counted since
    its own last collection reach YOUNG_WORK_PER_COLLECTION (a start counts YOUNG_WORK_PER_START, a finished
    record its output times: 32 starts, 8 records of 256 tokens, or any mix). Python's count alone
    does not bound it: the count is new objects less freed ones, and a wave frees as many old requests'
    objects as it makes new ones. Collected once per decoded response, a young collection held what a wave
    of 1,024 request starts had allocated (10,177 objects under a count of 100) and took 9-26 ms; collected
    by the count and every 32 starts, one held the records of a wave of ~100 decodes (the lists of their
    output times: 27,000 references) and took 0.5-1.4 ms, over a 1 ms token gap. Either way first tokens
    queued up unread (bench.clients.http). The timed path allocates nothing the collector tracks (http.py
    keeps times and bytes in plain lists), so no collection starts inside a read."""
    global _gc_by_runner, _latency_slice_ns
    sliced = latency_slice_ns > 0 and request_latency_slice(latency_slice_ns)
    _latency_slice_ns = latency_slice_ns if sliced else 0
    managed = gc.isenabled() and not _gc_by_runner
    thresholds = gc.get_threshold()
    if managed:
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, YOUNG_ONLY, YOUNG_ONLY)
        _gc_by_runner = True
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(coro_factory())
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro_factory())
    finally:
        if managed:
            _gc_by_runner = False
            gc.set_threshold(*thresholds)
            gc.unfreeze()
        if sliced:
            _latency_slice_ns = 0
            request_latency_slice(0)


async def keep_loop_hot() -> None:
    """Busy-poll: keep the event loop from sleeping in the kernel, at the cost of one core.

    Where reads carry the kernel's receive time (bench.clients.http: Linux, plain http) how soon the
    loop wakes no longer enters a timestamp, and this only shortens how late reads are (so fewer
    tokens of one stream are ever read together). Where they carry the loop's read time (https, other
    systems) it removes the kernel's (and a VM's) wake-up latency from every timestamp. Either way it
    helps only with a core to spare: on a machine whose cores are busy the spinning loop waits its
    turn like any other task, where a sleeping one is woken at once. While it spins the loop thread
    runs with the kernel's default slice: a spinner on a short one is preempted every 0.1 ms when
    another task wants the core, and a preemption between reading the clock for a send and the send
    itself would land in that request's TTFT.
    """
    request_latency_slice(0)
    try:
        while True:
            await asyncio.sleep(0)
    finally:
        if _latency_slice_ns:
            request_latency_slice(_latency_slice_ns)
