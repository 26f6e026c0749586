"""The load plan: the stages a spec's load section describes, each with every default resolved, and the
rules by which a multi-stage plan goes on or stops.

A plan is a fixed list of stages (closed-loop concurrencies, or open-loop rates), a trace replayed as
one stage, a sweep (as GuideLLM's: a synchronous stage, a throughput stage, then N open-loop rates
evenly between the two measured throughputs), or a max-rate search. `next_stages` is asked after every
stage, so a sweep or a search decides what comes next from what it measured.

Max-rate search (as vLLM's serve_sla and AIPerf's adaptive search): the highest arrival rate in
[LOW, HIGH] whose SLOs hold at the SLO percentile, by bisection on measured stages: HIGH first (if it
holds, it is the answer), then LOW (if it fails, no rate does), then the midpoint of the bracket
[highest rate that held, lowest that failed] until (failed - held) / held <= the precision. A stage
judged at the q-th percentile needs at least ceil(5 / (1 - q/100)) measured requests, so that on
average five lie beyond the percentile (p99: 500, p95: 100, p90: 50); the plan enforces it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from bench.load.schedules import ClosedLoop, OpenLoop, Schedule, TraceArrivals
from bench.records import StageRecord
from bench.spec import LoadSpec, WorkloadSpec
from bench.summary import StageSummary

DEFAULT_REQUESTS = 64
DEFAULT_REQUESTS_WITH_DURATION = 1000
STOP_ERROR_RATE = 0.5  # a stage with more failures than this ends a multi-stage plan
BEYOND_PERCENTILE = 5  # requests a stage needs beyond the percentile it is judged at, on average


def requests_for_percentile(q: float) -> int:
    """The fewest measured requests that put BEYOND_PERCENTILE of them past the q-th percentile on average."""
    # rounded first: 5 / (1 - 0.9) is 50.000000000000014 in floating point
    return math.ceil(round(BEYOND_PERCENTILE / (1 - q / 100), 9)) if q < 100 else DEFAULT_REQUESTS_WITH_DURATION


@dataclass
class Stage:
    index: int
    name: str
    schedule: Schedule
    requests: int  # measured requests at most (every stage is bounded by count)
    duration_s: float | None = None  # and/or by time
    warmup_requests: int = 0
    warmup_s: float = 0.0
    cooldown_requests: int = 0
    cooldown_s: float = 0.0
    max_errors: int | None = None
    max_error_rate: float | None = None  # a fraction, 0..1
    batch_size: int | None = None  # embeddings and rerank: inputs per request

    @property
    def open_loop(self) -> bool:
        return isinstance(self.schedule, OpenLoop | TraceArrivals)

    @property
    def streams(self) -> int:
        """The most requests this stage can have in flight (0: no cap in an open loop)."""
        if isinstance(self.schedule, ClosedLoop):
            return self.schedule.concurrency
        return self.schedule.max_concurrency or 0

    def record(self) -> StageRecord:
        fields = {k: v for k, v in asdict(self).items() if k != "schedule"}
        return StageRecord(
            **fields,
            kind="open-loop" if self.open_loop else "closed-loop",
            schedule=asdict(self.schedule),
            label=self.schedule.label() + (f", batch {self.batch_size}" if self.batch_size else ""),
        )


@dataclass
class Search:
    """A max-rate search's state: every rate measured and whether its SLOs held."""

    low: float
    high: float
    precision: float
    min_requests: int
    steps: list[tuple[float, bool]] = field(default_factory=list)  # (rate, SLOs held)
    asked: list[float] = field(default_factory=list)  # the rate of each stage made, in order

    @property
    def held(self) -> float | None:
        return max((r for r, ok in self.steps if ok), default=None)

    @property
    def failed(self) -> float | None:
        above = [r for r, ok in self.steps if not ok and (self.held is None or r > self.held)]
        return min(above, default=None)

    def next_rate(self) -> float | None:
        rates = [r for r, _ in self.steps]
        if not rates:
            return self.high
        if self.high in rates and self.held == self.high:
            return None  # the top of the range holds
        if self.low not in rates:
            return self.low
        held, failed = self.held, self.failed
        if held is None or failed is None or (failed - held) / held <= self.precision:
            return None
        return (held + failed) / 2

    @property
    def most_stages(self) -> int:
        """Stages the search takes at most: HIGH, LOW, then halvings until the bracket is narrow enough."""
        return 2 + max(0, math.ceil(math.log2((self.high - self.low) / (self.low * self.precision))))


@dataclass
class LoadPlan:
    stages: list[Stage]
    sweep_rates: int = 0  # >0: after stages[0] (synchronous) and stages[1] (throughput), this many rates
    template: Stage | None = None  # the per-stage bounds and phases, for stages made during the run
    spec: LoadSpec | None = None
    search: Search | None = None
    notes: list[str] = field(default_factory=list)  # what the plan chose for the user, said at start

    @property
    def max_streams(self) -> int:
        """The most requests the plan can have in flight, for sizing the engine's parallel slots."""
        caps = [s.streams for s in self.stages]
        return max([*caps, (self.spec.max_concurrency if self.spec else 0) or 0]) or 4

    @property
    def total_stages(self) -> int:
        if self.search is not None:
            return self.search.most_stages
        return 2 + self.sweep_rates if self.sweep_rates else len(self.stages)

    def rate_stage(self, index: int, rate: float) -> Stage:
        assert self.template is not None and self.spec is not None
        spec = self.spec
        ramp_from = spec.ramp_from if spec.ramp_from is not None else 0.0
        schedule = OpenLoop(
            rate,
            spec.arrival,
            spec.burstiness,
            spec.max_concurrency,
            ramp_from if spec.ramp_s else None,
            spec.ramp_s or 0.0,
        )
        return replace(self.template, index=index, name=f"rate-{rate:.3g}", schedule=schedule)

    def stop_reason(self, summary: StageSummary, stage_stop: str | None) -> str | None:
        """Why a multi-stage plan should not go on after this stage, if it should not (a search goes on: a
        rate that fails its SLOs, or most of its requests, is what it looks for)."""
        if self.search is not None:
            return None
        if stage_stop:
            return f"stage {summary.stage} stopped early ({stage_stop})"
        finished = summary.requests.finished
        if finished and summary.requests.failed / finished > STOP_ERROR_RATE:
            return f"stage {summary.stage} failed {summary.requests.failed} of {finished} requests"
        slo, bar = summary.slo, self.spec.stop_slo_fraction if self.spec else 0.5
        if slo and slo.fraction_meeting_all is not None and slo.fraction_meeting_all < bar:
            return (
                f"stage {summary.stage}: only {slo.fraction_meeting_all:.0%} of requests met every SLO "
                f"(stop_slo_fraction {bar:g})"
            )
        return None

    def sweep_rates_between(self, synchronous: StageSummary, throughput: StageSummary) -> list[float]:
        low, high = synchronous.request_throughput_per_s, throughput.request_throughput_per_s
        if not low or not high:
            return []
        low, high = min(low, high), max(low, high)
        return [low + (high - low) * (k + 1) / (self.sweep_rates + 1) for k in range(self.sweep_rates)]

    def next_stages(self, done: list[StageSummary]) -> list[Stage]:
        """Stages to add after these ended: a sweep's rates, once its first two stages are measured; a search's
        next rate, from whether the last one held its SLOs."""
        if self.search is not None:
            rate = self.search.asked[len(done) - 1]
            self.search.steps.append((rate, bool(done[-1].slo and done[-1].slo.compliant)))
            following = self.search.next_rate()
            if following is None:
                return []
            self.search.asked.append(following)
            return [self.rate_stage(len(done), following)]
        if self.sweep_rates and len(done) == 2:
            return [self.rate_stage(2 + k, r) for k, r in enumerate(self.sweep_rates_between(*done))]
        return []


def build_plan(
    load: LoadSpec, workload: WorkloadSpec, cases: int | None = None, trace: tuple[tuple[float, ...], str] | None = None
) -> LoadPlan:
    """The stages the load spec describes; `cases` is a golden set's size (one pass, no warmup), `trace` a
    trace's arrival offsets and name (one open-loop stage at the trace's times)."""
    golden = workload.kind == "golden"
    notes: list[str] = []
    requests = load.requests or cases or (DEFAULT_REQUESTS_WITH_DURATION if load.duration_s else DEFAULT_REQUESTS)
    if load.search_rate is not None:
        needed = requests_for_percentile(load.slo_percentile)
        if requests < needed:
            notes.append(
                f"each search stage measures {needed} requests, not {requests}: a stage judged at "
                f"p{load.slo_percentile:g} needs {needed} so that about {BEYOND_PERCENTILE} lie beyond it"
            )
            requests = needed
    warmup = load.warmup
    ramp_s = load.ramp_s or 0.0
    warmup_s = warmup.seconds if warmup else 0.0
    if ramp_s and not load.measure_ramp:
        warmup_s = max(warmup_s, ramp_s)  # the ramp is warmup unless it is to be measured
    template = Stage(
        0,
        "",
        ClosedLoop(1),
        len(trace[0]) if trace else requests,
        load.duration_s,
        warmup.requests if warmup else 0,
        warmup_s,
        load.cooldown.requests if load.cooldown else 0,
        load.cooldown.seconds if load.cooldown else 0.0,
        load.max_errors,
        load.max_error_rate,
    )
    batches = workload.batch_size or [None]  # embeddings and rerank: a stage per batch size (the workload's axis)
    template.batch_size = batches[0]
    plan = LoadPlan([], template=template, spec=load, notes=notes)
    per_stream_warmup = load.warmup is None and not golden and not ramp_s  # one warmup request per stream

    def closed(index: int, name: str, streams: int) -> Stage:
        ramp_from = int(load.ramp_from) if load.ramp_from is not None else 1
        schedule = ClosedLoop(streams, ramp_from if ramp_s else None, ramp_s)
        stage = replace(template, index=index, name=name, schedule=schedule)
        return replace(stage, warmup_requests=streams) if per_stream_warmup else stage

    if trace is not None:
        offsets, name = trace
        plan.stages = [replace(template, name="trace", schedule=TraceArrivals(offsets, load.max_concurrency, name))]
        return plan
    if load.search_rate is not None:
        low, high = load.search_rate
        plan.search = Search(low, high, load.search_precision, requests, asked=[high])
        plan.stages = [plan.rate_stage(0, high)]
        return plan
    if load.sweep is not None:
        throughput_streams = load.max_concurrency or max(load.concurrency)
        plan.stages = [closed(0, "synchronous", 1), closed(1, "throughput", throughput_streams)]
        plan.sweep_rates = load.sweep
        plan.spec = load.model_copy(update={"max_concurrency": throughput_streams})
        return plan

    def by_batch(stages: list[Stage]) -> list[Stage]:
        """Each stage once per batch size, numbered in order (one batch size: the stages as they are)."""
        if len(batches) == 1:
            return stages
        out = [replace(st, batch_size=b, name=f"{st.name}-b{b}") for st in stages for b in batches]
        return [replace(st, index=i) for i, st in enumerate(out)]

    if load.rate is not None:
        plan.stages = by_batch([plan.rate_stage(i, r) for i, r in enumerate(load.rate)])
        return plan
    plan.stages = by_batch([closed(i, f"c{c}", c) for i, c in enumerate(load.concurrency)])
    return plan
