"""Load from several client hosts: `bench run --endpoint URL --load-workers N [--ray ADDRESS]`.

For endpoints that one client host cannot saturate (or, with `--ray ADDRESS` and one worker, to generate
the load from a cluster node rather than this machine). N Ray actors (one CPU each, spread over the nodes:
each on its own process, on its own node where the cluster has enough) each run this rig's own
LoadRunner and StreamingClient against the endpoint, driving their share of every stage:

    closed loop, C streams    worker w gets C_w streams (C split as evenly as possible) and the same share
                              of the stage's measured, warmup and cooldown requests
    open loop, rate R         each of the k active workers sends at R / k with arrivals of its own seed
                              (seed * 1000 + w); the sum of k Poisson streams is Poisson at R; constant
                              arrivals are phased w / R apart so the merged stream stays evenly spaced;
                              a max-concurrency cap is split like streams
    bounds and phases         each worker's phases use its share of the counts and the stage's own
                              durations; max_errors and max_error_rate are judged here, on the merged
                              records, and stop every worker's stage, as they stop one host's

Prompts are made here, once, exactly as for one host, and dealt round robin to the workers before the
stage starts (a worker that runs out before its time-bounded phase ends says so: the stage then stopped
early and the run is incomplete). Every stage starts at one moment on the common clock.

Clocks. A request's durations (TTFT, TPOT, ITL, E2E) are differences of its own host's monotonic clock,
so no clock synchronisation touches them. Stage windows and throughput span hosts, so every record is
moved onto one common clock, this process's perf_counter (the manifest's `clock` gives its wall time):
at start, each worker's offset to it is measured by CLOCK_SAMPLES round trips (offset = worker's clock
minus the midpoint of the round trip, from the fastest trip; its uncertainty is half that trip), and each
of that worker's times is shifted by one integer, shift_ns = worker anchor - offset - this anchor, which
leaves every duration exactly as measured. Offsets are measured again at the end: the drift is recorded.
Each host's own wall clock against this one's (NTP's quality) is recorded too, as a diagnostic only.

The merged requests.jsonl is written as records arrive (workers are polled every POLL_S); `worker` in a
record is the load worker's index, and the manifest's `load_workers` says which host each one ran on,
its clock measurements and its share of each stage. The summary is bench.analysis's, of the merged records,
the same function as for one host.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from bench.clients.dialects import dialect
from bench.clients.http import HttpClient, perf_ns
from bench.clients.streaming import StreamingClient
from bench.errors import BenchError, UsageError
from bench.load.plan import Stage
from bench.load.runner import ERROR_RATE_MIN_FINISHED, LoadRunner, StageOutcome, keep_loop_hot
from bench.load.schedules import ClosedLoop, OpenLoop
from bench.load.workload import WorkItem
from bench.records import RequestRecord
from bench.scale.cluster import alive_nodes, connect, node_record, ray_available, require_ray

NS = 1_000_000_000
CLOCK_SAMPLES = 16
POLL_S = 0.2
START_LEAD_S = 0.3  # each stage starts this far ahead, so every worker has its call before the moment comes
ACTOR_START_TIMEOUT_S = 180.0
REQUESTS_PER_STREAM_SECOND = 8  # items for time-bounded phases: twice bench.run's guess, so none run short
SEED_STRIDE = 1000
TIME_FIELDS = ("t_intended_ns", "t_send_ns", "t_end_ns")


def check(spec) -> None:
    """Prepare-time checks (nothing started): the spec asks for workers and Ray is installed."""
    if spec.load.on_ray and not ray_available():
        require_ray("--load-workers")


# -- splitting a stage ---------------------------------------------------------------------------
def shares(total: int, weights: list[int]) -> list[int]:
    """total split in proportion to weights, in whole numbers (largest remainders first, ties to the lowest)."""
    weight = sum(weights)
    if weight == 0:
        return [0] * len(weights)
    exact = [total * w / weight for w in weights]
    out = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def split_stage(stage: Stage, workers: int) -> list[Stage | None]:
    """Each worker's part of a stage (None: a worker with no share, e.g. fewer streams than workers)."""
    schedule = stage.schedule
    if isinstance(schedule, ClosedLoop):
        streams = shares(schedule.concurrency, [1] * workers)
        weights = streams
    elif isinstance(schedule, OpenLoop):
        caps = shares(schedule.max_concurrency, [1] * workers) if schedule.max_concurrency else [1] * workers
        weights = [1 if c else 0 for c in caps]
    else:
        raise UsageError(
            f"--load-workers: stage {stage.index} ({type(schedule).__name__}) cannot be split over workers"
        )
    active = sum(1 for w in weights if w)
    measured = shares(stage.requests, weights)
    warmup = shares(stage.warmup_requests, weights)
    cooldown = shares(stage.cooldown_requests, weights)
    ramp_from = getattr(schedule, "ramp_from", None)  # a ramp's start, where the schedule has one
    parts: list[Stage | None] = []
    for w in range(workers):
        if not weights[w]:
            parts.append(None)
            continue
        if isinstance(schedule, ClosedLoop):
            changes: dict[str, Any] = {"concurrency": streams[w]}
            if ramp_from:
                changes["ramp_from"] = max(1, shares(ramp_from, streams)[w])
        else:
            changes = {"rate": schedule.rate / active}
            if schedule.max_concurrency:
                changes["max_concurrency"] = caps[w]
            if ramp_from:
                changes["ramp_from"] = ramp_from / active
        parts.append(
            replace(
                stage,
                schedule=replace(schedule, **changes),
                requests=measured[w],
                warmup_requests=warmup[w],
                cooldown_requests=cooldown[w],
                max_errors=None,  # judged on the merged records (WorkerPool), as one host judges them
                max_error_rate=None,
            )
        )
    return parts


def items_needed(part: Stage) -> int:
    """Work items for a worker's part: its counts, and for time-bounded warmup or cooldown a generous guess."""
    per_second = (
        part.schedule.rate
        if isinstance(part.schedule, OpenLoop)
        else part.schedule.concurrency * REQUESTS_PER_STREAM_SECOND
    )
    counted = part.warmup_requests + part.requests + part.cooldown_requests
    return counted + math.ceil(per_second * (part.warmup_s + part.cooldown_s))


def shift_record(record: RequestRecord, shift_ns: int) -> RequestRecord:
    """The record on the common clock: every time moved by one integer, so every duration is unchanged."""
    for name in TIME_FIELDS:
        value = getattr(record, name)
        if value is not None:
            setattr(record, name, value + shift_ns)
    record.output_times_ns = [t + shift_ns for t in record.output_times_ns]
    return record


def best_sample(samples: list[tuple[int, int, int, int]]) -> dict[str, int]:
    """The clock offset from (t0, worker perf, worker unix, t1) round trips: the fastest trip's midpoint."""
    t0, tw, tw_unix, t1 = min(samples, key=lambda s: s[3] - s[0])
    rtt = t1 - t0
    return {
        "offset_ns": tw - (t0 + t1) // 2,
        "rtt_ns": rtt,
        "uncertainty_ns": rtt // 2,
        "worker_unix_ns": tw_unix,
        "coordinator_mid_perf_ns": (t0 + t1) // 2,
        "samples": len(samples),
    }


# -- one worker ----------------------------------------------------------------------------------
class Feed:
    """A worker's dealt work items; `exhausted` says whether a phase wanted more than it was given."""

    def __init__(self, items: list[WorkItem]) -> None:
        self.items: Iterator[WorkItem] = iter(items)
        self.used = 0
        self.exhausted = False

    def __iter__(self):
        return self

    def __next__(self) -> WorkItem:
        try:
            item = next(self.items)
        except StopIteration:
            self.exhausted = True
            raise
        self.used += 1
        return item


class LoadWorker:
    """One load generator (a Ray actor; plain Python too): a persistent event loop on its own thread with
    one StreamingClient (connections kept across stages) and a fresh LoadRunner per stage. Finished records
    wait in a queue until `drain`."""

    def __init__(
        self,
        index: int,
        base_url: str,
        headers: dict[str, str],
        api: str,
        model: str,
        sampling: dict[str, Any],
        timeout_s: float,
        count_tokens: Callable[..., int] | None,
        secrets: list[str],
        busy_poll: bool,
    ) -> None:
        self.index = index
        self.args = (base_url, headers, api, model, sampling, timeout_s, count_tokens, secrets)
        self.busy_poll = busy_poll
        self.done: deque[RequestRecord] = deque()
        self.runner: LoadRunner | None = None
        self.stopped: str | None = None  # the whole run was stopped (see stop)
        self.client: StreamingClient | None = None
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"load-worker-{index}", daemon=True)
        self.thread.start()
        self.anchor_ns = perf_ns()
        self.anchor_unix_ns = time.time_ns()

    def identity(self) -> dict[str, Any]:
        return node_record() | {
            "index": self.index,
            "anchor_perf_counter_ns": self.anchor_ns,
            "anchor_unix_ns": self.anchor_unix_ns,
        }

    def clock(self) -> tuple[int, int]:
        return perf_ns(), time.time_ns()

    def run_stage(self, stage: Stage, items: list[WorkItem], seed: int, start_at_ns: int) -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(self._run(stage, items, seed, start_at_ns), self.loop).result()

    async def _run(self, stage: Stage, items: list[WorkItem], seed: int, start_at_ns: int) -> dict[str, Any]:
        if self.client is None:
            base_url, headers, api, model, sampling, timeout_s, count_tokens, secrets = self.args
            self.client = StreamingClient(
                HttpClient(base_url, headers),
                dialect(api),
                model,
                sampling,
                timeout_s,
                self.anchor_ns,
                count_tokens,
                secrets,
            )
        feed = Feed(items)
        runner = self.runner = LoadRunner(self.client, feed, self.done.append)
        if self.stopped is not None:  # the run's stop came before this stage's runner existed
            runner.request_stop(self.stopped)
        hot = asyncio.create_task(keep_loop_hot()) if self.busy_poll else None
        try:
            while perf_ns() < start_at_ns and runner.stop_reason is None:  # every worker starts at one moment
                remaining = (start_at_ns - perf_ns()) / NS
                await asyncio.sleep(remaining - 0.001 if remaining > 0.002 else 0)
            outcome = await runner.run_stage(stage, seed)
        finally:
            if hot is not None:
                hot.cancel()
        return {
            "sent": outcome.sent,
            "stage_stop": outcome.stop_reason,
            "run_stop": runner.stop_reason,
            "given": len(items),
            "used": feed.used,
            "exhausted": feed.exhausted,
            "started_perf_ns": start_at_ns,
        }

    def drain(self) -> list[RequestRecord]:
        out = []
        while self.done:
            out.append(self.done.popleft())
        return out

    def stop(self, reason: str, whole_run: bool = False) -> None:
        """Stop the stage running now; with whole_run, every later stage too (the run was stopped: a signal,
        a dead engine), even one whose runner does not exist yet."""
        if whole_run:
            self.stopped = self.stopped or reason
        runner = self.runner
        if runner is not None:
            self.loop.call_soon_threadsafe(runner.request_stop, reason)

    def close(self) -> None:
        if self.client is not None:
            asyncio.run_coroutine_threadsafe(self.client.http.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# -- the coordinator -----------------------------------------------------------------------------
class WorkerPool:
    """Stands in for LoadRunner in bench.run's stage loop: `run_stage`, `request_stop`, `stop_reason`.

    It drives the stage through the workers, merges their records onto the common clock and hands each to
    the run's sink (requests.jsonl, the live display) as it arrives."""

    def __init__(self, run, endpoint, work: Iterator[WorkItem], sink: Callable[[RequestRecord], None], sampling):
        self.run, self.endpoint, self.work, self.sink, self.sampling = run, endpoint, work, sink, sampling
        spec = run.p.spec
        self.n = spec.load.workers
        self.address = spec.load.ray_address
        self.engine_failure = run.p.driver.failure
        self.stop_reason: str | None = None
        self.actors: list[Any] = []
        self.workers: list[dict[str, Any]] = []
        self.section: dict[str, Any] = {}
        self.started = False
        self.private_ray = False
        self.next_id = 0
        self._stage_stop: str | None = None
        self._finished = self._errors = 0
        self.start()

    # -- start and clocks ------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to Ray, start the workers, measure their clocks, record them (before the first stage)."""
        ray = require_ray("--load-workers")
        self.private_ray = not ray.is_initialized() and self.address is None
        cluster = connect(self.address, "--load-workers", num_cpus=max(self.n, os.cpu_count() or 1))
        try:
            self._start_workers(ray, cluster)
        except BaseException:  # a clock, a CPU check or the manifest failed: no actor or private Ray outlives it
            self._kill()
            raise

    def _start_workers(self, ray, cluster: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # ray.init may have installed handlers of its own
            loop.add_signal_handler(signum, self._interrupted, signal.Signals(signum).name)
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in alive_nodes(ray))
        if cpus < self.n:
            raise UsageError(f"--load-workers {self.n}: the Ray cluster has {cpus:g} CPUs; each worker takes one")
        spec, p = self.run.p.spec, self.run.p
        actor_class = ray.remote(num_cpus=1, max_concurrency=4, max_restarts=0)(LoadWorker)
        e = self.endpoint
        self.actors = [
            actor_class.options(scheduling_strategy="SPREAD").remote(
                w,
                e.base_url,
                e.headers,
                e.api,
                e.model,
                self.sampling,
                p.request_timeout_s,
                e.count_tokens,
                p.driver.secrets,
                spec.client.busy_poll,
            )
            for w in range(self.n)
        ]
        try:
            identities = ray.get([a.identity.remote() for a in self.actors], timeout=ACTOR_START_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError) as exc:
            raise BenchError(
                f"--load-workers {self.n}: the load workers did not start ({type(exc).__name__}: {exc})"
            ) from None
        for identity in identities:
            clock = self._clock(self.actors[identity["index"]])
            identity["clock_start"] = clock
            identity["shift_ns"] = identity["anchor_perf_counter_ns"] - clock["offset_ns"] - self.run.anchor_perf
            self.workers.append(identity)
        self.section = {
            "count": self.n,
            "ray": cluster,
            "placement": "one Ray actor per worker, 1 CPU each, scheduling strategy SPREAD",
            "common_clock": "this run's perf_counter_ns (records are relative to clock.anchor_perf_counter_ns; "
            "clock.anchor_unix_ns gives its wall time)",
            "method": f"offset = worker perf_counter - midpoint of the fastest of {CLOCK_SAMPLES} round trips; "
            "uncertainty = half that trip; shift_ns = worker anchor - offset - run anchor, added to every time of "
            "that worker's records (durations unchanged)",
            "record_worker_field": "`worker` in requests.jsonl is the load worker's index below",
            "workers": self.workers,
            "stages": {},
        }
        self.run.manifest.load_workers = self.section
        self.run.write_manifest()
        self.started = True
        hosts = sorted({w.get("host") or "?" for w in self.workers})
        nodes = len({w.get("ray_node_id") for w in self.workers})
        worst = max(w["clock_start"]["uncertainty_ns"] for w in self.workers) / 1e6
        self.run.display.note(
            f"{self.n} load worker{'s' if self.n > 1 else ''} on {nodes} Ray node(s) ({', '.join(hosts)}); clock "
            f"offsets measured to +-{worst:.3f} ms"
        )

    def _clock(self, actor) -> dict[str, Any]:
        ray = require_ray("--load-workers")
        samples = []
        for _ in range(CLOCK_SAMPLES):
            t0 = perf_ns()
            tw, tw_unix = ray.get(actor.clock.remote(), timeout=30)
            samples.append((t0, tw, tw_unix, perf_ns()))
        best = best_sample(samples)
        anchor = self.run.anchor_perf
        coordinator_unix = self.run.manifest.clock.anchor_unix_ns + (best["coordinator_mid_perf_ns"] - anchor)
        best["wall_clock_offset_ns"] = best.pop("worker_unix_ns") - coordinator_unix
        best.pop("coordinator_mid_perf_ns")
        best["measured_at_unix_ns"] = coordinator_unix
        return best

    def _kill(self) -> None:
        ray = require_ray("--load-workers")
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.private_ray:
            ray.shutdown()
            self.private_ray = False

    # -- stopping --------------------------------------------------------------------------------
    def _interrupted(self, name: str) -> None:
        self.run.signalled = True  # exit 130 only for a signal (bench.run), not for a lost worker
        self.request_stop(f"interrupted by {name}")

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._tell_stop(reason, whole_run=True)

    def _tell_stop(self, reason: str, whole_run: bool = False) -> None:
        for actor in self.actors:
            actor.stop.remote(reason, whole_run)

    def _stop_stage(self, reason: str) -> None:
        if self._stage_stop is None:
            self._stage_stop = reason
            self._tell_stop(reason)

    def _count(self, stage: Stage, record: RequestRecord) -> None:
        """LoadRunner's stop rules, on the merged records."""
        self._finished += 1
        self._errors += record.status == "error"
        if stage.max_errors is not None and self._errors > stage.max_errors:
            self._stop_stage(f"more than {stage.max_errors} errors")
        elif (
            stage.max_error_rate is not None
            and self._finished >= ERROR_RATE_MIN_FINISHED
            and self._errors / self._finished > stage.max_error_rate
        ):
            self._stop_stage(f"error rate {self._errors / self._finished:.0%} above {stage.max_error_rate:.0%}")

    # -- one stage -------------------------------------------------------------------------------
    def _deal(self, parts: list[Stage | None]) -> list[list[WorkItem]]:
        wanted = [items_needed(p) if p is not None else 0 for p in parts]
        dealt: list[list[WorkItem]] = [[] for _ in parts]
        while any(len(d) < n for d, n in zip(dealt, wanted, strict=True)):
            for d, n in zip(dealt, wanted, strict=True):
                if len(d) < n:
                    item = next(self.work, None)
                    if item is None:
                        return dealt
                    d.append(item)
        return dealt

    def _take(self, w: int, records: list[RequestRecord], stage: Stage) -> None:
        shift = self.workers[w]["shift_ns"]
        for record in records:
            record.worker = w
            record.request_id = self.next_id
            self.next_id += 1
            shift_record(record, shift)
            self.sink(record)
            self._count(stage, record)

    async def _drain(self, stage: Stage) -> None:
        batches = await asyncio.gather(*(a.drain.remote() for a in self.actors))
        for w, records in enumerate(batches):
            self._take(w, records, stage)

    async def run_stage(self, stage: Stage, seed: int = 0) -> StageOutcome:
        ray = require_ray("--load-workers")
        self._stage_stop, self._finished, self._errors = None, 0, 0
        parts = split_stage(stage, self.n)
        dealt = self._deal(parts)
        start_at = perf_ns() + int(START_LEAD_S * NS)
        calls: dict[int, Any] = {}
        plan = []
        for w, part in enumerate(parts):
            if part is None:
                continue
            phase = 0
            if isinstance(part.schedule, OpenLoop) and part.schedule.arrival == "constant":
                active = sum(p is not None for p in parts)
                phase = int(w * NS / (part.schedule.rate * active))  # merged arrivals stay evenly spaced
            worker_start = start_at + phase + self.workers[w]["clock_start"]["offset_ns"]
            ref = self.actors[w].run_stage.remote(part, dealt[w], seed * SEED_STRIDE + w, worker_start)
            calls[w] = asyncio.ensure_future(ref)
            plan.append(
                {
                    "worker": w,
                    "schedule": part.record().schedule,
                    "requests": part.requests,
                    "warmup_requests": part.warmup_requests,
                    "cooldown_requests": part.cooldown_requests,
                    "items": len(dealt[w]),
                    "seed": seed * SEED_STRIDE + w,
                }
            )
        results: dict[int, Any] = {}
        pending = set(calls.values())
        while pending:
            done, pending = await asyncio.wait(pending, timeout=POLL_S)
            try:
                await self._drain(stage)
            except ray.exceptions.RayError as exc:
                self.request_stop(f"a load worker was lost ({type(exc).__name__})")
                break
            if self.stop_reason is None and (failure := self.engine_failure()):
                self.request_stop(failure)
        for w, future in calls.items():
            try:
                results[w] = await future
            except ray.exceptions.RayError as exc:
                host = self.workers[w].get("host")
                results[w] = {
                    "sent": {},
                    "stage_stop": None,
                    "lost": f"load worker {w} on {host} was lost: "
                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                }
                self.request_stop(results[w]["lost"])
        try:
            await self._drain(stage)
        except ray.exceptions.RayError:
            pass
        sent: dict[str, int] = {}
        reasons = [self._stage_stop] if self._stage_stop else []
        for entry in plan:
            r = results.get(entry["worker"], {})
            entry.update(sent=r.get("sent"), used=r.get("used"), stop=r.get("stage_stop") or r.get("lost"))
            for phase, count in (r.get("sent") or {}).items():
                sent[phase] = sent.get(phase, 0) + count
            if r.get("exhausted") and r.get("run_stop") is None and not self._stage_stop:
                reasons.append(f"load worker {entry['worker']} ran out of its {r['given']} prepared requests")
        self.section["stages"][str(stage.index)] = plan
        self.run.write_manifest()
        return StageOutcome(stage.index, "; ".join(reasons) or None, sent)

    # -- the end ---------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Offsets again (the drift since start), then the workers stop; a private Ray instance shuts down."""
        if not self.actors:
            return
        ray = require_ray("--load-workers")
        try:
            for worker in self.workers:
                end = self._clock(self.actors[worker["index"]])
                worker["clock_end"] = end
                worker["drift_ns"] = end["offset_ns"] - worker["clock_start"]["offset_ns"]
            ray.get([a.close.remote() for a in self.actors], timeout=30)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError) as exc:
            self.section["close_note"] = f"the workers could not be measured or closed at the end ({exc})"
        finally:
            self._kill()
            if self.section:
                self.run.write_manifest()
