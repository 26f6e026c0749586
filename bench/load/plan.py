"""The load plan: the stages a spec's load section describes, each with every default resolved, and the
rules by which a multi-stage plan goes on or stops.

A plan is either a fixed list of stages (closed-loop concurrencies, or open-loop rates), or a sweep
(as GuideLLM's): a synchronous stage (one stream), a throughput stage (max_concurrency streams),
then N open-loop rates evenly between the two measured throughputs. `next_stages` is asked after
every stage, so a sweep decides its rates from what it measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from bench.load.schedules import ClosedLoop, OpenLoop, Schedule
from bench.records import StageRecord
from bench.spec import LoadSpec, WorkloadSpec
from bench.summary import StageSummary

DEFAULT_REQUESTS = 64
DEFAULT_REQUESTS_WITH_DURATION = 1000
STOP_ERROR_RATE = 0.5  # a stage with more failures than this ends a multi-stage plan


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

    @property
    def open_loop(self) -> bool:
        return isinstance(self.schedule, OpenLoop)

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
            label=self.schedule.label(),
        )


@dataclass
class LoadPlan:
    stages: list[Stage]
    sweep_rates: int = 0  # >0: after stages[0] (synchronous) and stages[1] (throughput), this many rates
    template: Stage | None = None  # the per-stage bounds and phases, for stages made during the run
    spec: LoadSpec | None = None

    @property
    def max_streams(self) -> int:
        """The most requests the plan can have in flight, for sizing the engine's parallel slots."""
        caps = [s.streams for s in self.stages]
        return max([*caps, (self.spec.max_concurrency if self.spec else 0) or 0]) or 4

    @property
    def total_stages(self) -> int:
        return 2 + self.sweep_rates if self.sweep_rates else len(self.stages)

    def rate_stage(self, index: int, rate: float) -> Stage:
        assert self.template is not None and self.spec is not None
        schedule = OpenLoop(rate, self.spec.arrival, self.spec.burstiness, self.spec.max_concurrency)
        return replace(self.template, index=index, name=f"rate-{rate:.3g}", schedule=schedule)

    def stop_reason(self, summary: StageSummary, stage_stop: str | None) -> str | None:
        """Why a multi-stage plan should not go on after this stage, if it should not."""
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
        """Stages to add after these ended: a sweep's rates, once its first two stages are measured."""
        if self.sweep_rates and len(done) == 2:
            return [self.rate_stage(2 + k, r) for k, r in enumerate(self.sweep_rates_between(*done))]
        return []


def build_plan(load: LoadSpec, workload: WorkloadSpec, cases: int | None = None) -> LoadPlan:
    """The stages the load spec describes; `cases` is a golden set's size (one pass, no warmup)."""
    golden = workload.kind == "golden"
    requests = load.requests or cases or (DEFAULT_REQUESTS_WITH_DURATION if load.duration_s else DEFAULT_REQUESTS)
    warmup = load.warmup
    template = Stage(
        0,
        "",
        ClosedLoop(1),
        requests,
        load.duration_s,
        warmup.requests if warmup else 0,
        warmup.seconds if warmup else 0.0,
        load.cooldown.requests if load.cooldown else 0,
        load.cooldown.seconds if load.cooldown else 0.0,
        load.max_errors,
        load.max_error_rate,
    )
    plan = LoadPlan([], template=template, spec=load)
    per_stream_warmup = load.warmup is None and not golden  # default: one warmup request per closed-loop stream

    def closed(index: int, name: str, streams: int) -> Stage:
        stage = replace(template, index=index, name=name, schedule=ClosedLoop(streams))
        return replace(stage, warmup_requests=streams) if per_stream_warmup else stage

    if load.sweep is not None:
        throughput_streams = load.max_concurrency or max(load.concurrency)
        plan.stages = [closed(0, "synchronous", 1), closed(1, "throughput", throughput_streams)]
        plan.sweep_rates = load.sweep
        plan.spec = load.model_copy(update={"max_concurrency": throughput_streams})
        return plan
    if load.rate is not None:
        plan.stages = [plan.rate_stage(i, r) for i, r in enumerate(load.rate)]
        return plan
    plan.stages = [closed(i, f"c{c}", c) for i, c in enumerate(load.concurrency)]
    return plan
