"""`bench check RUN --baseline BASELINE`: a CI gate on performance and quality (no I/O beyond reading the two
run directories).

Each metric has a tolerance: how much worse the run may be than the baseline, relative for latency and
throughput (`ttft_p99=+10%`: up to 10 % slower; `output_tok_s=-5%`: up to 5 % less), in percentage points for
rates (`error_rate=+1pp`, `success_rate=-2pp`). A metric **regresses** only when both hold:

1. its change is worse than the tolerance, and
2. the change is statistically clear: the 95 % interval of the change lies entirely on the worse side of no
   change (for the success rate and the invalid-output rate of two golden runs: the exact McNemar test on
   the paired verdicts, p < 0.05, more cases worse than better).

A change past the tolerance whose interval includes no change is reported as "not clear" and passes; so does
a clear change within the tolerance.

The interval is a **bootstrap interval of the relative change of the metric itself** (a mean's: see below):
each run's per-request values (TTFT, TPOT, E2E of its successful measured requests; for output tok/s, the
throughputs of the stage's ten equal time slices) are resampled with replacement, independently, RESAMPLES
times from a fixed seed, the statistic the tolerance names (p50, p99, mean, ...) is computed on each resample,
and the 2.5th and 97.5th percentiles of new/baseline - 1 are the interval, expanded at small n (expanded_tail:
the 0.9th and 99.1st at 10 values, the 2.1st and 97.9th at 50). For a mean (output tok/s; a `_mean` tolerance)
the resamples give each side's spread only: the interval is Welch's t on the log of the ratio of the means,
each side's variance of log(mean) the larger of the formula for independent values (s^2 / (n * mean^2)) and
the block bootstrap's (which sees serial correlation), with Welch-Satterthwaite's degrees of freedom. The
percentile bootstrap of a mean is too narrow at small n: over pairs of samples of one distribution it called
20 % of pairs of 5 values different, 16.5 % of pairs of 10 (the ten time slices of a throughput) and 8-9 % of
24 and 50, against a nominal 5 %; the t interval 3.5-6 % at each n, and fewer than the bootstrap at each n
under serial correlation (AR(1), 0.5: 21-24 % against 35-42 % at 5 and 10 values, 7 % against 8 % at 200)
(scripts/check_interval_coverage.py). A percentile's interval has the same fault, which the expansion mends:
the plain percentile interval called 10-11 % of pairs of 10 values different at the median and 8 % of 16;
expanded, 6.5 % and 5 %, and 3-6 % of pairs of 24 to 200 values at the median and of 50 to 400 at p90. Why a
bootstrap of the difference rather than a rank test (Mann-Whitney): the tolerance is on a percentile, and a
rank test answers another question (is one run's distribution shifted against the other's as a whole); a p99
can regress with the ranks barely moving, and a median shift of 1 % is "significant" to a rank test over
enough requests. The bootstrap tests the very figure that is gated, for any statistic, with no assumption
about the latency distribution. Above LARGE_N values a side's spread comes from its large-sample limit instead
(the order-statistic interval of a percentile, the standard error of a mean: the larger of the
independent-values formula and the batch means', which see serial correlation), combined on the log scale.

What the interval does not cover: drift between two runs of one setup (another tenant on the machine, a
cold cache, thermal state). Resampling requests measures how well each run pins its own figure, not how far
two runs of the same setup land apart; the tolerance is what absorbs that drift, so size it from repeated
identical runs on the CI machine (scripts/check_false_alarms.py measures the false-alarm rate).

A percentile is judged only when at least MIN_TAIL requests of each run lie above it (p50 from 10 requests,
p90 from 50, p99 from 500): below that it is about the slowest request, the bootstrap of an extreme order
statistic is unreliable, and identical runs of 24 requests moved their p99s by up to 50 %. Such a figure is
shown with the verdict "too few requests". The default tolerances were sized on the 2-core development VM's
CPU smoke run (24 requests of 64 + 16 tokens, 2 streams): over the 42 ordered pairs of 7 identical runs with
cores to spare, TTFT p50 worsened by up to 19 %, TPOT p50 by 8 %, output tok/s by 6 %.

Contention: a check of timing is only as good as the machine was free. From each run's telemetry over a
stage's measured window (means of the samples): how busy the machine was (system CPU, a share of its logical
CPUs) and how much of it other processes used (system CPU x logical CPUs - the engine's process tree - the
rig's own client, in cores). When the machine was saturated (at least SATURATED busy) and other processes
held more than MAX_CONTENTION of its CPUs, in either run, the engine waited for cores it would have had, so
that stage's latency and throughput are **not judged** (shown, with the reason; a JUnit skip) rather than
failed. Measured on the 2-core development VM shared with other jobs, 22 runs of one setup: the 15 whose
machine was at least 90 % busy with other processes on it had TPOT p50 from 53 to 125 ms and output tok/s from
10 to 23 (most of them slowed); the 7 with CPU to spare (59-83 % busy, up to 0.7 cores used by others),
52-57 ms and 21-22 tok/s.
Error and success rates are judged either way. `max_contention=None` judges regardless.
With `--endpoint` the rig did not start the engine, cannot tell its CPU from others', and judges timing.

Error rate: failed / finished measured requests per stage, compared with Newcombe's hybrid score interval of
the difference of two proportions (method 10), in percentage points.

Absolute gates on the run alone: `--slo ttft=500ms,...` met at `--slo-percentile` in every stage (a failed
request counts as infinitely slow, as in `bench run`), `--max-error-rate` in every stage, a run that is not
complete (its engine died, it was interrupted, a stage stopped on its error limit, or every request failed), and
a stage the baseline measured in which the run had no success (or that the run never reached).

Identity: the runs must have measured the same workload (kind, prompt lengths or prompt file / golden set
digest, prefixes, turns, API, EOS handling, temperature, the schedule of each stage both runs have); otherwise
the check refuses (exit 2) unless allow_different_workload. Differences in engine (kind, launcher, version,
settings), model (name, file digest), hardware, request counts or seed are warnings: the figures are compared,
and the output says what changed.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from bench.errors import UsageError
from bench.metrics.requests import (
    MEASURED,
    OK,
    RequestTable,
    TableBuilder,
    measured_window,
    slo_report,
    throughput_slices,
)
from bench.metrics.stats import Z_95, order_statistic_ci, percentiles, t_quantile, wilson_interval
from bench.quality import drift
from bench.records import Manifest, TelemetrySample
from bench.results import RunDirectory
from bench.summary import RunSummary, StageSummary

RESAMPLES = 2000
MIN_TAIL = 5  # a percentile is judged when at least this many requests lie above it in each run
SATURATED = 0.90  # mean system CPU (share of the machine) at which runnable threads wait for a core
MAX_CONTENTION = 0.10  # share of the machine's CPUs other processes may hold on a saturated machine
LARGE_N = 20_000
SEED = 0
ALPHA = 0.05  # McNemar's level, the complement of the intervals' 95 %

# metric -> (what it is, the direction that is worse: +1 higher, -1 lower, unit of its tolerance)
LATENCY = ("ttft", "tpot", "e2e")
STATISTICS = ("p50", "p90", "p95", "p99", "p99.9", "mean")
RATE_METRICS = {
    "error_rate": ("failed / finished measured requests", +1),
    "success_rate": ("golden cases passed (two golden runs, paired)", -1),
    "invalid_output_rate": ("outputs that broke a format check (two golden runs, paired)", +1),
}
DEFAULT_TOLERANCES = (
    "ttft_p50=+25%,ttft_p99=+25%,tpot_p50=+10%,tpot_p99=+25%,e2e_p50=+15%,e2e_p99=+25%,output_tok_s=-10%,"
    "error_rate=+1pp,success_rate=-2pp,invalid_output_rate=+2pp"
)
METHOD = (
    "A metric regresses when its change is worse than its tolerance and statistically clear: for latency and "
    f"throughput, the 95% interval of the relative change lies entirely on the worse side (a percentile's: the "
    f"bootstrap of the per-request values, {RESAMPLES} independent block resamples of each run, seed 0, expanded "
    "at small n; a mean's, "
    "output tok/s over the ten time slices included: Welch's t on the log of the ratio, each run's variance the "
    "larger of the independent-values formula and the bootstrap's); for the "
    "error rate, Newcombe's 95% interval of the difference; for a golden run's success and invalid-output rates, "
    "the exact McNemar test on the paired cases (p < 0.05). The interval covers request-to-request variation "
    "within each run, not drift between runs of one setup: the tolerances absorb that."
)


def metric_names() -> list[str]:
    return [f"{m}_{s}" for m in LATENCY for s in STATISTICS] + ["output_tok_s", *RATE_METRICS]


def worse_direction(metric: str) -> int:
    if metric in RATE_METRICS:
        return RATE_METRICS[metric][1]
    return -1 if metric == "output_tok_s" else +1


@dataclass(frozen=True)
class Tolerance:
    metric: str
    limit: float | None  # a fraction (relative) or percentage points as a fraction (0.02 = 2pp); None = off
    unit: str  # "%" or "pp"

    @property
    def worse(self) -> int:
        return worse_direction(self.metric)

    def text(self) -> str:
        if self.limit is None:
            return "off"
        sign = "+" if self.worse > 0 else "-"
        return f"{sign}{self.limit * 100:g}{self.unit}"


def parse_tolerances(text: str | None, base: str = DEFAULT_TOLERANCES) -> dict[str, Tolerance]:
    """`ttft_p99=+10%,output_tok_s=-5%,success_rate=-2pp,tpot_p99=off` over the defaults (given metrics replace
    theirs; the others keep their default)."""
    out = _parse(base) if base else {}
    if text:
        out.update(_parse(text))
    return out


def _parse(text: str) -> dict[str, Tolerance]:
    out = {}
    known = metric_names()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = (x.strip() for x in part.partition("="))
        if not sep:
            raise UsageError(f"--tolerance {part!r}: give METRIC=VALUE, e.g. ttft_p99=+10% or success_rate=-2pp")
        if name not in known:
            raise UsageError(f"--tolerance {part!r}: unknown metric {name!r}; known: {', '.join(known)}")
        if value == "off":
            out[name] = Tolerance(name, None, "%")
            continue
        match = re.fullmatch(r"([+-]?)(\d+(?:\.\d+)?)\s*(%|pp)", value)
        if not match:
            raise UsageError(f"--tolerance {part!r}: give a signed amount with its unit, e.g. +10%, -5%, -2pp, or off")
        sign, amount, unit = match.groups()
        worse = worse_direction(name)
        if sign and (sign == "+") != (worse > 0):
            raise UsageError(
                f"--tolerance {part!r}: {name} gets worse as it {'rises' if worse > 0 else 'falls'}, so its "
                f"tolerance is {'+' if worse > 0 else '-'}{amount}{unit}"
            )
        rate = name in RATE_METRICS
        if rate and unit != "pp":
            raise UsageError(f"--tolerance {part!r}: {name} is a rate: give its tolerance in percentage points (pp)")
        if not rate and unit != "%":
            raise UsageError(f"--tolerance {part!r}: give {name}'s tolerance in percent (%), relative to the baseline")
        out[name] = Tolerance(name, float(amount) / 100, unit)
    return out


# -- the two runs ------------------------------------------------------------------------------------------
@dataclass
class Side:
    path: Path
    manifest: Manifest
    summary: RunSummary
    table: RequestTable
    verdicts: list[dict[str, Any]] | None  # a golden run's eval.json cases
    telemetry: list[TelemetrySample] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def golden(self) -> bool:
        return self.manifest.golden

    def stage_table(self, index: int) -> RequestTable:
        return self.table.select(self.table.stage == index)


def load_side(path: Path, role: str) -> Side:
    run_dir = RunDirectory(path)
    if not path.is_dir() or not run_dir.exists():
        raise UsageError(f"{role} {path}: not a run directory (no manifest.json); give a folder `bench run` wrote")
    if not run_dir.has_summary():
        raise UsageError(f"{role} {path}: no summary.json (the run did not finish); `bench summarize {path} --write`")
    builder = TableBuilder()
    for row in run_dir.request_rows():
        builder.add_row(row)
    try:
        evaluation = run_dir.golden_evaluation()
    except UsageError as error:
        raise UsageError(f"{role} {error}") from None
    return Side(
        path=path,
        manifest=run_dir.manifest(),
        summary=run_dir.summary(),
        table=builder.build(),
        verdicts=evaluation["cases"] if evaluation else None,
        telemetry=run_dir.telemetry(),
    )


def contention(side: Side, stage: int) -> dict[str, Any] | None:
    """CPU other processes used during a stage's measured window (see the module docstring); None without
    system CPU samples in it."""
    window = measured_window(side.stage_table(stage))
    cpus = side.manifest.hardware.cpu_cores_logical or side.manifest.hardware.cpus_usable
    if window is None or not cpus:
        return None
    start, end = window
    samples = [t for t in side.telemetry if start <= t.t_ns <= end and t.system_cpu_percent is not None]
    if not samples or all(t.engine_cpu_percent is None for t in samples):
        return None  # no samples, or an engine the rig did not start (--endpoint): its CPU cannot be told apart
    foreign = [
        max(
            0.0,
            t.system_cpu_percent * cpus / 100 - (t.engine_cpu_percent or 0) / 100 - (t.client_cpu_percent or 0) / 100,
        )
        for t in samples
    ]
    engine = [t.engine_cpu_percent / 100 for t in samples if t.engine_cpu_percent is not None]
    cores = sum(foreign) / len(foreign)
    return {
        "busy": sum(t.system_cpu_percent for t in samples) / len(samples) / 100,
        "other_cores": cores,
        "share": cores / cpus,
        "cpus": cpus,
        "engine_cores": sum(engine) / len(engine) if engine else None,
        "samples": len(samples),
    }


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in sorted(value.items()):
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def _differences(label: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    fa, fb = _flat("", a, {}), _flat("", b, {})
    return [
        f"{label} {key}: {fa.get(key)!r} -> {fb.get(key)!r}"
        for key in sorted(set(fa) | set(fb))
        if fa.get(key) != fb.get(key)
    ]


_ENGINE_VOLATILE = {"port", "host", "pid", "model_path", "python", "ready_timeout_s", "info_file"}
_VERSION_VOLATILE = {"params", "hostnames", "total_slots", "n_ctx_per_slot"}


def _workload(m: Manifest, stage_indexes: set[int]) -> dict[str, Any]:
    w = m.workload
    workload = {}
    if w is not None:
        workload = {
            "kind": w.kind,
            "input_tokens": w.input_tokens,
            "output_tokens": w.output_tokens,
            "prefix_count": w.prefix_count,
            "prefix_tokens": w.prefix_tokens,
            "turns": w.turns,
            "sha256": w.sha256,
        }
    stages = {}
    for s in (s for s in m.stages if s.index in stage_indexes):
        plan = {"kind": s.kind, "name": s.name} if m.sweep_rates else {"kind": s.kind, "schedule": s.schedule}
        stages[str(s.index)] = plan
    return {
        "workload": workload,
        "api": m.api,
        "ignore_eos": m.ignore_eos,
        "temperature": m.temperature,
        "stages": stages,
    }


def _engine(m: Manifest) -> dict[str, Any]:
    e = m.engine
    if e is None:
        return {"kind": m.engine_kind}
    version = e.version
    if isinstance(version, dict):
        version = {k: v for k, v in version.items() if k not in _VERSION_VOLATILE}
    settings = {k: v for k, v in (e.settings or {}).items() if k not in _ENGINE_VOLATILE}
    return {"kind": e.engine, "launcher": e.launcher, "version": version, "settings": settings}


def _model(m: Manifest) -> dict[str, Any]:
    if m.model is None:
        return {}
    file = m.model.file or {}
    digest = file.get("sha256") or {k: v for k, v in file.items() if k not in ("path",)}
    return {"name": m.model.name, "digest": digest}


def _hardware(m: Manifest) -> dict[str, Any]:
    h = m.hardware
    return {
        "cpu_model": h.cpu_model,
        "cpu_cores_physical": h.cpu_cores_physical,
        "cpus_usable": h.cpus_usable,
        "memory_total_bytes": h.memory_total_bytes,
        "gpus": ", ".join(str(g.get("name")) for g in h.gpus) or None,
    }


def identity(base: Side, new: Side) -> tuple[list[str], list[str]]:
    """(workload differences, which refuse the comparison; warnings: what else differs in what was measured)."""
    a, b = base.manifest, new.manifest
    # the stages both runs have: a run that stopped early misses the rest, which the `measured` gate fails
    common = {s.index for s in a.stages} & {s.index for s in b.stages}
    workload = _differences("workload", _workload(a, common), _workload(b, common))
    warnings = []
    warnings += _differences("engine", _engine(a), _engine(b))
    warnings += _differences("model", _model(a), _model(b))
    warnings += _differences("hardware", _hardware(a), _hardware(b))
    requests_a = {str(s.index): s.requests for s in a.stages}
    requests_b = {str(s.index): s.requests for s in b.stages}
    warnings += _differences("requests per stage", requests_a, requests_b)
    if a.seed != b.seed:
        warnings.append(f"seed: {a.seed} -> {b.seed} (other prompts drawn from the same lengths)")
    for side in (base, new):
        if side.manifest.status != "complete":
            warnings.append(
                f"run {side.run_id} is {side.manifest.status}: {side.manifest.incomplete_reason or 'see its manifest'}"
            )
    return workload, warnings


# -- statistics --------------------------------------------------------------------------------------------
def _statistic(name: str) -> Callable[[np.ndarray], float]:
    if name == "mean":
        return lambda v: float(np.mean(v))
    q = float(name[1:])
    return lambda v: percentiles(v, [q])[0]


def block_length(n: int) -> int:
    """The moving-block bootstrap's block: ceil(n^(1/3)) consecutive values (Hall, Horowitz and Jing 1995)."""
    return max(1, math.ceil(n ** (1 / 3)))


def _resampled(values: np.ndarray, name: str, rng: np.random.RandomState, resamples: int) -> np.ndarray:
    """The statistic on each of `resamples` moving-block resamples of values in time order: blocks of
    block_length(n) consecutive values with random starts, joined and cut to n (drawn about 2M values at a
    time)."""
    n = len(values)
    block = block_length(n)
    blocks = math.ceil(n / block)
    offsets = np.arange(block)
    out = np.empty(resamples)
    rows = max(1, 2_000_000 // n)
    done = 0
    q = None if name == "mean" else float(name[1:])
    while done < resamples:
        take = min(rows, resamples - done)
        starts = rng.randint(0, n - block + 1, size=(take, blocks))
        picks = values[(starts[:, :, None] + offsets).reshape(take, -1)[:, :n]]
        if q is None:
            out[done : done + take] = picks.mean(axis=1)
        else:
            out[done : done + take] = np.percentile(picks, q, axis=1)  # linear, as bench.metrics.stats
        done += take
    return out


def _log_se(values: np.ndarray, name: str) -> float:
    """The large-sample standard error of log(statistic). A mean's: the larger of the independent-values
    formula and the batch means' (values in time order cut into about sqrt(n) batches of about sqrt(n): the
    spread of the batches' means sees serial correlation, as the block bootstrap does below LARGE_N)."""
    n = len(values)
    if name == "mean":
        mean = float(np.mean(values))
        if mean <= 0:
            return math.inf
        batches = math.isqrt(n)
        batch_means = values[: batches * (n // batches)].reshape(batches, -1).mean(axis=1)
        variance = max(float(np.var(values)) / n, float(np.var(batch_means, ddof=1)) / batches)
        return math.sqrt(variance) / mean
    low, high = order_statistic_ci(values, float(name[1:]))
    point = percentiles(values, [float(name[1:])])[0]
    return (math.log(high) - math.log(low)) / (2 * Z_95) if low > 0 and point > 0 else math.inf


def relative_change_interval(
    base: np.ndarray, new: np.ndarray, name: str, resamples: int = RESAMPLES, seed: int = SEED
) -> list[float] | None:
    """95 % interval of statistic(new) / statistic(base) - 1 (see the module docstring); None below 2 values
    a side."""
    if len(base) < 2 or len(new) < 2:
        return None
    if len(base) > LARGE_N or len(new) > LARGE_N:
        point = _statistic(name)(new) / _statistic(name)(base)
        spread = math.hypot(_log_se(base, name), _log_se(new, name)) * Z_95
        return [point * math.exp(-spread) - 1, point * math.exp(spread) - 1]
    rng = np.random.RandomState(seed)
    a = _resampled(base, name, rng, resamples)
    b = _resampled(new, name, rng, resamples)
    if name == "mean" and a.min() > 0 and b.min() > 0:
        return _mean_ratio_interval(base, new, a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = b / a - 1
    ratio = ratio[np.isfinite(ratio)]
    if not len(ratio):
        return None
    tail = expanded_tail(min(len(base), len(new)))
    return percentiles(ratio, [tail, 100 - tail])


def expanded_tail(n: int) -> float:
    """The percent of resamples cut from each end of a 95 % expanded percentile interval over n values
    (Hesterberg 2015, "What teachers should know about the bootstrap", section 4.3): the normal tail beyond
    sqrt(n / (n - 1)) * t(0.975, n - 1), which widens the plain percentile interval (2.5) at small n, where it
    is too narrow, and tends to it as n grows."""
    return 100 * NormalDist().cdf(-math.sqrt(n / (n - 1)) * t_quantile(0.975, n - 1))


def _mean_ratio_interval(
    base: np.ndarray, new: np.ndarray, base_means: np.ndarray, new_means: np.ndarray
) -> list[float]:
    """95 % interval of mean(new) / mean(base) - 1: Welch's t on the log of the ratio, each side's variance of
    log(mean) the larger of s^2 / (n * mean^2) (independent values) and that of the logs of its block-bootstrap
    means (serial correlation), with Welch-Satterthwaite's degrees of freedom."""
    sides = []
    for values, means in ((base, base_means), (new, new_means)):
        n, mean = len(values), float(np.mean(values))
        independent = float(np.var(values, ddof=1)) / (n * mean * mean)
        sides.append((max(independent, float(np.var(np.log(means)))), n))
    point = math.log(float(np.mean(new)) / float(np.mean(base)))
    total = sum(variance for variance, _ in sides)
    if total == 0:  # constant values on both sides: the ratio is known exactly
        return [math.expm1(point), math.expm1(point)]
    df = total * total / sum(variance * variance / (n - 1) for variance, n in sides)
    half = t_quantile(0.975, df) * math.sqrt(total)
    return [math.expm1(point - half), math.expm1(point + half)]


def newcombe_interval(x_new: int, n_new: int, x_base: int, n_base: int) -> list[float] | None:
    """95 % interval of p_new - p_base (Newcombe 1998, method 10: hybrid of the two Wilson intervals)."""
    if not n_new or not n_base:
        return None
    p1, p2 = x_new / n_new, x_base / n_base
    l1, u1 = wilson_interval(x_new, n_new)
    l2, u2 = wilson_interval(x_base, n_base)
    d = p1 - p2
    return [d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)]


# -- findings ----------------------------------------------------------------------------------------------
@dataclass
class Finding:
    scope: str  # the stage's label, or "quality"
    metric: str
    tolerance: Tolerance
    baseline: float | None = None
    new: float | None = None
    change: float | None = None  # relative (latency, throughput) or in points (rates)
    ci95: list[float] | None = None
    p_value: float | None = None
    n: tuple[int, int] = (0, 0)
    verdict: str = "not measured"
    method: str = ""
    note: str | None = None

    @property
    def failed(self) -> bool:
        return self.verdict == "regression"


def judge(f: Finding, clear_worse: bool, clear_better: bool) -> Finding:
    """The verdict from the change, its tolerance and whether it is statistically clear."""
    if f.change is None:
        f.verdict = "not measured"
        return f
    worse_by = f.change * f.tolerance.worse  # > 0: worse
    limit = f.tolerance.limit
    beyond = worse_by > limit + 1e-12
    if beyond and clear_worse:
        f.verdict = "regression"
    elif beyond:
        f.verdict = "not clear"
    elif worse_by > 0:
        f.verdict = "within tolerance"
    elif -worse_by > limit and clear_better:
        f.verdict = "improved"
    else:
        f.verdict = "ok"
    return f


def _latency_values(table: RequestTable, metric: str) -> np.ndarray:
    """The successful measured requests' values, in the order they were sent."""
    ok = table.select((table.phase == MEASURED) & (table.status == OK))
    values = {"ttft": ok.ttft_ms, "tpot": ok.tpot_ms, "e2e": ok.e2e_ms}[metric]()
    values = values[np.argsort(ok.t_send, kind="stable")]
    return values[~np.isnan(values)]


def _interval_finding(f: Finding, base: np.ndarray, new: np.ndarray, name: str, resamples: int) -> Finding:
    f.n = (len(base), len(new))
    if not len(base) or not len(new):
        f.note = "no values in " + ("the baseline" if not len(base) else "the run")
        return f
    stat = _statistic(name)
    f.baseline, f.new = stat(base), stat(new)
    if f.baseline <= 0:
        f.note = "the baseline's value is 0"
        return f
    f.change = f.new / f.baseline - 1
    f.ci95 = relative_change_interval(base, new, name, resamples)
    worse = f.tolerance.worse
    clear_worse = f.ci95 is not None and (f.ci95[0] > 0 if worse > 0 else f.ci95[1] < 0)
    clear_better = f.ci95 is not None and (f.ci95[1] < 0 if worse > 0 else f.ci95[0] > 0)
    if f.ci95 is None:
        f.note = "fewer than 2 values a side: no interval"
    judge(f, clear_worse, clear_better)
    if name != "mean" and f.method.startswith("bootstrap of the per-request"):
        beyond = (100 - float(name[1:])) / 100  # p90: 0.1 (1 - 0.9 is 0.0999..., 50 of it under 5)
        if min(f.n) * beyond < MIN_TAIL - 1e-9:
            needed = math.ceil(MIN_TAIL / beyond - 1e-9)
            f.verdict, f.note = (
                "too few requests",
                f"would be {f.verdict}; fewer than {MIN_TAIL} of {min(f.n)} requests lie above a {name}, so it is "
                f"about the slowest of them: judged from {needed} requests",
            )
    return f


def stage_findings(
    label: str,
    base: Side,
    new: Side,
    base_stage: StageSummary,
    new_stage: StageSummary,
    tolerances: dict[str, Tolerance],
    resamples: int,
    busy: str | None = None,
) -> list[Finding]:
    """The stage's findings; `busy` (why the machine was too busy to judge timing) turns every latency and
    throughput verdict into "not judged"."""
    bt, nt = base.stage_table(base_stage.stage), new.stage_table(new_stage.stage)
    out = []
    for metric, tol in tolerances.items():
        if tol.limit is None or metric in ("success_rate", "invalid_output_rate"):
            continue
        f = Finding(label, metric, tol)
        if metric == "output_tok_s":
            f.method = "Welch t interval of the mean of the ten time slices' throughputs"
            a, b = np.asarray(throughput_slices(bt)), np.asarray(throughput_slices(nt))
            out.append(_interval_finding(f, a, b, "mean", resamples))
        elif metric == "error_rate":
            f.method = "Newcombe interval of the difference"
            rb, rn = base_stage.requests, new_stage.requests
            f.n = (rb.finished, rn.finished)
            if rb.finished and rn.finished:
                f.baseline, f.new = rb.failed / rb.finished, rn.failed / rn.finished
                f.change = f.new - f.baseline
                f.ci95 = newcombe_interval(rn.failed, rn.finished, rb.failed, rb.finished)
                judge(f, f.ci95[0] > 0, f.ci95[1] < 0)
            out.append(f)
        else:
            kind, _, name = metric.partition("_")
            f.method = (
                "Welch t interval of the per-request mean" if name == "mean" else "bootstrap of the per-request values"
            )
            out.append(_interval_finding(f, _latency_values(bt, kind), _latency_values(nt, kind), name, resamples))
    if busy:
        for f in out:
            if f.metric != "error_rate" and f.change is not None:
                f.verdict, f.note = "not judged", f"would be {f.verdict}; {busy}"
    return out


def quality_findings(d: dict[str, Any], tolerances: dict[str, Tolerance]) -> list[Finding]:
    """Success and invalid-output rates of two golden runs over their paired cases, judged by McNemar."""
    rows = [("success_rate", d["success_before"], d["success_after"], d["paired"], d["p_value"], d["b"], d["c"])]
    iv = d.get("invalid_output")
    if iv:
        rows.append(
            (
                "invalid_output_rate",
                iv["before"],
                iv["after"],
                iv["paired"],
                iv["p_value"],
                len(iv["broke"]),
                len(iv["mended"]),
            )
        )
    out = []
    for metric, before, after, n, p, worse_pairs, better_pairs in rows:
        tol = tolerances.get(metric)
        if tol is None or tol.limit is None:
            continue
        f = Finding("quality", metric, tol, before, after, n=(n, n), p_value=p, method="exact McNemar, paired cases")
        if before is not None and after is not None:
            f.change = after - before
            significant = p < ALPHA
            judge(f, significant and worse_pairs > better_pairs, significant and better_pairs > worse_pairs)
        out.append(f)
    return out


@dataclass
class Gate:
    scope: str
    name: str
    passed: bool
    detail: str


def gates(
    base: Side,
    new: Side,
    slo: dict[str, float] | None,
    slo_percentile: float,
    max_error_rate: float | None,
) -> list[Gate]:
    """The run's absolute gates; the ones that always apply (a complete run, every stage the baseline measured
    measured again) are listed only when they fail."""
    out = []
    status = new.manifest.status
    if status != "complete":
        reason = new.manifest.incomplete_reason or ("no success" if status == "failed" else "see its manifest")
        out.append(Gate("run", "status", False, f"the run is {status}: {reason}; only a complete run passes"))
    measured = {s.stage: s for s in new.summary.stages}
    for b in base.summary.stages:
        label = b.label or f"stage {b.stage}"
        n = measured.get(b.stage)
        if b.requests.successful and (n is None or not n.requests.successful):
            out.append(
                Gate(
                    label,
                    "measured",
                    False,
                    f"no measured request succeeded in the run's stage (the baseline's {b.requests.successful} did)"
                    if n is not None
                    else "the run has no such stage (it stopped before it)",
                )
            )
    for stage in new.summary.stages:
        label = stage.label or f"stage {stage.stage}"
        if slo:
            report = slo_report(new.stage_table(stage.stage), slo, slo_percentile)
            for metric, m in report.by_metric.items():
                value = "no request judged" if m.at_percentile is None else f"{m.at_percentile:,.1f} ms"
                out.append(
                    Gate(
                        label,
                        f"slo {metric} p{slo_percentile:g}",
                        m.met_at_percentile,
                        f"p{slo_percentile:g} {value} against {m.threshold_ms:,.1f} ms "
                        f"({(m.fraction_meeting or 0):.1%} of {report.requests_judged} requests within it)",
                    )
                )
        if max_error_rate is not None:
            r = stage.requests
            rate = r.failed / r.finished if r.finished else None
            out.append(
                Gate(
                    label,
                    "max error rate",
                    rate is not None and rate <= max_error_rate,
                    f"{r.failed}/{r.finished} failed"
                    + (f" ({rate:.1%})" if rate is not None else "")
                    + f" against at most {max_error_rate:.1%}",
                )
            )
    return out


# -- the check ---------------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    baseline: Side
    new: Side
    findings: list[Finding] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    drift: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    workload_differences: list[str] = field(default_factory=list)
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    contention: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def not_judged(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict == "not judged"]

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.failed]

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions or self.failed_gates else 0

    @property
    def status(self) -> str:
        if self.exit_code:
            return "FAIL"
        return "PASS (timing not judged: the machine was busy)" if self.not_judged else "PASS"


def check(
    run: Path,
    baseline: Path,
    tolerances: dict[str, Tolerance] | None = None,
    slo: dict[str, float] | None = None,
    slo_percentile: float = 99.0,
    max_error_rate: float | None = None,
    allow_different_workload: bool = False,
    resamples: int = RESAMPLES,
    max_contention: float | None = MAX_CONTENTION,
) -> CheckResult:
    """Compare a run with its baseline (see the module docstring). Raises UsageError on bad input, including
    different workloads unless allowed."""
    tolerances = parse_tolerances(None) if tolerances is None else tolerances
    base, new = load_side(baseline, "--baseline"), load_side(run, "run")
    if base.manifest.status == "failed" or not base.summary.requests.successful:
        raise UsageError(f"--baseline {baseline}: no measured request succeeded in it; choose a baseline that ran")
    differences, warnings = identity(base, new)
    if differences and not allow_different_workload:
        raise UsageError(
            f"the runs measured different workloads ({'; '.join(differences)}); compare runs of one workload, or "
            "pass --allow-different-workload to compare them anyway"
        )
    if differences:
        warnings = [f"different workload (allowed): {d}" for d in differences] + warnings
    result = CheckResult(base, new, warnings=warnings, workload_differences=differences, tolerances=tolerances)
    stages = list(zip(base.summary.stages, new.summary.stages, strict=False))
    if len(base.summary.stages) != len(new.summary.stages):
        result.warnings.append(
            f"the baseline has {len(base.summary.stages)} stage(s), the run {len(new.summary.stages)}: "
            f"the first {len(stages)} are compared"
        )
    for b, n in stages:
        label = n.label or f"stage {n.stage}"
        if b.label != n.label:
            label = f"{b.label} / {n.label}"
        busy = None
        loads = {"baseline": contention(base, b.stage), "run": contention(new, n.stage)}
        result.contention[label] = loads
        text = ", ".join(
            f"{role}: machine {c['busy']:.0%} busy, {c['other_cores']:.2f} of {c['cpus']} cores used by other processes"
            for role, c in loads.items()
            if c
        )
        crowded = [
            r
            for r, c in loads.items()
            if c and max_contention is not None and c["busy"] >= SATURATED and c["share"] > max_contention
        ]
        if text and not crowded:
            result.notes.append(f"{label}: during the measured window, {text}")
        if crowded:
            busy = (
                f"the machine was saturated during the {' and the '.join(crowded)} with other processes on more "
                f"than {max_contention:.0%} of its CPUs, so timing is not judged"
            )
            result.warnings.append(f"{label}: {busy}; {text}")
        result.findings += stage_findings(label, base, new, b, n, tolerances, resamples, busy)
    if base.golden and new.golden and base.verdicts is not None and new.verdicts is not None:
        result.drift = drift(base.verdicts, new.verdicts)
        result.drift["consistency"] = [
            s.summary.quality.consistency.model_dump() if s.summary.quality and s.summary.quality.consistency else None
            for s in (base, new)
        ]
        result.findings += quality_findings(result.drift, tolerances)
    result.gates = gates(base, new, slo, slo_percentile, max_error_rate)
    return result


# -- output ------------------------------------------------------------------------------------------------
def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric in RATE_METRICS:
        return f"{value:.1%}"
    if metric == "output_tok_s":
        return f"{value:,.2f} tok/s"
    return f"{value:,.1f} ms"


def _change(f: Finding) -> str:
    if f.change is None:
        return "-"
    if f.metric in RATE_METRICS:
        text = f"{f.change * 100:+.1f}pp"
        if f.p_value is not None:
            return f"{text} (McNemar p = {f.p_value:.3g})"
        if f.ci95:
            return f"{text} ({f.ci95[0] * 100:+.1f} to {f.ci95[1] * 100:+.1f}pp)"
        return text
    text = f"{f.change:+.1%}"
    return f"{text} ({f.ci95[0]:+.1%} to {f.ci95[1]:+.1%})" if f.ci95 else text


HEADERS = ["stage", "metric", "baseline", "run", "change (95% CI)", "tolerance", "verdict"]


def _rows(result: CheckResult) -> list[list[str]]:
    return [
        [
            f.scope,
            f.metric,
            _value(f.metric, f.baseline),
            _value(f.metric, f.new),
            _change(f),
            f.tolerance.text(),
            f.verdict.upper() if f.failed else f.verdict + (f"; {f.note}" if f.note else ""),
        ]
        for f in result.findings
    ]


def _aligned(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]]


def _headline(result: CheckResult) -> str:
    regressions = [f"{f.scope} {f.metric}" for f in result.regressions]
    failed = [f"{g.scope} {g.name}" for g in result.failed_gates]
    if not regressions and not failed:
        if result.not_judged:
            return (
                f"PASS, but {len(result.not_judged)} timing metric(s) not judged: the machine was busy with other "
                "processes (see the warnings); rerun on a quiet machine to judge them"
            )
        return "PASS: no metric regressed past its tolerance with a clear difference, and every gate held"
    parts = []
    if regressions:
        parts.append(f"{len(regressions)} regression(s): {', '.join(regressions)}")
    if failed:
        parts.append(f"{len(failed)} gate(s) failed: {', '.join(failed)}")
    return "FAIL: " + "; ".join(parts)


def _drift_lines(d: dict[str, Any]) -> list[str]:
    lines = [
        f"golden cases paired: {d['paired']}; passed before {d['success_before']:.1%}, now {d['success_after']:.1%}; "
        f"passed before and fail now (b) {d['b']}, failed before and pass now (c) {d['c']}; exact McNemar "
        f"p = {d['p_value']:.4g}"
        if d["paired"]
        else "golden cases paired: none (no case id in both runs)"
    ]
    if d["regressed"]:
        lines.append(f"now failing: {', '.join(d['regressed'])}")
    if d["fixed"]:
        lines.append(f"now passing: {', '.join(d['fixed'])}")
    if d["only_before"] or d["only_after"]:
        lines.append(f"unpaired: {len(d['only_before'])} only in the baseline, {len(d['only_after'])} only in the run")
    iv = d.get("invalid_output")
    if iv:
        lines.append(
            f"invalid outputs among {iv['paired']} paired cases with a format check: {iv['before']:.1%} -> "
            f"{iv['after']:.1%} (broke {len(iv['broke'])}, mended {len(iv['mended'])}, McNemar p = {iv['p_value']:.4g})"
        )
    for role, c in zip(("baseline", "run"), d.get("consistency") or (), strict=False):
        if c:
            lines.append(
                f"consistency under rephrasing, {role}: {c['consistent']}/{c['cases']} cases ({c['share']:.0%})"
            )
    return lines


def text_report(result: CheckResult) -> str:
    b, n = result.baseline, result.new
    lines = [f"bench check: run {n.run_id} ({n.path}) against baseline {b.run_id} ({b.path})"]
    lines += [f"warning: {w}" for w in result.warnings]
    lines += [f"note: {x}" for x in result.notes]
    lines += ["", *_aligned(HEADERS, _rows(result))]
    if result.gates:
        lines += ["", *_aligned(["stage", "gate", "result", "detail"], _gate_rows(result))]
    if result.drift:
        lines += ["", *_drift_lines(result.drift)]
    lines += ["", _headline(result)]
    return "\n".join(lines)


def _gate_rows(result: CheckResult) -> list[list[str]]:
    return [[g.scope, g.name, "pass" if g.passed else "FAIL", g.detail] for g in result.gates]


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(map(_md, headers)) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(map(_md, r)) + " |" for r in rows),
        "",
    ]


def markdown_report(result: CheckResult) -> str:
    b, n = result.baseline, result.new
    lines = [
        f"## bench check: {result.status}",
        "",
        f"Run `{n.run_id}` against baseline `{b.run_id}`. {_headline(result)}.",
        "",
    ]
    if result.warnings:
        lines += ["**What differs between the runs:**", "", *(f"- {_md(w)}" for w in result.warnings), ""]
    if result.notes:
        lines += [*(f"*{_md(x)}*" for x in result.notes), ""]
    lines += _md_table(HEADERS, _rows(result))
    if result.gates:
        lines += ["**Gates**", "", *_md_table(["stage", "gate", "result", "detail"], _gate_rows(result))]
    if result.drift:
        lines += ["**Quality drift (golden set)**", "", *(f"- {_md(x)}" for x in _drift_lines(result.drift)), ""]
    lines += [f"*{METHOD}*", ""]
    return "\n".join(lines)


def junit_xml(result: CheckResult) -> str:
    """JUnit XML: one test case per metric and stage and per gate; a regression or failed gate is a failure,
    a metric that was not measured is skipped."""
    cases = len(result.findings) + len(result.gates)
    failures = len(result.regressions) + len(result.failed_gates)
    skipped = sum(f.verdict in ("not measured", "not judged") for f in result.findings)
    suites = ET.Element("testsuites", name="bench check", tests=str(cases), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"bench check {result.new.run_id} against {result.baseline.run_id}",
        tests=str(cases),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("run", str(result.new.path)),
        ("baseline", str(result.baseline.path)),
        *((f"tolerance.{k}", t.text()) for k, t in result.tolerances.items()),
        *((f"warning.{i}", w) for i, w in enumerate(result.warnings, 1)),
    ):
        ET.SubElement(props, "property", name=key, value=value)
    for f in result.findings:
        case = ET.SubElement(suite, "testcase", classname=f"bench.check.{f.scope}", name=f.metric, time="0")
        detail = (
            f"baseline {_value(f.metric, f.baseline)}, run {_value(f.metric, f.new)}, change {_change(f)}, "
            f"tolerance {f.tolerance.text()}: {f.verdict}" + (f" ({f.note})" if f.note else "")
        )
        if f.failed:
            ET.SubElement(
                case, "failure", message=f"{f.metric} regressed: {_change(f)}", type="regression"
            ).text = detail
        elif f.verdict in ("not measured", "not judged"):
            ET.SubElement(case, "skipped", message=f"{f.verdict}: {f.note}" if f.note else f.verdict)
        else:
            ET.SubElement(case, "system-out").text = detail
    for g in result.gates:
        case = ET.SubElement(suite, "testcase", classname=f"bench.check.{g.scope}", name=g.name, time="0")
        if not g.passed:
            ET.SubElement(case, "failure", message=g.detail, type="gate").text = g.detail
        else:
            ET.SubElement(case, "system-out").text = g.detail
    ET.SubElement(suite, "system-out").text = text_report(result)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
