"""How far an engine is from what the hardware allows (a roofline for LLM serving).

Decode is bound by memory bandwidth: each step reads every weight once, plus the KV cache of every
stream in the batch, and yields one token per stream:

    decode tokens/s per stream <= bandwidth / (weight bytes + streams * KV bytes per token * context)

Prefill is bound by compute, about 2 FLOPs per parameter per token:

    prefill tokens/s <= peak FLOP/s / (2 * parameters)

Measured / bound is the model bandwidth utilization (MBU) for decode and the FLOP utilization
(MFU) for prefill; bench.metrics.efficiency measures a stage against these bounds. A low figure
flags a misconfigured engine (too few threads, no GPU offload, a slow kernel path). Sliding-window
layers are counted as full attention (the KV term is an upper bound), and KV elements are taken as
f16 (llama.cpp's and vLLM's default).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

KV_ELEMENT_BYTES = 2.0


@dataclass(frozen=True)
class HardwareLimits:
    name: str
    memory_bandwidth_bytes_per_s: float
    peak_flops: float | None  # dense, at the precision the engine computes in; None if unknown
    source: str  # a datasheet with its date, or how it was measured

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def decode_bound(shape: dict[str, Any], limits: dict[str, Any], context_tokens: float, streams: float = 1.0) -> float:
    """Upper bound on decode tokens/s per stream (shape and limits as recorded in the manifest)."""
    kv = shape["layers"] * shape["kv_heads"] * (shape["key_dim"] + shape["value_dim"]) * KV_ELEMENT_BYTES
    step_bytes = shape["weight_bytes"] + streams * kv * context_tokens
    return limits["memory_bandwidth_bytes_per_s"] / step_bytes


def prefill_bound(shape: dict[str, Any], limits: dict[str, Any]) -> float | None:
    """Upper bound on prefill tokens/s, or None without a peak FLOP/s figure."""
    if not limits.get("peak_flops"):
        return None
    return limits["peak_flops"] / (2 * shape["parameters"])


def measure_copy_bandwidth(threads: int = 1, megabytes: int = 128, repeats: int = 5) -> float:
    """Bytes/s moved by `threads` concurrent large copies (read + write counted), best of `repeats`
    after one warm-up copy (the best, as STREAM reports, since the figure serves as an upper bound).

    numpy's copy releases the GIL, so threads copy in parallel like an engine's worker threads.
    """
    import numpy as np

    size = megabytes * 2**20
    pairs = [(np.ones(size, dtype=np.uint8), np.empty(size, dtype=np.uint8)) for _ in range(threads)]
    timings: list[float] = []
    for _ in range(repeats + 1):  # the first pass faults the pages in and is not counted
        workers = [threading.Thread(target=np.copyto, args=(dst, src)) for src, dst in pairs]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        timings.append(time.perf_counter() - start)
    best = min(timings[1:])
    return 2 * size * threads / best


def cpu_limits(threads: int, cpu_model: str) -> HardwareLimits:
    bandwidth = measure_copy_bandwidth(threads)
    return HardwareLimits(
        name=f"CPU: {cpu_model}, {threads} thread(s)",
        memory_bandwidth_bytes_per_s=bandwidth,
        peak_flops=None,
        source=f"measured: {threads}-thread 128 MiB copy, read+write bytes, best of 5, at run start",
    )
