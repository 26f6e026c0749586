"""The cost of a task, self-hosted or through an API, under one workflow model for both sides (no I/O).

A task is a prompt of I input tokens answered with O output tokens; the workflow adds, on both sides alike:

    tool loop     K tool calls make K + 1 model calls. Call k (k = 0..K) reads I + k x (C + R) input tokens when
                  the context is carried (I + R for k >= 1 when it is reset), where C is the output of one tool
                  call and R the input one tool result adds; calls 0..K-1 write C tokens, call K writes O.
    reasoning     r reasoning tokens per call, generated (self-hosted) and billed as output (API).
    cached input  a share c of input read from the prefix cache (self-hosted: not prefilled; API: the cached
                  price) and a share w written to it (API: the cache-write price, else the input price).
    attempt       one pass through the K + 1 calls; it succeeds with probability s (the side's own measured
                  success rate, or an assumed one that is recorded as such).
    retries       a failed attempt is retried up to m times:
                      attempts per task  a = 1 + (1 - s) + ... + (1 - s)^m
                      solved share       q = 1 - (1 - s)^(m + 1)
    escalation    a share e of tasks goes to a person at h dollars each: e is a number (a policy, the same on
                  both sides) or `failures` (e = 1 - q: what the model did not solve; the person resolves it).
    successful    S = q, or 1 when failures are escalated (a person finished them).

API, per attempt, per call: input x ((1 - c - w) p_in + c p_cached + w p_write) x (1 - b d_in)
                            + (output + reasoning) x p_out x (1 - b d_out)
    with the tier prices for a call whose prompt is longer than a tier's threshold, and b the batch share.
    $/task = a x attempt + e x h;  $/successful task = $/task / S;  monthly(V) = V x $/task.

Self-hosted: an instance costs H an hour (rented: the offer's price; owned: purchase / (years x 8760) +
    power_kW x $/kWh + hosting / 730) plus operations labour (hours a month x rate / 730).
    It serves A attempts a second for the task: the run's own rate (finished requests / window, failures
    included) when its requests match the task's shape within the tolerance, else extrapolated at the measured
    concurrency from its per-stream prefill and decode rates:
        P = uncached input tokens / TTFT,  D = 1000 / TPOT (ms)        (means over the priced stage)
        t(call) = uncached input / P + (output + reasoning) / D
        A = A_run x t(run's mean request) / sum of t over the attempt's calls
    $/task at utilization u = a x H / (A x 3600 x u) + e x h;   $/successful task = $/task / S
    instances(V) = ceil(V x a x max((1 - b) x peak/average, 1) / (A x u x 2,628,000))     (at least 1;
        batch tasks are scheduled into the troughs, so only the interactive share must meet the peak)
    monthly(V) = instances x H x 730 + V x e x h

Cost per successful task at a volume V = monthly(V) / (S x V) on either side: failures are counted once,
    in S (A counts every finished attempt, failed or not). The break-even volume of a self-hosted option
    against an API is where the two are equal on the first instance:
        V* = (H x 730 / S_self) / ($/successful task of the API - e_self x h / S_self)
    valid while one instance carries V*; otherwise (or when the difference is not positive) the API costs
    less per successful task than a fully used instance: no break-even.

95 % intervals: each uncertain input (the priced stage's throughput, from the t interval of its
output tok/s; each measured success rate, from its Wilson interval) is set to either end of its interval
with the others at their point values; the figure's relative deviations are combined in quadrature on the
log scale (independent errors): high = point x exp(sqrt(sum of squared log rises)), low likewise with the
falls. An end at which the figure is unbounded (no success, no break-even) leaves that side open. A figure
of 0 (a blended success rate of 0/n) has no log scale: its deviations combine in quadrature as they are.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.errors import UsageError
from bench.metrics.stats import wilson_interval
from bench.summary import RunSummary

HOURS_PER_MONTH = 730.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
HOURS_PER_YEAR = 8760.0
UTILIZATION_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)  # the sensitivity range
SHAPE_TOLERANCE = 0.10  # a run's mean request matches the task within this relative difference
STALE_AFTER_DAYS = 90
INTERVAL_METHOD = (
    "each uncertain input (throughput: the 95% t interval of the priced stage's output tok/s; success "
    "rates: 95% Wilson intervals) set to either end of its interval, the others at their point values; the "
    "relative deviations combined in quadrature on the log scale (independent errors)"
)


class CostError(UsageError):
    """An input that makes a cost meaningless (no throughput, utilization out of range): exit 2, one line,
    wherever it is raised."""


# -- the task and its workflow ---------------------------------------------------------------------
@dataclass(frozen=True)
class TaskProfile:
    input_tokens: float | None  # None: measured, filled from a run by with_measured_tokens
    output_tokens: float | None
    tasks_per_month: float = 0.0
    peak_to_average: float = 1.0
    utilization: float = 0.5  # target share of paid hours doing this work
    reasoning_tokens: float = 0.0  # per model call
    tool_calls: int = 0  # tool-loop turns: extra model calls per attempt
    tool_call_tokens: float = 0.0  # output tokens of one tool call
    tool_result_tokens: float = 0.0  # input tokens one tool result adds
    tool_context: str = "carried"  # carried: every later call reads the earlier turns; reset: only the last result
    # input read from the prefix cache; None (not given): the API bills none cached, and the self-hosted side
    # keeps the prefix-cache hit rate its run measured (what the engine did on this workload)
    cached_input_share: float | None = None
    cache_write_share: float = 0.0  # input written to the cache (billed at the cache-write price)
    batch_share: float = 0.0  # share of tasks sent in batch (API discount; self-hosted: off-peak)
    max_retries: int = 0  # a failed attempt is retried up to this many times
    escalation_rate: float | str = 0.0  # share of tasks sent to a person, or "failures"
    human_review_cost: float = 0.0  # $ per escalated task, the same whichever model caused it
    shape_tolerance: float = SHAPE_TOLERANCE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def with_measured_tokens(task: TaskProfile, measured: dict[str, Any]) -> TaskProfile:
    """The task with the run's mean input and output tokens wherever the task leaves them unset."""
    return replace(
        task,
        input_tokens=measured["input_tokens_mean"] if task.input_tokens is None else task.input_tokens,
        output_tokens=measured["output_tokens_mean"] if task.output_tokens is None else task.output_tokens,
    )


@dataclass(frozen=True)
class Call:
    input_tokens: float
    output_tokens: float  # visible output: a tool call's arguments, or the answer
    reasoning_tokens: float


def calls(task: TaskProfile) -> list[Call]:
    """The model calls of one attempt (see the module docstring)."""
    if task.input_tokens is None or task.output_tokens is None:
        raise CostError("the task has no token counts: give --input-tokens and --output-tokens, or a run")
    k_last = task.tool_calls
    step = task.tool_call_tokens + task.tool_result_tokens
    out = []
    for k in range(k_last + 1):
        if task.tool_context == "carried":
            context = k * step
        else:
            context = task.tool_result_tokens if k else 0.0
        output = task.tool_call_tokens if k < k_last else task.output_tokens
        out.append(Call(task.input_tokens + context, output, task.reasoning_tokens))
    return out


def attempt_tokens(task: TaskProfile) -> dict[str, float]:
    """Tokens of one attempt by kind."""
    cs = calls(task)
    total_in = sum(c.input_tokens for c in cs)
    c, w = task.cached_input_share or 0.0, task.cache_write_share
    return {
        "calls": len(cs),
        "input": total_in,
        "input_uncached": total_in * (1 - c - w),
        "input_cached": total_in * c,
        "input_cache_write": total_in * w,
        "output": sum(x.output_tokens for x in cs),
        "reasoning": sum(x.reasoning_tokens for x in cs),
    }


@dataclass(frozen=True)
class Outcome:
    attempts: float  # a: attempts per task
    solved: float  # q: share of tasks the model solved within its retries
    escalated: float  # e: share of tasks sent to a person
    successful: float  # S: share of tasks that ended successful


def outcome(success_rate: float, max_retries: int, escalation: float | str) -> Outcome:
    if not 0 <= success_rate <= 1:
        raise CostError(f"success rate must be in [0, 1], got {success_rate}")
    fail = 1 - success_rate
    attempts = sum(fail**k for k in range(max_retries + 1))
    solved = 1 - fail ** (max_retries + 1)
    if escalation == "failures":
        return Outcome(attempts, solved, 1 - solved, 1.0)
    return Outcome(attempts, solved, float(escalation), solved)


# -- prices ------------------------------------------------------------------------------------------
def hardware_items(offer) -> list[dict[str, Any]]:
    """An instance's hourly cost, item by item, each with the formula that gives it."""
    if offer.rented is not None:
        r = offer.rented
        return [{"item": f"rent ({r.kind})", "per_hour": r.per_hour, "formula": f"${r.per_hour:g}/h"}]
    o = offer.owned
    return [
        {
            "item": "amortisation",
            "per_hour": o.purchase / (o.amortization_years * HOURS_PER_YEAR),
            "formula": f"${o.purchase:,.2f} / ({o.amortization_years:g} years x 8,760 h)",
        },
        {
            "item": "power",
            "per_hour": o.power_w / 1000 * o.electricity_per_kwh,
            "formula": f"{o.power_w:g} W / 1000 x ${o.electricity_per_kwh:g}/kWh",
        },
        {
            "item": "hosting",
            "per_hour": o.hosting_per_month / HOURS_PER_MONTH,
            "formula": f"${o.hosting_per_month:,.2f}/month / 730 h",
        },
    ]


def labour_item(offer) -> dict[str, Any]:
    lab = offer.labour
    hours, rate = (lab.hours_per_month, lab.per_hour) if lab else (0.0, 0.0)
    return {
        "item": "operations labour",
        "hours_per_month": hours,
        "rate_per_hour": rate,
        "monthly": hours * rate,
        "per_hour": hours * rate / HOURS_PER_MONTH,
        "formula": f"{hours:g} h/month x ${rate:g}/h / 730 h",
        "basis": (lab.basis if lab and lab.basis else "not in the catalog offer: 0 hours"),
    }


def offer_hourly(offer) -> float:
    """The hardware's hourly cost (rented rate, or amortisation + power + hosting), without labour."""
    return sum(i["per_hour"] for i in hardware_items(offer))


def instance_hourly(offer) -> float:
    """Hardware plus operations labour: what one instance costs an hour."""
    return offer_hourly(offer) + labour_item(offer)["per_hour"]


def price_age(as_of: datetime.date | None, today: datetime.date, stale_after_days: int) -> dict[str, Any]:
    """How old a price is, and whether to flag it (older than stale_after_days, or of unknown date)."""
    if as_of is None:
        return {"as_of": None, "age_days": None, "stale": True, "note": "date unknown, so its age cannot be told"}
    age = (today - as_of).days
    stale = age > stale_after_days
    note = f"{age} days old on {today.isoformat()}" + (f", older than {stale_after_days} days: stale" if stale else "")
    return {"as_of": as_of.isoformat(), "age_days": age, "stale": stale, "note": note}


def deprecation_state(deprecation: datetime.date | None, today: datetime.date) -> dict[str, Any]:
    if deprecation is None:
        return {"deprecation": None, "deprecated": False, "note": None}
    days = (deprecation - today).days
    if days <= 0:
        note = f"deprecated on {deprecation.isoformat()}: left out of recommendations"
    else:
        note = f"deprecation announced for {deprecation.isoformat()} (in {days} days)"
    return {"deprecation": deprecation.isoformat(), "deprecated": days <= 0, "note": note}


def _tier(offer, input_tokens: float):
    """The prices of a call with this many input tokens: the highest tier it passes, else the base prices."""
    chosen = None
    for tier in offer.tiers:
        if input_tokens > tier.above_input_tokens and (
            chosen is None or tier.above_input_tokens > chosen.above_input_tokens
        ):
            chosen = tier
    return chosen or offer


def api_attempt(offer, task: TaskProfile) -> dict[str, Any]:
    """One attempt's bill through an API, call by call and by kind of token."""
    d_in, d_out = offer.batch_discounts
    b, c, w = task.batch_share, task.cached_input_share or 0.0, task.cache_write_share
    in_factor, out_factor = 1 - b * d_in, 1 - b * d_out
    items = {"input": 0.0, "cached input": 0.0, "cache write": 0.0, "output": 0.0, "reasoning": 0.0}
    rows = []
    for k, call in enumerate(calls(task)):
        p = _tier(offer, call.input_tokens)
        p_in = p.input_per_1m
        p_cached = p.cached_input_per_1m if p.cached_input_per_1m is not None else offer.cached_input_per_1m
        p_cached = p_in if p_cached is None else p_cached
        p_write = (
            p.cache_write_input_per_1m if p.cache_write_input_per_1m is not None else offer.cache_write_input_per_1m
        )
        p_write = p_in if p_write is None else p_write
        parts = {
            "input": call.input_tokens * (1 - c - w) * p_in / 1e6 * in_factor,
            "cached input": call.input_tokens * c * p_cached / 1e6 * in_factor,
            "cache write": call.input_tokens * w * p_write / 1e6 * in_factor,
            "output": call.output_tokens * p.output_per_1m / 1e6 * out_factor,
            "reasoning": call.reasoning_tokens * p.output_per_1m / 1e6 * out_factor,
        }
        for key, value in parts.items():
            items[key] += value
        rows.append(
            {
                "call": k,
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
                "reasoning_tokens": call.reasoning_tokens,
                "tier": None if p is offer else f"prompt above {p.above_input_tokens:,} tokens",
                "prices_per_1m": {"input": p_in, "cached": p_cached, "cache_write": p_write, "output": p.output_per_1m},
                "cost": sum(parts.values()),
            }
        )
    return {
        "calls": rows,
        "items": items,
        "batch": {"share": b, "input_discount": d_in, "output_discount": d_out},
        "total": sum(items.values()),
    }


# -- measured throughput and the task's rate on an instance -----------------------------------------
def priced_throughput(summary: RunSummary) -> dict[str, Any]:
    """The stage to price (the max SLO-compliant stage when SLOs were set, else the fastest) and its figures."""
    stages = [s for s in summary.stages if s.request_throughput_per_s]
    if not stages:
        raise CostError("the run measured no throughput (no successful requests), so nothing can be priced")
    best = summary.slo.max_slo_compliant if summary.slo else None
    if best:
        stage, basis = next(s for s in stages if s.stage == best.stage), "max SLO-compliant throughput"
    else:
        stage, basis = max(stages, key=lambda s: s.request_throughput_per_s), "highest measured throughput"
    if stage.prompt_tokens.mean is None or stage.output_tokens.mean is None:  # a task is priced by its tokens
        missing = "prompt" if stage.prompt_tokens.mean is None else "output"
        raise CostError(
            f"stage {stage.stage} recorded no {missing} token counts (the server reported no usage), so no task "
            "can be priced from it; measure an engine or endpoint that reports usage"
        )
    req = stage.requests
    finished = req.finished
    quality = summary.quality
    if quality is not None and quality.success_rate is not None:  # a golden run: success means every check passed
        success_rate, success_basis = quality.success_rate, "golden-set cases passed"
        success_ci, successes, trials = quality.ci95, quality.passed, quality.cases
    else:
        success_rate, success_basis = (req.successful / finished if finished else 0.0), "requests that succeeded"
        success_ci, successes, trials = wilson_interval(req.successful, finished), req.successful, finished
    return {
        "basis": basis,
        "stage": stage.stage,
        "label": stage.label,
        "window_s": stage.window_s,
        "requests_ok": req.successful,
        "requests_failed": req.failed,
        "attempts_per_s": finished / stage.window_s if stage.window_s else stage.request_throughput_per_s,
        "requests_per_s": stage.request_throughput_per_s,
        "output_tokens_per_s": stage.output_throughput_tokens_per_s,
        "total_tokens_per_s": stage.total_token_throughput_tokens_per_s,
        "output_tokens_per_s_ci95": stage.ci95.output_throughput_tokens_per_s,
        "input_tokens_mean": stage.prompt_tokens.mean,
        "output_tokens_mean": stage.output_tokens.mean,
        "ttft_ms_mean": stage.ttft_ms.mean,
        "tpot_ms_mean": stage.tpot_ms.mean,
        "prefix_cache_hit_rate": stage.prefix_cache_hit_rate or 0.0,
        "success_rate": success_rate,
        "success_basis": success_basis,
        "success_rate_ci95": success_ci,
        "successes": successes,
        "trials": trials,
        "gpu_energy_j_per_output_token": stage.telemetry.gpu_energy_j_per_output_token,
    }


def _within(value: float, reference: float, tolerance: float) -> bool:
    if reference == 0:
        return value == 0
    return abs(value - reference) / reference <= tolerance


def task_rate(measured: dict[str, Any], task: TaskProfile) -> dict[str, Any]:
    """Attempts per second one instance serves for this task: the run's own rate when its mean request matches
    the task (one call, no reasoning, input and output within the tolerance, the same cached share within it),
    else extrapolated from its per-stream prefill and decode rates at the measured concurrency."""
    i_run, o_run, hit = measured["input_tokens_mean"], measured["output_tokens_mean"], measured["prefix_cache_hit_rate"]
    a_run, tol = measured["attempts_per_s"], task.shape_tolerance
    shape = {
        "run_request": {"input_tokens": i_run, "output_tokens": o_run, "cached_share": hit},
        "task_calls": len(calls(task)),
        "tolerance": tol,
    }
    matched = (
        task.tool_calls == 0
        and task.reasoning_tokens == 0
        and _within(task.input_tokens, i_run, tol)
        and _within(task.output_tokens, o_run, tol)
        and (task.cached_input_share is None or abs(task.cached_input_share - hit) <= tol)
    )
    if matched:
        return {
            **shape,
            "method": "measured",
            "attempts_per_s": a_run,
            "note": f"the run's requests match the task within {tol:.0%}: its measured rate, no extrapolation",
        }
    ttft, tpot = measured["ttft_ms_mean"], measured["tpot_ms_mean"]
    uncached_run = i_run * (1 - hit)
    if not ttft or not tpot or uncached_run <= 0:
        raise CostError(
            "the run's requests differ from the task and it measured no TTFT/TPOT to extrapolate from "
            "(it needs outputs of 2+ tokens): run a workload shaped like the task"
        )
    prefill = uncached_run / (ttft / 1000)  # uncached input tokens/s per stream, at the measured concurrency
    decode = 1000 / tpot  # output tokens/s per stream
    t_run = uncached_run / prefill + o_run / decode
    rows = []
    t_task = 0.0
    cached = hit if task.cached_input_share is None else task.cached_input_share
    for call in calls(task):
        prefill_s = call.input_tokens * (1 - cached) / prefill
        decode_s = (call.output_tokens + call.reasoning_tokens) / decode
        t_task += prefill_s + decode_s
        rows.append({"prefill_s": prefill_s, "decode_s": decode_s})
    if t_task <= 0:
        raise CostError(
            "the task reads no uncached input token and writes no output token, so it takes no engine time to "
            "price: give --input-tokens or --output-tokens above 0 (or --cached-input-share below 1)"
        )
    tokens = attempt_tokens(task)
    return {
        **shape,
        "method": "extrapolated",
        "attempts_per_s": a_run * t_run / t_task,
        "prefill_tokens_per_s_per_stream": prefill,
        "decode_tokens_per_s_per_stream": decode,
        "run_request_s": t_run,
        "attempt_s": t_task,
        "calls": rows,
        "factor": t_task / t_run,
        "input_ratio": tokens["input"] / i_run if i_run else None,
        "output_ratio": (tokens["output"] + tokens["reasoning"]) / o_run if o_run else None,
        "note": (
            f"extrapolated x{t_task / t_run:.2f} from the run's mean request ({i_run:,.0f} in, {o_run:,.0f} out) to "
            f"the task's attempt ({tokens['calls']} call(s), {tokens['input']:,.0f} in, "
            f"{tokens['output'] + tokens['reasoning']:,.0f} out incl. reasoning) at the measured concurrency; "
            "per-stream rates fall with longer contexts, so the larger the factor the less it holds"
        ),
    }


# -- the options -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One way to serve the task, reduced to the numbers its cost depends on."""

    name: str
    kind: str  # "self-hosted" or "api"
    success_rate: float
    max_retries: int = 0
    escalation: float | str = 0.0
    human_review_cost: float = 0.0
    attempt_cost: float = 0.0  # API: $ per attempt
    hardware_hourly: float = 0.0  # self-hosted
    labour_hourly: float = 0.0
    attempt_rate: float = 0.0  # attempts/s one instance serves
    utilization: float = 1.0
    peak_factor: float = 1.0  # max((1 - batch share) x peak/average, 1)
    price_factor: float = 1.0  # a scale on the price (attempt cost, or the hardware's hourly), for what-ifs

    @property
    def outcome(self) -> Outcome:
        return outcome(self.success_rate, self.max_retries, self.escalation)

    @property
    def instance_hourly(self) -> float:
        return self.hardware_hourly * self.price_factor + self.labour_hourly

    def capacity(self) -> float:
        """Tasks a month one instance carries at the target utilization."""
        return SECONDS_PER_MONTH * self.attempt_rate * self.utilization / (self.outcome.attempts * self.peak_factor)

    def instances(self, volume: float) -> int:
        if self.kind == "api":
            return 0
        return max(1, math.ceil(volume / self.capacity() - 1e-12))

    def per_attempt(self) -> float:
        if self.kind == "api":
            return self.attempt_cost * self.price_factor
        if self.attempt_rate <= 0:
            raise CostError("no request throughput was measured, so no cost per task can be given")
        return self.instance_hourly / (self.attempt_rate * 3600 * self.utilization)

    def per_task(self) -> float:
        """At the target utilization (self-hosted) or the price list (API)."""
        o = self.outcome
        return o.attempts * self.per_attempt() + o.escalated * self.human_review_cost

    def per_successful(self) -> float | None:
        s = self.outcome.successful
        return self.per_task() / s if s > 0 else None

    def monthly(self, volume: float) -> float:
        o = self.outcome
        if self.kind == "api":
            return volume * self.per_task()
        return (
            self.instances(volume) * self.instance_hourly * HOURS_PER_MONTH
            + volume * o.escalated * self.human_review_cost
        )

    def per_successful_at(self, volume: float) -> float | None:
        s = self.outcome.successful
        if s <= 0 or volume <= 0:
            return None if s <= 0 else self.per_successful()
        return self.monthly(volume) / (s * volume)


def break_even(self_hosted: Option, api: Option) -> float | None:
    """The monthly volume at which the two cost the same per successful task (see the module docstring)."""
    s_self = self_hosted.outcome.successful
    kappa = api.per_successful()
    if not s_self or kappa is None:
        return None
    margin = kappa - self_hosted.outcome.escalated * self_hosted.human_review_cost / s_self
    if margin <= 0:
        return None
    volume = self_hosted.instance_hourly * HOURS_PER_MONTH / s_self / margin
    return volume if volume <= self_hosted.capacity() * (1 + 1e-9) else None


def combine(point: float | None, ends: dict[str, list[float | None]]) -> dict[str, Any]:
    """A 95% interval from the figure at each end of each input's interval (see the module docstring)."""
    parts = {name: list(values) for name, values in ends.items()}
    if not ends:  # nothing measured went into the figure (catalog prices and assumptions): no interval
        return {"ci95": None, "parts": parts, "method": INTERVAL_METHOD}
    if point is None:
        finite = [v for values in ends.values() for v in values if v is not None]
        return {"ci95": [min(finite) if finite else None, None], "parts": parts, "method": INTERVAL_METHOD}
    log_scale = point > 0  # a figure of 0 (a success rate of 0/n) has no log: its ends combine as they are
    up = down = 0.0
    open_high = False
    for values in ends.values():
        rises, falls = [0.0], [0.0]
        for v in values:
            if v is None:
                open_high = True
                continue
            if log_scale:
                r = math.log(v / point) if v > 0 else -math.inf
            else:
                r = v - point
            (rises if r > 0 else falls).append(abs(r))
        up += max(rises) ** 2
        down += max(falls) ** 2
    if log_scale:
        low = point * math.exp(-math.sqrt(down))
        high = None if open_high else point * math.exp(math.sqrt(up))
    else:
        low, high = point - math.sqrt(down), None if open_high else point + math.sqrt(up)
    return {"ci95": [low, high], "parts": parts, "method": INTERVAL_METHOD}


# -- building the options of a report ---------------------------------------------------------------
def _success(rate: float, ci: list[float] | None, basis: str, measured: bool, source: str) -> dict[str, Any]:
    return {"rate": rate, "ci95": ci, "basis": basis, "measured": measured, "source": source}


def self_hosted_success(measured: dict[str, Any], run_id: str, assumed: float | None) -> dict[str, Any]:
    if assumed is not None:
        return _success(assumed, None, "assumed (--self-hosted-success-rate)", False, "flag")
    if measured["success_basis"] == "golden-set cases passed":
        return _success(
            measured["success_rate"],
            measured["success_rate_ci95"],
            f"golden run {run_id}: {measured['successes']}/{measured['trials']} cases passed",
            True,
            f"run {run_id}",
        )
    return _success(
        measured["success_rate"],
        measured["success_rate_ci95"],
        f"run {run_id}: {measured['successes']}/{measured['trials']} requests completed; answer quality not "
        "measured (a completed request is counted a success)",
        False,
        f"run {run_id}",
    )


def _throughput_ends(measured: dict[str, Any]) -> tuple[float, float] | None:
    ci, tps = measured.get("output_tokens_per_s_ci95"), measured.get("output_tokens_per_s")
    if not ci or not tps or ci[0] <= 0:
        return None
    return ci[0] / tps, ci[1] / tps


def self_hosted_option(
    name: str, measured: dict[str, Any], offer, task: TaskProfile, success: dict[str, Any]
) -> tuple[Option, dict[str, Any]]:
    rate = task_rate(measured, task)
    option = Option(
        name=name,
        kind="self-hosted",
        success_rate=success["rate"],
        max_retries=task.max_retries,
        escalation=task.escalation_rate,
        human_review_cost=task.human_review_cost,
        hardware_hourly=offer_hourly(offer),
        labour_hourly=labour_item(offer)["per_hour"],
        attempt_rate=rate["attempts_per_s"],
        utilization=task.utilization,
        peak_factor=max((1 - task.batch_share) * task.peak_to_average, 1.0),
    )
    return option, rate


def api_option(name: str, offer, task: TaskProfile, success: dict[str, Any]) -> tuple[Option, dict[str, Any]]:
    bill = api_attempt(offer, task)
    option = Option(
        name=name,
        kind="api",
        success_rate=success["rate"],
        max_retries=task.max_retries,
        escalation=task.escalation_rate,
        human_review_cost=task.human_review_cost,
        attempt_cost=bill["total"],
    )
    return option, bill


def variations(
    option: Option, success: dict[str, Any], throughput: tuple[float, float] | None
) -> dict[str, list[Option]]:
    """The option at either end of each uncertain input's 95% interval."""
    out = {}
    if throughput and option.kind == "self-hosted":
        out["throughput"] = [replace(option, attempt_rate=option.attempt_rate * f) for f in throughput]
    if success.get("ci95"):  # measured (a golden run's cases, or a load run's completed requests)
        out["success rate"] = [replace(option, success_rate=s) for s in success["ci95"]]
    return out


def figure_interval(point: float | None, varied: dict[str, list[Option]], fn) -> dict[str, Any]:
    return combine(point, {name: [fn(o) for o in opts] for name, opts in varied.items()})


def outcome_json(option: Option) -> dict[str, Any]:
    o = option.outcome
    return {
        "success_rate": option.success_rate,
        "max_retries": option.max_retries,
        "attempts_per_task": o.attempts,
        "retries_per_task": o.attempts - 1,
        "solved_share": o.solved,
        "escalated_share": o.escalated,
        "escalation": option.escalation,
        "successful_share": o.successful,
    }


def self_hosted_section(
    name: str,
    run_id: str,
    measured: dict[str, Any],
    offer_name: str,
    offer,
    task: TaskProfile,
    success: dict[str, Any],
    today: datetime.date,
    stale_after: int,
    electricity_per_kwh: float | None = None,
) -> dict[str, Any]:
    """Everything about one self-hosted option, itemised so each figure can be recomputed by hand."""
    option, rate = self_hosted_option(name, measured, offer, task, success)
    varied = variations(option, success, _throughput_ends(measured))
    o = option.outcome
    volume = task.tasks_per_month
    u = task.utilization
    hw, lab = hardware_items(offer), labour_item(offer)
    per_attempt = option.per_attempt()
    per_task_ = option.per_task()
    per_successful = option.per_successful()
    instances = option.instances(volume)
    at_volume = option.per_successful_at(volume) if volume else per_successful
    hourly = offer_hourly(offer)
    out = {
        "name": name,
        "kind": "self-hosted",
        "run_id": run_id,
        "offer": offer_name,
        "gpus": offer.gpus,
        "price_source": offer.source,
        "as_of": offer.as_of.isoformat(),
        "price_age": price_age(offer.as_of, today, stale_after),
        "hardware": {"kind": "rented" if offer.rented is not None else "owned", "items": hw, "hourly": hourly},
        "labour": lab,
        "hourly": hourly,
        "instance_hourly": option.instance_hourly,
        "instance_monthly": option.instance_hourly * HOURS_PER_MONTH,
        "utilization": u,
        "priced_stage": {"stage": measured["stage"], "label": measured["label"], "basis": measured["basis"]},
        "measured": {
            k: measured.get(k)
            for k in (
                "window_s",
                "requests_ok",
                "requests_failed",
                "attempts_per_s",
                "input_tokens_mean",
                "output_tokens_mean",
                "ttft_ms_mean",
                "tpot_ms_mean",
                "prefix_cache_hit_rate",
                "output_tokens_per_s",
                "output_tokens_per_s_ci95",
                "total_tokens_per_s",
            )
        },
        "rate": rate,
        "success": success,
        "outcome": outcome_json(option),
        "per_attempt": per_attempt,
        "items": {
            "hardware": o.attempts * hourly / (option.attempt_rate * 3600 * u),
            "labour": o.attempts * lab["per_hour"] / (option.attempt_rate * 3600 * u),
            "escalation": o.escalated * task.human_review_cost,
        },
        "per_task": per_task_,
        "per_successful_task": per_successful,
        "per_successful_task_interval": figure_interval(per_successful, varied, lambda x: x.per_successful()),
        "capacity_tasks_per_month": option.capacity(),
        "instances": instances,
        "monthly": option.monthly(volume),
        "monthly_items": {
            "instances": instances * option.instance_hourly * HOURS_PER_MONTH,
            "hardware": instances * hourly * HOURS_PER_MONTH,
            "labour": instances * lab["monthly"],
            "escalation": volume * o.escalated * task.human_review_cost,
        },
        "per_successful_task_at_volume": at_volume,
        "per_successful_task_at_volume_interval": figure_interval(
            at_volume, varied, lambda x: x.per_successful_at(volume) if volume else x.per_successful()
        ),
        "per_successful_task_by_utilization": {
            f"{v:.0%}": replace(option, utilization=v).per_successful() for v in UTILIZATION_LEVELS
        },
        # the run's own workload, per token (not the task's)
        "per_1m_output_tokens": per_million_tokens(option.instance_hourly, measured["output_tokens_per_s"], u),
        "per_1m_total_tokens": per_million_tokens(option.instance_hourly, measured["total_tokens_per_s"], u),
    }
    out["per_successful_task_ci95"] = out["per_successful_task_interval"]["ci95"]
    out["per_successful_task_at_volume_ci95"] = out["per_successful_task_at_volume_interval"]["ci95"]
    ci = measured.get("output_tokens_per_s_ci95")
    if ci and ci[0] > 0:  # slower throughput, dearer tokens: the interval flips
        out["per_1m_output_tokens_ci95"] = [
            per_million_tokens(option.instance_hourly, ci[1], u),
            per_million_tokens(option.instance_hourly, ci[0], u),
        ]
    per_kwh = offer.owned.electricity_per_kwh if offer.owned is not None else electricity_per_kwh
    joules = measured.get("gpu_energy_j_per_output_token")
    out["electricity_per_kwh"] = per_kwh
    out["energy_j_per_output_token"] = joules
    out["energy_per_1m_output_tokens"] = (
        energy_per_million_tokens(joules, per_kwh) if joules is not None and per_kwh is not None else None
    )
    out["_option"] = option
    out["_variations"] = varied
    return out


def api_section(
    name: str,
    offer,
    task: TaskProfile,
    success: dict[str, Any],
    today: datetime.date,
    stale_after: int,
) -> dict[str, Any]:
    option, bill = api_option(name, offer, task, success)
    varied = variations(option, success, None)
    o = option.outcome
    volume = task.tasks_per_month
    per_successful = option.per_successful()
    out = {
        "name": name,
        "kind": "api",
        "offer": name,
        "provider": offer.provider,
        "model": offer.model,
        "price_source": offer.source,
        "source_version": offer.source_version,
        "as_of": offer.as_of.isoformat() if offer.as_of else None,
        "retrieved": offer.retrieved.isoformat() if offer.retrieved else None,
        "price_age": price_age(offer.as_of, today, stale_after),
        "deprecation": deprecation_state(offer.deprecation, today),
        "prices_per_1m": {
            "input": offer.input_per_1m,
            "cached_input": offer.cached_input_per_1m,
            "cache_write_input": offer.cache_write_input_per_1m,
            "output": offer.output_per_1m,
            "batch_input_discount": offer.batch_discounts[0],
            "batch_output_discount": offer.batch_discounts[1],
            "tiers": [t.model_dump() for t in offer.tiers],
        },
        "attempt": bill,
        "success": success,
        "outcome": outcome_json(option),
        "per_attempt": bill["total"],
        "items": {
            **{k: o.attempts * v for k, v in bill["items"].items()},
            "escalation": o.escalated * task.human_review_cost,
        },
        "per_task": option.per_task(),
        "per_successful_task": per_successful,
        "per_successful_task_interval": figure_interval(per_successful, varied, lambda x: x.per_successful()),
        "monthly": option.monthly(volume),
        "per_successful_task_at_volume": per_successful,
    }
    out["per_successful_task_ci95"] = out["per_successful_task_interval"]["ci95"]
    out["per_successful_task_at_volume_interval"] = out["per_successful_task_interval"]
    out["per_successful_task_at_volume_ci95"] = out["per_successful_task_ci95"]
    out["_option"] = option
    out["_variations"] = varied
    return out


def break_even_entry(sh: dict[str, Any], api: dict[str, Any]) -> dict[str, Any]:
    """The break-even volume of a self-hosted option against an API, with its interval and sensitivities."""
    s_opt, a_opt = sh["_option"], api["_option"]
    point = break_even(s_opt, a_opt)
    ends = {f"self-hosted {k}": [break_even(v, a_opt) for v in vs] for k, vs in sh.get("_variations", {}).items()}
    ends |= {f"API {k}": [break_even(s_opt, v) for v in vs] for k, vs in api.get("_variations", {}).items()}
    interval = combine(point, ends)
    return {
        "self_hosted": sh["name"],
        "api": api["name"],
        "tasks_per_month": point,
        "ci95": interval["ci95"],
        "interval": interval,
        "by_price": {f"{k:+.0%}": break_even(s_opt, replace(a_opt, price_factor=1 + k)) for k in (-0.5, 0.0, 0.5)},
        "by_utilization": {f"{v:.0%}": break_even(replace(s_opt, utilization=v), a_opt) for v in UTILIZATION_LEVELS},
    }


# -- the answer ----------------------------------------------------------------------------------
def _cost_at(entry: dict[str, Any], volume: float, option: Option | None = None) -> float | None:
    option = option or entry["_option"]
    return option.per_successful_at(volume) if volume else option.per_successful()


def _winner(entries: list[dict[str, Any]], volume: float) -> dict[str, Any] | None:
    priced = [(c, e) for e in entries if (c := _cost_at(e, volume)) is not None]
    return min(priced, key=lambda x: x[0])[1] if priced else None


def _bisect(f, lo: float, hi: float, steps: int = 60, log: bool = False) -> float:
    """The point in [lo, hi] where the boolean f changes (f(lo) != f(hi))."""
    f_lo = f(lo)
    for _ in range(steps):
        mid = math.sqrt(lo * hi) if log else (lo + hi) / 2
        if f(mid) == f_lo:
            lo = mid
        else:
            hi = mid
    return hi


def volume_flips(entries: list[dict[str, Any]], volume: float) -> dict[str, Any]:
    """The nearest volumes below and above the stated one at which the cheapest option changes (a scan of
    200 points a decade over three decades either way, refined by bisection)."""
    now = _winner(entries, volume)
    out: dict[str, Any] = {"below": None, "above": None}
    if now is None or volume <= 0:
        return out
    for direction, far in (("below", volume / 1000), ("above", volume * 1000)):
        points = 600
        prev = volume
        for i in range(1, points + 1):
            v = volume * (far / volume) ** (i / points)
            w = _winner(entries, v)
            if w is not now:
                edge = _bisect(lambda x: _winner(entries, x) is now, prev, v, log=True)
                w = _winner(entries, edge)
                out[direction] = {"tasks_per_month": edge, "cheapest": w["name"] if w else None}
                break
            prev = v
    return out


def price_flip(entry: dict[str, Any], target: float, volume: float) -> float | None:
    """The factor on this option's price at which its cost per successful task equals target (None: no price
    change does it, because its escalation or labour costs alone exceed target)."""
    opt: Option = entry["_option"]
    o = opt.outcome
    if not o.successful:
        return None
    h = o.escalated * opt.human_review_cost
    if opt.kind == "api":
        base = o.attempts * opt.attempt_cost
        f = (target * o.successful - h) / base if base else None
    else:
        if volume:
            n = opt.instances(volume)
            f = (
                (target * o.successful * volume - volume * h) / (n * HOURS_PER_MONTH) - opt.labour_hourly
            ) / opt.hardware_hourly
        else:
            per = o.attempts / (opt.attempt_rate * 3600 * opt.utilization)
            f = ((target * o.successful - h) / per - opt.labour_hourly) / opt.hardware_hourly
    return f if f is not None and f > 0 else None


def success_flip(entry: dict[str, Any], target: float, volume: float, winner: bool) -> float | None:
    """The success rate at which this option's cost per successful task reaches target: for the winner, the
    lowest rate at which it still wins; for another option, the rate it needs to win (None: none in (0, 1])."""
    opt: Option = entry["_option"]

    def cheaper(s: float) -> bool:
        c = _cost_at(entry, volume, replace(opt, success_rate=s))
        return c is not None and c <= target

    if winner:
        lo, hi = 1e-6, opt.success_rate
        if cheaper(lo):
            return None
        return _bisect(cheaper, lo, hi)
    if not cheaper(1.0):
        return None
    return _bisect(cheaper, opt.success_rate, 1.0)


def utilization_flip(entry: dict[str, Any], target: float, volume: float, winner: bool) -> float | None:
    opt: Option = entry["_option"]
    if opt.kind != "self-hosted":
        return None

    def cheaper(u: float) -> bool:
        c = _cost_at(entry, volume, replace(opt, utilization=u))
        return c is not None and c <= target

    if winner:
        if cheaper(0.01):
            return None
        return _bisect(cheaper, 0.01, opt.utilization)
    if not cheaper(1.0):
        return None
    return _bisect(cheaper, opt.utilization, 1.0)


def eligibility(entry: dict[str, Any], bar: float | None) -> str | None:
    """Why an option is left out of the recommendation, or None."""
    dep = entry.get("deprecation") or {}
    if dep.get("deprecated"):
        return dep["note"]
    s = entry["success"]
    if entry["_option"].outcome.successful <= 0:
        return "no task succeeded"
    if bar is not None and not s["measured"] and s["source"] != "flag":  # a completion rate, not a quality
        return (
            f"answer quality not measured ({s['source']} is not a golden run): the {bar:.0%} bar needs a "
            "golden run (bench eval --golden FILE) or an assumed rate (--self-hosted-success-rate)"
        )
    if bar is not None and s["rate"] < bar:
        ci = s.get("ci95")
        interval = f", 95% CI {ci[0]:.0%}-{ci[1]:.0%}" if ci else ""
        return f"success rate {s['rate']:.0%} ({s['basis']}{interval}) is below the {bar:.0%} bar"
    return None


def decision(
    self_hosted: list[dict[str, Any]],
    apis: list[dict[str, Any]],
    task: TaskProfile,
    bar: float | None,
    assumptions: list[dict[str, str]],
) -> dict[str, Any]:
    """The answer: the cheapest option per successful task at the stated volume among those that qualify, by
    how much, the break-even volume, what would flip it, and which inputs are assumptions."""
    volume = task.tasks_per_month
    entries = self_hosted + apis
    excluded = [{"name": e["name"], "why": why} for e in entries if (why := eligibility(e, bar))]
    eligible = [e for e in entries if not eligibility(e, bar)]
    ranked = sorted(
        ((c, e) for e in eligible if (c := _cost_at(e, volume)) is not None),
        key=lambda x: x[0],
    )
    out: dict[str, Any] = {
        "tasks_per_month": volume,
        "quality_bar": bar,
        "excluded": excluded,
        "assumptions": assumptions,
        "ranking": [
            {
                "name": e["name"],
                "kind": e["kind"],
                "per_successful_task": c,
                "ci95": e["per_successful_task_at_volume_ci95"],
                "monthly": e["monthly"],
            }
            for c, e in ranked
        ],
    }
    if not ranked:
        out["winner"] = None
        return out
    cost_w, win = ranked[0]
    out["winner"] = win["name"]
    out["winner_kind"] = win["kind"]
    if len(ranked) > 1:
        cost_r, run = ranked[1]
        out["runner_up"] = run["name"]
        out["difference"] = {
            "per_successful_task": cost_r - cost_w,
            "ratio": cost_r / cost_w if cost_w else None,
            "monthly": run["monthly"] - win["monthly"],
        }
        out["flips"] = {
            "volume": volume_flips(eligible, volume),
            "price": {
                "winner_factor": price_flip(win, cost_r, volume),
                "runner_up_factor": price_flip(run, cost_w, volume),
            },
            "success_rate": {
                "winner": success_flip(win, cost_r, volume, winner=True),
                "runner_up": success_flip(run, cost_w, volume, winner=False),
            },
            "utilization": {
                "winner": utilization_flip(win, cost_r, volume, winner=True),
                "runner_up": utilization_flip(run, cost_w, volume, winner=False),
            },
        }
    best_sh = next((e for _, e in ranked if e["kind"] == "self-hosted"), None)
    best_api = next((e for _, e in ranked if e["kind"] == "api"), None)
    note = None
    if best_api and not best_sh:  # every self-hosted option is left out: its break-even still shows the gap
        live = [e for e in self_hosted if not (e.get("deprecation") or {}).get("deprecated")]
        priced = [(c, e) for e in live if (c := _cost_at(e, volume)) is not None]
        if priced:
            best_sh = min(priced, key=lambda x: x[0])[1]
            note = f"{best_sh['name']} is left out ({eligibility(best_sh, bar)})"
    if best_sh and best_api:
        be = break_even_entry(best_sh, best_api)
        out["break_even"] = {k: be[k] for k in ("self_hosted", "api", "tasks_per_month", "ci95")} | {"note": note}
    # an option left out only by the quality bar: the success rate at which it would qualify and win
    out["below_bar"] = []
    for e in entries:
        why = eligibility(e, bar)
        if why is None or (e.get("deprecation") or {}).get("deprecated") or bar is None:
            continue
        needed = success_flip(e, cost_w, volume, winner=False)
        at_bar = _cost_at(e, volume, replace(e["_option"], success_rate=bar))
        out["below_bar"].append(
            {
                "name": e["name"],
                "success_rate": e["success"]["rate"],
                "per_successful_task_at_bar": at_bar,
                "success_rate_to_win": None if needed is None else max(needed, bar),
            }
        )
    return out


def _cache_text(value: float | None) -> str:
    if value is None:
        return "API 0%, self-hosted as its run measured"
    return f"{value:.0%} on both sides"


def _escalation_text(value: float | str) -> str:
    return "every task the model fails" if value == "failures" else f"{value:.1%} of tasks"


def task_assumptions(task: TaskProfile, measured_from: str | None, given: set[str]) -> list[dict[str, str]]:
    """The task's inputs, each marked measured or assumed."""
    out = []
    tokens = f"{task.input_tokens:,.0f} input + {task.output_tokens:,.0f} output tokens"
    if measured_from and not {"input_tokens", "output_tokens"} <= given:
        out.append(
            {"input": "task tokens", "value": tokens, "basis": f"measured: the mean request of run {measured_from}"}
        )
    else:
        out.append({"input": "task tokens", "value": tokens, "basis": "given (--input-tokens, --output-tokens)"})
    for key, label, value in (
        ("tasks_per_month", "volume", f"{task.tasks_per_month:,.0f} tasks/month"),
        ("utilization", "target utilization", f"{task.utilization:.0%}"),
        ("peak_to_average", "peak-to-average", f"{task.peak_to_average:g}"),
        ("reasoning_tokens", "reasoning tokens per call", f"{task.reasoning_tokens:g}"),
        ("tool_calls", "tool calls per attempt", f"{task.tool_calls}"),
        ("cached_input_share", "cached input share", _cache_text(task.cached_input_share)),
        ("batch_share", "batch share", f"{task.batch_share:.0%}"),
        ("max_retries", "retries of a failed attempt", f"up to {task.max_retries}"),
        ("escalation_rate", "escalation", _escalation_text(task.escalation_rate)),
        ("human_review_cost", "human review", f"${task.human_review_cost:g} per escalated task"),
    ):
        flag = "--" + key.replace("_", "-")
        basis = f"given {flag}" if key in given else f"default {flag}"
        out.append({"input": label, "value": value, "basis": basis})
    return out


@dataclass(frozen=True)
class PricingInputs:
    """What prices a task besides the runs and the catalog: the task, the quality bar, success rates that are
    assumed rather than measured, the date prices are aged against."""

    task: TaskProfile
    given: frozenset[str] = frozenset()  # the task's fields given explicitly (the rest are defaults)
    bar: float | None = None  # the quality bar: options below it are left out of the answer
    self_hosted_success_rate: float | None = None  # assumed instead of the runs' measured rate
    api_success_rate: float = 1.0  # assumed for an API offer without a golden run of its own
    api_success: dict[str, dict[str, Any]] = field(default_factory=dict)  # measured, by API offer
    today: datetime.date | None = None
    stale_after: int = STALE_AFTER_DAYS
    electricity_per_kwh: float | None = None


def api_success_from_run(summary: RunSummary, run_id: str) -> dict[str, Any]:
    """An API offer's success rate from a golden run against it."""
    q = summary.quality
    return _success(
        q.success_rate, q.ci95, f"golden run {run_id}: {q.passed}/{q.cases} cases passed", True, f"run {run_id}"
    )


def cost_report(
    runs: list[dict[str, Any]],
    api_offers: dict[str, Any],
    inputs: PricingInputs,
    measured_from: str | None = None,
) -> dict[str, Any]:
    """Every option priced for the task, itemised, with the answer. `runs`: dicts with run_id, measured (from
    priced_throughput), offer_name and offer."""
    task = inputs.task
    today, stale_after = inputs.today or datetime.date.today(), inputs.stale_after
    self_hosted_success_rate, electricity_per_kwh = inputs.self_hosted_success_rate, inputs.electricity_per_kwh
    api_success, api_success_rate, bar, given = inputs.api_success, inputs.api_success_rate, inputs.bar, inputs.given
    _check_utilization(task.utilization)
    self_hosted = []
    for run in runs:
        success = self_hosted_success(run["measured"], run["run_id"], self_hosted_success_rate)
        name = f"{run['run_id']} on {run['offer_name']}"
        self_hosted.append(
            self_hosted_section(
                name,
                run["run_id"],
                run["measured"],
                run["offer_name"],
                run["offer"],
                task,
                success,
                today,
                stale_after,
                electricity_per_kwh,
            )
        )
    apis = []
    for name, offer in api_offers.items():
        success = (api_success or {}).get(name) or _success(
            api_success_rate, None, f"assumed {api_success_rate:.0%} (--api-success-rate)", False, "flag"
        )
        apis.append(api_section(name, offer, task, success, today, stale_after))
    for api in apis:
        api["break_even"] = [break_even_entry(sh, api) for sh in self_hosted]
    assumptions = task_assumptions(task, measured_from, given or set())
    for e in self_hosted + apis:
        s = e["success"]
        assumptions.append(
            {
                "input": f"success rate: {e['name']}",
                "value": f"{s['rate']:.1%}",
                "basis": ("measured: " if s["measured"] else "assumption: ") + s["basis"],
            }
        )
    for sh in self_hosted:
        if sh["rate"]["method"] == "extrapolated":
            assumptions.append(
                {
                    "input": f"throughput: {sh['name']}",
                    "value": f"{sh['rate']['attempts_per_s']:.4g} attempts/s",
                    "basis": "assumption: " + sh["rate"]["note"],
                }
            )
        else:
            stage = sh["priced_stage"]
            assumptions.append(
                {
                    "input": f"throughput: {sh['name']}",
                    "value": f"{sh['rate']['attempts_per_s']:.4g} attempts/s",
                    "basis": f"measured: run {sh['run_id']}, stage {stage['stage']} "
                    f"({stage['label']}, {stage['basis']})",
                }
            )
        lab = sh["labour"]
        assumptions.append(
            {
                "input": f"operations labour: {sh['offer']}",
                "value": f"{lab['hours_per_month']:g} h/month x ${lab['rate_per_hour']:g}/h",
                "basis": "catalog: " + lab["basis"],
            }
        )
    answer = decision(self_hosted, apis, task, bar, assumptions)
    warnings = price_warnings(self_hosted, apis)
    return {
        "today": today.isoformat(),
        "stale_after_days": stale_after,
        "task": task.to_json(),
        "workflow": {"calls": [asdict(c) for c in calls(task)], "tokens_per_attempt": attempt_tokens(task)},
        "interval_method": INTERVAL_METHOD,
        "decision": answer,
        "self_hosted": self_hosted,
        "apis": apis,
        "warnings": warnings,
    }


def price_warnings(self_hosted: list[dict[str, Any]], apis: list[dict[str, Any]]) -> list[str]:
    out = []
    seen = set()
    for e in self_hosted:
        if e["offer"] not in seen and e["price_age"]["stale"]:
            seen.add(e["offer"])
            out.append(f"price of {e['offer']} ({e['price_source']}, as of {e['as_of']}): {e['price_age']['note']}")
    for e in apis:
        if e["price_age"]["stale"]:
            out.append(
                f"price of {e['name']} ({e['price_source']}, as of {e['as_of'] or 'unknown'}): {e['price_age']['note']}"
            )
        if e["deprecation"]["note"]:
            out.append(f"{e['name']}: {e['deprecation']['note']}")
    return out


def public(report: Any) -> Any:
    """The report without its in-memory options (keys starting with _), for JSON."""
    if isinstance(report, dict):
        return {k: public(v) for k, v in report.items() if not k.startswith("_")}
    if isinstance(report, list):
        return [public(v) for v in report]
    return report


# -- the older per-figure helpers (stage tables, energy) -------------------------------------------
def _check_utilization(utilization: float) -> None:
    if not 0 < utilization <= 1:
        raise CostError(f"utilization must be in (0, 1], got {utilization}")


def per_million_tokens(hourly: float, tokens_per_s: float | None, utilization: float) -> float | None:
    _check_utilization(utilization)
    if not tokens_per_s or tokens_per_s <= 0:
        return None
    return hourly / (tokens_per_s * 3600 * utilization) * 1e6


def energy_per_million_tokens(joules_per_token: float, per_kwh: float) -> float:
    """Electricity for 1M tokens at a measured energy per token (1 kWh = 3.6e6 J)."""
    return joules_per_token * 1e6 / 3.6e6 * per_kwh


def stage_costs(summary: RunSummary, hourly: float, utilization: float) -> list[dict[str, Any]]:
    """Per stage at its own workload: $ per 1M output and total tokens and $ per successful request (the
    hour's cost over the requests that succeeded in it: failures counted once)."""
    rows = []
    for stage in summary.stages:
        rps = stage.request_throughput_per_s
        rows.append(
            {
                "stage": stage.stage,
                "label": stage.label,
                "requests_per_s": rps,
                "per_1m_output_tokens": per_million_tokens(hourly, stage.output_throughput_tokens_per_s, utilization),
                "per_1m_total_tokens": per_million_tokens(
                    hourly, stage.total_token_throughput_tokens_per_s, utilization
                ),
                "per_successful_request": hourly / (rps * 3600 * utilization) if rps else None,
            }
        )
    return rows


def monthly_curve(option: Option, volumes: list[float]) -> list[float]:
    """Monthly cost at each volume: a step function of instances for self-hosting, a line for an API."""
    return [option.monthly(v) for v in volumes]


# -- embeddings and rerank: cost per 1M embedded tokens --------------------------------------------
def embedding_cost(
    summary: RunSummary,
    offer_name: str,
    offer,
    api_offers: dict[str, Any],
    utilization: float = 1.0,
    today: datetime.date | None = None,
    stale_after: int = STALE_AFTER_DAYS,
) -> dict[str, Any]:
    """An embeddings (or rerank) run priced per 1M embedded tokens, against the API embedding offers.

    Self-hosted, per stage: $ per 1M tokens = H / (tokens/s x 3600 x u) x 1e6, H the instance's hourly cost
    (labour included) and tokens/s the stage's embedded tokens per second (successful requests over the
    window); the run is priced at its fastest stage. An API: its input price per 1M tokens (and its batch
    price, where it has one). Break-even (one instance): T* = H x 730 / (price / 1e6) tokens a month, valid
    while one instance carries it (tokens/s x 3600 x u x 730)."""
    _check_utilization(utilization)
    today = today or datetime.date.today()
    hourly = instance_hourly(offer)
    stages = []
    for stage in summary.stages:
        pool = stage.pooling
        if pool is None or not pool.tokens_per_s:
            continue
        stages.append(
            {
                "stage": stage.stage,
                "label": stage.label,
                "batch_size": pool.batch_size.mean,
                "inputs_per_s": pool.inputs_per_s,
                "tokens_per_s": pool.tokens_per_s,
                "e2e_p99_ms": stage.e2e_ms.p99,
                "per_1m_tokens": per_million_tokens(hourly, pool.tokens_per_s, utilization),
                "per_1m_inputs": per_million_tokens(hourly, pool.inputs_per_s, utilization),
            }
        )
    if not stages:
        raise CostError("no stage of this run embedded anything (no successful embeddings or rerank request)")
    best = max(stages, key=lambda s: s["tokens_per_s"])
    capacity = best["tokens_per_s"] * 3600 * utilization * 730  # tokens a month one instance carries
    apis = []
    for name, api in sorted(api_offers.items()):
        price = api.input_per_1m
        batch = price * (1 - api.batch_discounts[0]) if api.batch_discounts[0] else None
        break_even = hourly * 730 / (price / 1e6) if price > 0 else None
        apis.append(
            {
                "name": name,
                "provider": api.provider,
                "model": api.model,
                "per_1m_tokens": price,
                "batch_per_1m_tokens": batch,
                "output_vector_size": api.output_vector_size,
                "self_hosted_ratio": best["per_1m_tokens"] / price if price > 0 else None,
                "break_even_tokens_per_month": break_even if break_even and break_even <= capacity else None,
                "price_source": api.source,
                "as_of": api.as_of.isoformat() if api.as_of else None,
                "price_age": price_age(api.as_of, today, stale_after),
                "deprecation": deprecation_state(api.deprecation, today),
            }
        )
    cheaper = [a for a in apis if a["per_1m_tokens"] < best["per_1m_tokens"]]
    return {
        "kind": "embedding",
        "today": today.isoformat(),
        "hardware_offer": offer_name,
        "instance_hourly": hourly,
        "price_source": offer.source,
        "as_of": offer.as_of.isoformat(),
        "price_age": price_age(offer.as_of, today, stale_after),
        "utilization": utilization,
        "stages": stages,
        "priced_stage": best,
        "tokens_per_month_one_instance": capacity,
        "apis": apis,
        "cheaper_apis": [a["name"] for a in cheaper],
        "formula": "self-hosted $/1M tokens = instance $/h / (embedded tokens/s x 3600 x utilization) x 1e6; "
        "API: its input price per 1M tokens",
    }
