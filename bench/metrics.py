"""Request records -> statistics. Every derived number in a run comes from here.

Definitions (DESIGN.md; they match vLLM's serving benchmark). Per request, with t_send the moment
the request was written, t_1..t_k the arrival of each streamed chunk that carried output, t_end the
end of the stream and n the output tokens:

    TTFT   = t_1 - t_send
    E2E    = t_end - t_send
    TPOT   = (t_k - t_1) / (n - 1)          only for n >= 2
    ITL    = every t_i - t_(i-1)            pooled over requests
    output tokens/s of one request = n / (t_end - t_send)

Over the measured phase (warmup excluded), with the window running from the first t_send to the
last t_end of any measured request, failed ones included:

    output throughput  = sum(n of successful requests) / window
    request throughput = successful requests / window

Latency statistics use successful requests only. Percentiles interpolate linearly between order
statistics (numpy's default); std is the population standard deviation (ddof=0, numpy's default).

Open loop: each request also has an intended send time t_intended from the schedule.
client_queue = t_send - t_intended (time the client held it: a concurrency cap, or a late loop),
and TTFT and E2E are also reported from t_intended, so queueing in the client is never hidden.

SLOs (ttft, tpot, itl, e2e thresholds in ms): a measured request meets an SLO when it succeeded and
its value is within the threshold (open loop: TTFT and E2E from t_intended). goodput = requests
meeting every SLO / window. A stage is SLO-compliant when, for every SLO, the chosen percentile
over its measured requests is within the threshold, counting a failed request as infinitely slow.
The max SLO-compliant throughput is the highest request throughput among compliant stages.

Server-side figures ("server" in a stage): deltas of the engine's own /metrics counters and
histograms between a scrape just before the stage and one just after it, so they cover every
request of the stage, warmup and cooldown included. Histogram percentiles interpolate inside the
engine's buckets (Prometheus' histogram_quantile) and carry the bucket bounds; means are exact.

Confidence intervals (95 %, percentile bootstrap, 1000 resamples, fixed seed so summaries are
reproducible): p50 and p99 of TTFT and TPOT over requests; output throughput from the mean of
per-slice throughputs over 10 equal slices of the window, each token counted where it arrived.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
SLO_METRICS = ("ttft", "tpot", "itl", "e2e")
BOOTSTRAP_RESAMPLES = 1000
THROUGHPUT_SLICES = 10


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, as numpy.percentile(method='linear')."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


def percentile_key(q: float) -> str:
    return f"p{q:g}"


def describe(values: Iterable[float]) -> dict[str, float | int | None]:
    """n, mean, std, min, max and the standard percentiles; None where there are no values."""
    data = sorted(values)
    n = len(data)
    out: dict[str, float | int | None] = {"n": n}
    if n == 0:
        out.update({"mean": None, "std": None, "min": None, "max": None})
        out.update({percentile_key(q): None for q in PERCENTILES})
        return out
    mean = math.fsum(data) / n
    out["mean"] = mean
    out["std"] = math.sqrt(math.fsum((x - mean) ** 2 for x in data) / n)
    out["min"], out["max"] = data[0], data[-1]
    out.update({percentile_key(q): percentile(data, q) for q in PERCENTILES})
    return out


def request_latencies(record: dict[str, Any]) -> dict[str, Any]:
    """TTFT, E2E, TPOT (ms), ITL gaps (ms) and output tokens/s of one successful request."""
    t_send, t_end = record["t_send_ns"], record["t_end_ns"]
    times = record.get("output_times_ns") or []
    n = record.get("output_tokens")
    e2e_ns = t_end - t_send
    out: dict[str, Any] = {"e2e_ms": e2e_ns / NS_PER_MS, "ttft_ms": None, "tpot_ms": None, "itl_ms": []}
    if times:
        out["ttft_ms"] = (times[0] - t_send) / NS_PER_MS
        out["itl_ms"] = [(b - a) / NS_PER_MS for a, b in zip(times, times[1:], strict=False)]
        if n is not None and n >= 2:
            out["tpot_ms"] = (times[-1] - times[0]) / (n - 1) / NS_PER_MS
    out["output_tokens_per_s"] = (n / (e2e_ns / NS_PER_S)) if n and e2e_ns > 0 else None
    t_intended = record.get("t_intended_ns")
    if t_intended is not None:
        out["client_queue_ms"] = (t_send - t_intended) / NS_PER_MS
        out["e2e_from_intended_ms"] = (t_end - t_intended) / NS_PER_MS
        out["ttft_from_intended_ms"] = (times[0] - t_intended) / NS_PER_MS if times else None
    return out


def summarize_requests(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a run's measured phase, computed from request records alone."""
    measured = [r for r in records if r.get("phase") == "measured"]
    ok = [r for r in measured if r.get("status") == "ok"]
    failed = [r for r in measured if r.get("status") == "error"]
    cancelled = [r for r in measured if r.get("status") == "cancelled"]

    per_request = [request_latencies(r) for r in ok]
    sent = [r for r in measured if r.get("t_send_ns") is not None and r.get("t_end_ns") is not None]
    window_ns = (max(r["t_end_ns"] for r in sent) - min(r["t_send_ns"] for r in sent)) if sent else 0
    window_s = window_ns / NS_PER_S
    output_tokens = sum(r.get("output_tokens") or 0 for r in ok)
    prompt_tokens = sum(r.get("prompt_tokens") or 0 for r in ok)
    reporting_cache = [r for r in ok if r.get("cached_prompt_tokens") is not None and r.get("prompt_tokens")]
    cached_tokens = sum(r["cached_prompt_tokens"] for r in reporting_cache)

    def rate(amount: float) -> float | None:
        return amount / window_s if window_s > 0 else None

    error_kinds = Counter((r.get("error") or "unknown error")[:120] for r in failed)
    length_mismatch = [
        r["request_id"] for r in ok if r.get("output_tokens") is not None and r["output_tokens"] != r.get("max_tokens")
    ]
    return {
        "requests": {
            "measured": len(measured),
            "successful": len(ok),
            "failed": len(failed),
            "cancelled": len(cancelled),
            "warmup": sum(1 for r in records if r.get("phase") == "warmup"),
        },
        "window_s": window_s,
        "request_throughput_per_s": rate(len(ok)),
        "output_throughput_tokens_per_s": rate(output_tokens),
        "total_token_throughput_tokens_per_s": rate(output_tokens + prompt_tokens),
        "total_output_tokens": output_tokens,
        "total_prompt_tokens": prompt_tokens,
        # the share of prompt tokens the server served from its prefix cache, where it reports them
        "prefix_cache_hit_rate": (
            cached_tokens / sum(r["prompt_tokens"] for r in reporting_cache) if reporting_cache else None
        ),
        "ttft_ms": describe(p["ttft_ms"] for p in per_request if p["ttft_ms"] is not None),
        "tpot_ms": describe(p["tpot_ms"] for p in per_request if p["tpot_ms"] is not None),
        "itl_ms": describe(gap for p in per_request for gap in p["itl_ms"]),
        "e2e_ms": describe(p["e2e_ms"] for p in per_request),
        "output_tokens_per_s_per_request": describe(
            p["output_tokens_per_s"] for p in per_request if p["output_tokens_per_s"] is not None
        ),
        "prompt_tokens": describe(r["prompt_tokens"] for r in ok if r.get("prompt_tokens") is not None),
        "output_tokens": describe(r["output_tokens"] for r in ok if r.get("output_tokens") is not None),
        "tokens_source": dict(Counter(r.get("tokens_source") or "none" for r in ok)),
        "output_length_differs_from_max_tokens": len(length_mismatch),
        "errors": [{"error": kind, "count": count} for kind, count in error_kinds.most_common(10)],
        **_open_loop_stats(per_request),
    }


def _open_loop_stats(per_request: list[dict[str, Any]]) -> dict[str, Any]:
    """Queueing and latency from the intended send, over the open-loop requests among these."""
    per_request = [p for p in per_request if "client_queue_ms" in p]
    if not per_request:
        return {}
    return {
        "client_queue_ms": describe(p["client_queue_ms"] for p in per_request),
        "ttft_from_intended_ms": describe(
            p["ttft_from_intended_ms"] for p in per_request if p["ttft_from_intended_ms"] is not None
        ),
        "e2e_from_intended_ms": describe(p["e2e_from_intended_ms"] for p in per_request),
    }


def _slo_value(metric: str, latencies: dict[str, Any]) -> float | None:
    """The value an SLO judges; open-loop TTFT and E2E count from the intended send time. ITL: the worst gap."""
    if metric == "itl":
        return max(latencies["itl_ms"]) if latencies["itl_ms"] else None
    if metric in ("ttft", "e2e") and f"{metric}_from_intended_ms" in latencies:
        return latencies[f"{metric}_from_intended_ms"]
    return latencies[f"{metric}_ms"]


def slo_report(records: list[dict[str, Any]], slo_ms: dict[str, float], percentile_q: float) -> dict[str, Any]:
    """Fractions meeting each SLO, goodput, and whether the chosen percentile meets every SLO."""
    measured = [r for r in records if r.get("phase") == "measured" and r.get("status") in ("ok", "error")]
    sent = [r for r in records if r.get("phase") == "measured" and r.get("t_send_ns") is not None]
    window_s = (max(r["t_end_ns"] for r in sent) - min(r["t_send_ns"] for r in sent)) / NS_PER_S if sent else 0
    values: dict[str, list[float]] = {m: [] for m in slo_ms}
    meets_all = 0
    for record in measured:
        ok = record["status"] == "ok"
        latencies = request_latencies(record) if ok else None
        meets_every = ok
        for metric, limit in slo_ms.items():
            value = _slo_value(metric, latencies) if ok else None
            # no TPOT/ITL for a one-token answer: nothing to miss; a failure misses everything
            values[metric].append(math.inf if not ok else (value if value is not None else 0.0))
            meets_every = meets_every and (value is None or value <= limit)
        meets_all += meets_every
    n = len(measured)
    key = percentile_key(percentile_q)
    per_metric = {}
    for metric, limit in slo_ms.items():
        data = sorted(values[metric])
        at_percentile = percentile(data, percentile_q) if data else None
        per_metric[metric] = {
            "threshold_ms": limit,
            "fraction_meeting": (sum(v <= limit for v in data) / n) if n else None,
            key: at_percentile,
            "met_at_percentile": at_percentile is not None and at_percentile <= limit,
        }
    return {
        "percentile": percentile_q,
        "requests_judged": n,
        "fraction_meeting_all": meets_all / n if n else None,
        "goodput_requests_per_s": meets_all / window_s if window_s > 0 else None,
        "compliant": bool(n) and all(m["met_at_percentile"] for m in per_metric.values()),
        "by_metric": per_metric,
    }


def bootstrap_ci(values: list[float], statistic, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile-bootstrap interval of statistic(sorted sample); None for fewer than 2 values."""
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    estimates = sorted(statistic(sorted(rng.choices(values, k=len(values)))) for _ in range(BOOTSTRAP_RESAMPLES))
    tail = (1 - level) / 2 * 100
    return [percentile(estimates, tail), percentile(estimates, 100 - tail)]


def throughput_slices(records: list[dict[str, Any]]) -> list[float]:
    """Output tokens/s in each of THROUGHPUT_SLICES equal slices of the measured window.

    Each streamed chunk's tokens count in the slice where the chunk arrived (a request's n tokens
    spread evenly over its chunks), so the slices show delivery over time, not completions.
    """
    measured = [r for r in records if r.get("phase") == "measured" and r.get("t_send_ns") is not None]
    ok = [r for r in measured if r.get("status") == "ok" and r.get("output_times_ns")]
    if not ok:
        return []
    start = min(r["t_send_ns"] for r in measured)
    width = (max(r["t_end_ns"] for r in measured) - start) / THROUGHPUT_SLICES
    if width <= 0:
        return []
    tokens = [0.0] * THROUGHPUT_SLICES
    for r in ok:
        per_chunk = (r.get("output_tokens") or 0) / len(r["output_times_ns"])
        for t in r["output_times_ns"]:
            tokens[min(THROUGHPUT_SLICES - 1, max(0, int((t - start) / width)))] += per_chunk
    return [t / (width / NS_PER_S) for t in tokens]


def confidence_intervals(records: list[dict[str, Any]]) -> dict[str, list[float] | None]:
    ok = [request_latencies(r) for r in records if r.get("phase") == "measured" and r.get("status") == "ok"]
    ttft = [p["ttft_ms"] for p in ok if p["ttft_ms"] is not None]
    tpot = [p["tpot_ms"] for p in ok if p["tpot_ms"] is not None]

    def p50(data):
        return percentile(data, 50)

    def p99(data):
        return percentile(data, 99)

    def mean(data):
        return math.fsum(data) / len(data)

    return {
        "ttft_p50_ms": bootstrap_ci(ttft, p50),
        "ttft_p99_ms": bootstrap_ci(ttft, p99),
        "tpot_p50_ms": bootstrap_ci(tpot, p50),
        "tpot_p99_ms": bootstrap_ci(tpot, p99),
        "output_throughput_tokens_per_s": bootstrap_ci(throughput_slices(records), mean),
    }


def _gpu_energy_j(rows: list[tuple[int, dict[str, Any]]]) -> tuple[float | None, str | None]:
    """Energy of one GPU over the samples: its total-energy counter where it has one, else the
    trapezoidal integral of power over time."""
    counter = [(t, g["energy_mj"]) for t, g in rows if g.get("energy_mj") is not None]
    if len(counter) >= 2:
        return (counter[-1][1] - counter[0][1]) / 1000, "energy counter"
    power = [(t, g["power_w"]) for t, g in rows if g.get("power_w") is not None]
    if len(power) >= 2:
        joules = sum((t2 - t1) / NS_PER_S * (p1 + p2) / 2 for (t1, p1), (t2, p2) in zip(power, power[1:], strict=False))
        return joules, "power integrated over samples"
    return None, None


def summarize_telemetry(
    samples: list[dict[str, Any]], output_tokens: int | None = None, window: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Peaks, means and energy of the samples taken in `window` (t_ns bounds), or of all of them."""
    if window:
        samples = [s for s in samples if window[0] <= s["t_ns"] <= window[1]]
    if not samples:
        return {"samples": 0}
    rss = [s["engine_rss_bytes"] for s in samples if s.get("engine_rss_bytes") is not None]
    engine_cpu = [s["engine_cpu_percent"] for s in samples if s.get("engine_cpu_percent") is not None]
    client_cpu = [s["client_cpu_percent"] for s in samples if s.get("client_cpu_percent") is not None]
    cost = [s["sample_cost_us"] for s in samples if s.get("sample_cost_us") is not None]
    out: dict[str, Any] = {
        "samples": len(samples),
        "engine_peak_rss_bytes": max(rss) if rss else None,
        "engine_cpu_percent_mean": math.fsum(engine_cpu) / len(engine_cpu) if engine_cpu else None,
        "client_cpu_percent_mean": math.fsum(client_cpu) / len(client_cpu) if client_cpu else None,
        "sample_cost_us_mean": math.fsum(cost) / len(cost) if cost else None,
    }
    gauges: dict[str, list[float]] = {}
    for sample in samples:
        for name, value in (sample.get("engine_gauges") or {}).items():
            if value is not None:
                gauges.setdefault(name, []).append(value)
    if gauges:  # the engine's own series: KV-cache use, running and waiting requests, loaded model size
        out["engine_gauges"] = {name: {"max": max(v), "mean": math.fsum(v) / len(v)} for name, v in gauges.items()}
    by_gpu: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for sample in samples:
        for gpu in sample.get("gpus") or ():
            by_gpu.setdefault(gpu["index"], []).append((sample["t_ns"], gpu))
    gpus = []
    for index, rows in sorted(by_gpu.items()):
        used = [g["memory_used_bytes"] for _, g in rows if g.get("memory_used_bytes") is not None]
        util = [g["utilization_percent"] for _, g in rows if g.get("utilization_percent") is not None]
        power = [g["power_w"] for _, g in rows if g.get("power_w") is not None]
        engine = [g["engine_memory_bytes"] for _, g in rows if g.get("engine_memory_bytes") is not None]
        energy, method = _gpu_energy_j(rows)
        gpus.append({
            "index": index,
            "memory_peak_bytes": max(used) if used else None,
            "memory_steady_bytes": percentile(sorted(used), 50) if used else None,  # median over the window
            "engine_memory_peak_bytes": max(engine) if engine else None,
            "utilization_percent_mean": math.fsum(util) / len(util) if util else None,
            "power_w_mean": math.fsum(power) / len(power) if power else None,
            "energy_j": energy,
            "energy_method": method,
            "throttle_reasons_seen": sorted({r for _, g in rows for r in g.get("throttle_reasons") or ()}),
        })  # fmt: skip
    if gpus:
        out["gpus"] = gpus
        energies = [g["energy_j"] for g in gpus if g["energy_j"] is not None]
        out["gpu_energy_j"] = math.fsum(energies) if energies else None
        out["gpu_energy_j_per_output_token"] = (
            out["gpu_energy_j"] / output_tokens if energies and output_tokens else None
        )
    return out


def _window(records: list[dict[str, Any]]) -> tuple[int, int] | None:
    """First send to last end of the measured requests: where a stage's telemetry is taken."""
    sent = [r for r in records if r.get("phase") == "measured" and r.get("t_send_ns") is not None]
    return (min(r["t_send_ns"] for r in sent), max(r["t_end_ns"] for r in sent)) if sent else None


def max_slo_compliant(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The compliant stage with the highest request throughput: the number the cost module prices."""
    compliant = [s for s in stages if (s.get("slo") or {}).get("compliant") and s["request_throughput_per_s"]]
    if not compliant:
        return None
    best = max(compliant, key=lambda s: s["request_throughput_per_s"])
    return {
        "stage": best["stage"],
        "label": best.get("label"),
        "request_throughput_per_s": best["request_throughput_per_s"],
        "output_throughput_tokens_per_s": best["output_throughput_tokens_per_s"],
        "goodput_requests_per_s": best["slo"]["goodput_requests_per_s"],
    }


def summarize_run(
    records: list[dict[str, Any]],
    telemetry: list[dict[str, Any]],
    spec: dict[str, Any] | None = None,
    engine_metrics: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """summary.json: a pure function of requests.jsonl, telemetry.jsonl, engine-metrics.jsonl and the
    manifest's stages and SLOs."""
    spec = spec or {}
    slo = spec.get("slo") or {}
    thresholds, percentile_q = slo.get("thresholds_ms") or {}, slo.get("percentile", 99.0)
    stage_defs = {s["index"]: s for s in spec.get("stages") or []}
    efficiency_inputs = spec.get("efficiency_inputs") or {}
    by_stage: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        by_stage.setdefault(record.get("stage", 0), []).append(record)
    stages = []
    for index in sorted(set(by_stage) | set(stage_defs)):
        stage_records = by_stage.get(index, [])
        definition = stage_defs.get(index, {})
        stage = {"stage": index, "name": definition.get("name"), "label": definition.get("label"),
                 **summarize_requests(stage_records), "ci95": confidence_intervals(stage_records)}  # fmt: skip
        stage["telemetry"] = summarize_telemetry(telemetry, stage["total_output_tokens"], _window(stage_records))
        if efficiency_inputs.get("model_shape") and efficiency_inputs.get("hardware_limits"):
            from bench.roofline import efficiency  # roofline builds on this module's per-request latencies

            stage["efficiency"] = efficiency(
                stage_records, efficiency_inputs["model_shape"], efficiency_inputs["hardware_limits"]
            )
        if thresholds:
            stage["slo"] = slo_report(stage_records, thresholds, percentile_q)
        snapshots = {row["when"]: row["samples"] for row in engine_metrics or () if row.get("stage") == index}
        if "start" in snapshots and "end" in snapshots:
            from bench.engines.prometheus import deltas  # the engine's own figures for this stage

            stage["server"] = deltas(snapshots["start"], snapshots["end"])
        stages.append(stage)
    overall = summarize_requests(records)
    summary = {**overall, "stages": stages, "telemetry": summarize_telemetry(telemetry, overall["total_output_tokens"])}
    if thresholds:
        summary["slo"] = {"thresholds_ms": thresholds, "percentile": percentile_q,
                          "max_slo_compliant": max_slo_compliant(stages)}  # fmt: skip
    return summary
