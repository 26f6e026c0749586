"""From command-line words to a load plan: stages, sweeps, phases and SLOs (validated, with clear errors)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bench.errors import UsageError
from bench.load.runner import Stage
from bench.load.schedules import ARRIVALS, ClosedLoop, OpenLoop
from bench.metrics import SLO_METRICS

DEFAULT_REQUESTS = 64
DEFAULT_REQUESTS_WITH_DURATION = 1000
SWEEP_STOP_ERROR_RATE = 0.5  # a stage with more failures than this ends a multi-stage plan


def parse_list(text: str, flag: str, kind=int) -> list:
    try:
        values = [kind(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a comma-separated list of numbers, e.g. 1,2,4") from None
    if not values or any(v <= 0 for v in values):
        raise UsageError(f"{flag} {text!r}: every value must be greater than 0")
    return values


def parse_amount(text: str | None, flag: str) -> tuple[int, float]:
    """`N` requests or `Ns` seconds (e.g. 8, 5s, 2.5s) -> (requests, seconds)."""
    if text is None:
        return 0, 0.0
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s?)\s*", str(text))
    if not match or (not match.group(2) and "." in match.group(1)):
        raise UsageError(f"{flag} {text!r}: give a number of requests (8) or of seconds (5s)")
    return (0, float(match.group(1))) if match.group(2) else (int(match.group(1)), 0.0)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_slo(text: str | None) -> dict[str, float]:
    """`ttft=500ms,tpot=50ms,e2e=10s` -> thresholds in ms."""
    if not text:
        return {}
    thresholds = {}
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\w+)\s*=\s*(\d+(?:\.\d+)?)\s*(us|ms|s)\s*", part)
        if not match or match.group(1) not in SLO_METRICS:
            raise UsageError(
                f"--slo {text!r}: each item is METRIC=VALUE with a unit, METRIC one of "
                f"{', '.join(SLO_METRICS)}, e.g. ttft=500ms,tpot=50ms,e2e=10s"
            )
        thresholds[match.group(1)] = float(match.group(2)) * _UNITS_MS[match.group(3)]
    return thresholds


@dataclass
class LoadPlan:
    """Either a fixed list of stages, or a sweep whose rates follow from its first two stages."""

    stages: list[Stage]
    sweep_rates: int = 0  # >0: after stages[0] (synchronous) and stages[1] (throughput), this many rates
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    slo_ms: dict[str, float] = field(default_factory=dict)
    slo_percentile: float = 99.0
    stop_slo_fraction: float = 0.5
    template: Stage | None = None  # the per-stage bounds and phases the user gave, for stages made later

    @property
    def max_streams(self) -> int:
        """The most requests the plan can have in flight, for sizing the engine's parallel slots."""
        caps = [s.schedule.concurrency if isinstance(s.schedule, ClosedLoop) else s.schedule.max_concurrency or 0
                for s in self.stages]  # fmt: skip
        return max([*caps, self.max_concurrency or 0]) or 4

    def rate_stage(self, index: int, rate: float) -> Stage:
        assert self.template is not None
        schedule = OpenLoop(rate, self.arrival, self.burstiness, self.max_concurrency)  # type: ignore[arg-type]
        return _stage(index, f"rate-{rate:.3g}", schedule, self.template)


def _stage(index: int, name: str, schedule, template: Stage) -> Stage:
    return Stage(
        index, name, schedule, template.requests, template.duration_s, template.warmup_requests,
        template.warmup_s, template.cooldown_requests, template.cooldown_s, template.max_errors,
        template.max_error_rate,
    )  # fmt: skip


def build_plan(args) -> LoadPlan:
    """Validate the load flags together and build the stages they describe."""
    given = [name for name, value in (("--rate", args.rate), ("--sweep", args.sweep)) if value is not None]
    if len(given) > 1:
        raise UsageError("--rate and --sweep are different plans; give one of them")
    if args.arrival not in ARRIVALS:
        raise UsageError(f"--arrival {args.arrival!r}: choose one of {', '.join(ARRIVALS)}")
    if args.arrival != "gamma" and args.burstiness != 1.0:
        raise UsageError("--burstiness shapes gamma arrivals; add --arrival gamma")
    if args.burstiness <= 0:
        raise UsageError("--burstiness must be greater than 0 (1 is Poisson; smaller is burstier)")
    if args.max_error_rate is not None and not 0 <= args.max_error_rate <= 1:
        raise UsageError("--max-error-rate is a fraction between 0 and 1, e.g. 0.1")
    if not 0 < args.slo_percentile <= 100:
        raise UsageError("--slo-percentile must be in (0, 100], e.g. 99")
    requests = args.requests or (DEFAULT_REQUESTS_WITH_DURATION if args.duration else DEFAULT_REQUESTS)
    warmup_n, warmup_s = parse_amount(args.warmup, "--warmup")
    cooldown_n, cooldown_s = parse_amount(args.cooldown, "--cooldown")
    template = Stage(0, "", ClosedLoop(1), requests, args.duration, warmup_n, warmup_s, cooldown_n, cooldown_s,
                     args.max_errors, args.max_error_rate)  # fmt: skip
    plan = LoadPlan([], arrival=args.arrival, burstiness=args.burstiness, max_concurrency=args.max_concurrency,
                    slo_ms=parse_slo(args.slo), slo_percentile=args.slo_percentile,
                    stop_slo_fraction=args.stop_slo_fraction, template=template)  # fmt: skip
    default_warmup = args.warmup is None  # one warmup request per stream, closed loop only

    if args.sweep is not None:
        if args.sweep < 1:
            raise UsageError("--sweep N: N (the number of rates between synchronous and throughput) must be >= 1")
        throughput_streams = args.max_concurrency or max(parse_list(args.concurrency, "--concurrency"))
        plan.stages = [
            _stage(0, "synchronous", ClosedLoop(1), _with_warmup(template, 1, default_warmup)),
            _stage(1, "throughput", ClosedLoop(throughput_streams),
                   _with_warmup(template, throughput_streams, default_warmup)),
        ]  # fmt: skip
        plan.sweep_rates = args.sweep
        plan.max_concurrency = throughput_streams
        return plan
    if args.rate is not None:
        plan.stages = [plan.rate_stage(i, r) for i, r in enumerate(parse_list(args.rate, "--rate", float))]
        return plan
    for i, concurrency in enumerate(parse_list(args.concurrency, "--concurrency")):
        stage = _stage(
            i, f"c{concurrency}", ClosedLoop(concurrency), _with_warmup(template, concurrency, default_warmup)
        )
        plan.stages.append(stage)
    return plan


def _with_warmup(template: Stage, streams: int, default: bool) -> Stage:
    if not default:
        return template
    stage = _stage(template.index, template.name, template.schedule, template)
    stage.warmup_requests = streams
    return stage
