"""The engine's own figures for a stage: deltas of its /metrics counters and histograms (no I/O).

A snapshot is {"name{label=value,...}": value} (bench.engines.prometheus flattens /metrics to it);
two snapshots, taken just before and just after a stage, subtract key by key, so the figures cover
every request of the stage, warmup and cooldown included. Histogram percentiles interpolate inside
the engine's buckets (Prometheus' histogram_quantile) and carry the bucket bounds; means are exact.

Prompt tokens are two quantities: vLLM's `prompt_tokens_total` counts whole prompts, while llama.cpp's
counts only the tokens it computed (a prefix-cache hit is not counted). They are kept apart:
`processed_prompt_tokens` (llama.cpp) and `prompt_tokens` (vLLM; for llama.cpp, processed + cached
where the build exports `prompt_tokens_cached_total`).
"""

from __future__ import annotations

import math
from typing import Any

from bench.summary import Quantile, ServerFigures, ServerHistogram

HISTOGRAMS = {  # seconds, by their short names
    "ttft": "vllm:time_to_first_token_seconds",
    "queue": "vllm:request_queue_time_seconds",
    "prefill": "vllm:request_prefill_time_seconds",
    "decode": "vllm:request_decode_time_seconds",
    "e2e": "vllm:e2e_request_latency_seconds",
    "itl": "vllm:inter_token_latency_seconds",
}
COUNTERS = {
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "processed_prompt_tokens": ("llamacpp:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total", "llamacpp:tokens_predicted_total"),
    "cached_prompt_tokens": ("vllm:prefix_cache_hits_total", "llamacpp:prompt_tokens_cached_total"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries_total",),
    "preemptions": ("vllm:num_preemptions_total",),
    "requests_finished": ("vllm:request_success_total",),
}


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


def _quantile_ms(q: float, buckets: dict[float, float]) -> Quantile | None:
    found = histogram_quantile(q, buckets)
    if found is None:
        return None
    estimate, low, high = found
    return Quantile(estimate=estimate * 1000, bucket_ms=[low * 1000, high * 1000])


def deltas(start: dict[str, float], end: dict[str, float]) -> ServerFigures:
    """The server's figures for what happened between two snapshots."""
    out: dict[str, Any] = {}
    for short, names in COUNTERS.items():
        for name in names:
            a, b = _total(start, name), _total(end, name)
            if b is not None:
                out[short] = b - (a or 0.0)
                break
    if "processed_prompt_tokens" in out and "cached_prompt_tokens" in out and "prompt_tokens" not in out:
        out["prompt_tokens"] = out["processed_prompt_tokens"] + out["cached_prompt_tokens"]
    queries = out.get("prefix_cache_queries")
    if queries:
        out["prefix_cache_hit_rate"] = out.get("cached_prompt_tokens", 0.0) / queries
    elif out.get("prompt_tokens") and "processed_prompt_tokens" in out and "cached_prompt_tokens" in out:
        out["prefix_cache_hit_rate"] = out["cached_prompt_tokens"] / out["prompt_tokens"]
    for short, name in HISTOGRAMS.items():
        count = (_total(end, name, "_count") or 0.0) - (_total(start, name, "_count") or 0.0)
        if count <= 0:
            continue
        total = (_total(end, name, "_sum") or 0.0) - (_total(start, name, "_sum") or 0.0)
        before, after = _buckets(start, name), _buckets(end, name)
        diff = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
        out[f"{short}_ms"] = ServerHistogram(
            n=int(count), mean=total / count * 1000, p50=_quantile_ms(0.50, diff), p99=_quantile_ms(0.99, diff)
        )  # mean: exact, the histogram's sum over its count
    return ServerFigures(**out)
