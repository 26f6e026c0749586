"""An engine's own metrics: Prometheus text from /metrics, parsed with prometheus_client's parser.

Snapshots are flattened to {"name{label=value,...}": value}, labels sorted, so two snapshots
subtract key by key. Deltas of counters and histograms between the start and end of a stage give
the server's side of the story (its TTFT, queue, prefill and decode times, tokens, preemptions,
prefix-cache hits) to put beside the client's measurements.
"""

from __future__ import annotations

import math
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# gauges worth a time series during a run (cheap to pick out of the text before parsing)
SERIES_GAUGES = (
    "vllm:kv_cache_usage_perc",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "llamacpp:kv_cache_usage_ratio",
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
)
# histograms (seconds) the summary reports, by their short names
HISTOGRAMS = {
    "ttft": "vllm:time_to_first_token_seconds",
    "queue": "vllm:request_queue_time_seconds",
    "prefill": "vllm:request_prefill_time_seconds",
    "decode": "vllm:request_decode_time_seconds",
    "e2e": "vllm:e2e_request_latency_seconds",
    "itl": "vllm:inter_token_latency_seconds",
}
COUNTERS = {
    "prompt_tokens": ("vllm:prompt_tokens_total", "llamacpp:prompt_tokens_total"),
    "generation_tokens": ("vllm:generation_tokens_total", "llamacpp:tokens_predicted_total"),
    "cached_prompt_tokens": ("vllm:prefix_cache_hits_total", "llamacpp:prompt_tokens_cached_total"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries_total",),
    "preemptions": ("vllm:num_preemptions_total",),
    "requests_finished": ("vllm:request_success_total",),
}


def fetch(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode("utf-8", "replace")


def parse(text: str) -> dict[str, float]:
    flat: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            flat[f"{sample.name}{{{labels}}}"] = sample.value
    return flat


def _metric_name(line: str) -> str:
    if line.startswith("# "):  # "# HELP name ..." or "# TYPE name kind"
        parts = line.split(" ", 3)
        return parts[2] if len(parts) > 2 else ""
    return line.split("{", 1)[0].split(" ", 1)[0]


def gauges_only(text: str) -> dict[str, float]:
    """The series gauges alone: their lines are picked out by name, then parsed (small, fast)."""
    keep = [line for line in text.splitlines() if _metric_name(line) in SERIES_GAUGES]
    return {name.split("{", 1)[0]: value for name, value in parse("\n".join(keep) + "\n").items()}


def _total(snapshot: dict[str, float], name: str, suffix: str = "") -> float | None:
    """Sum of a metric over its label sets (engines, models), or None when absent."""
    prefix = f"{name}{suffix}{{"
    values = [v for k, v in snapshot.items() if k.startswith(prefix)]
    return math.fsum(values) if values else None


def _buckets(snapshot: dict[str, float], name: str) -> dict[float, float]:
    out: dict[float, float] = {}
    prefix = f"{name}_bucket{{"
    for key, value in snapshot.items():
        if key.startswith(prefix):
            labels = dict(part.split("=", 1) for part in key[len(prefix) : -1].split(",") if "=" in part)
            bound = float(labels["le"])
            out[bound] = out.get(bound, 0.0) + value
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> tuple[float, float, float] | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the q-th value.

    Returns (estimate, bucket lower bound, bucket upper bound): the estimate is only as fine as the
    engine's buckets (vLLM's queue-time buckets start at 0.3 s), so the bounds travel with it.
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound, previous_bound, bound
            if count == previous_count:
                return bound, previous_bound, bound
            estimate = previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
            return estimate, previous_bound, bound
        previous_bound, previous_count = bound, count
    return bounds[-1], bounds[-1], bounds[-1]


def _quantile_ms(q: float, buckets: dict[float, float]) -> dict[str, Any] | None:
    found = histogram_quantile(q, buckets)
    if found is None:
        return None
    estimate, low, high = found
    return {"estimate": estimate * 1000, "bucket_ms": [low * 1000, high * 1000]}


def deltas(start: dict[str, float], end: dict[str, float]) -> dict[str, Any]:
    """The server's figures for what happened between two snapshots."""
    out: dict[str, Any] = {}
    for short, names in COUNTERS.items():
        for name in names:
            a, b = _total(start, name), _total(end, name)
            if b is not None:
                out[short] = b - (a or 0.0)
                break
    queries = out.get("prefix_cache_queries")
    if queries:
        out["prefix_cache_hit_rate"] = out.get("cached_prompt_tokens", 0.0) / queries
    for short, name in HISTOGRAMS.items():
        count = (_total(end, name, "_count") or 0.0) - (_total(start, name, "_count") or 0.0)
        if count <= 0:
            continue
        total = (_total(end, name, "_sum") or 0.0) - (_total(start, name, "_sum") or 0.0)
        before, after = _buckets(start, name), _buckets(end, name)
        diff = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
        out[f"{short}_ms"] = {
            "n": int(count),
            "mean": total / count * 1000,  # exact: the histogram's sum over its count
            "p50": _quantile_ms(0.50, diff),
            "p99": _quantile_ms(0.99, diff),
        }
    return out
