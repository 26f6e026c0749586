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
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


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
    }


def summarize_telemetry(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak and mean of the process samples taken during the run."""
    if not samples:
        return {"samples": 0}
    rss = [s["engine_rss_bytes"] for s in samples if s.get("engine_rss_bytes") is not None]
    engine_cpu = [s["engine_cpu_percent"] for s in samples if s.get("engine_cpu_percent") is not None]
    client_cpu = [s["client_cpu_percent"] for s in samples if s.get("client_cpu_percent") is not None]
    return {
        "samples": len(samples),
        "engine_peak_rss_bytes": max(rss) if rss else None,
        "engine_cpu_percent_mean": math.fsum(engine_cpu) / len(engine_cpu) if engine_cpu else None,
        "client_cpu_percent_mean": math.fsum(client_cpu) / len(client_cpu) if client_cpu else None,
    }


def summarize_run(records: list[dict[str, Any]], telemetry: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json: a pure function of requests.jsonl and telemetry.jsonl."""
    return {**summarize_requests(records), "telemetry": summarize_telemetry(telemetry)}
