"""Telemetry samples -> peaks, means and energy, over a stage's window or the whole run (no I/O).

Engine RSS: the peak; CPU (100 = one core): means. GPU memory: peak and steady (the median over the
window). GPU energy: the board's total-energy counter (last minus first sample) where it has one,
else the trapezoidal integral of power over the samples; J per output token divides it by the
output tokens of the window's successful requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.metrics.stats import percentile
from bench.records import GpuSample, TelemetrySample
from bench.summary import GaugeStats, GpuSummary, TelemetrySummary

NS_PER_S = 1_000_000_000


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def gpu_energy_j(rows: list[tuple[int, GpuSample]]) -> tuple[float | None, str | None]:
    """Energy of one GPU over the samples, and how it was found."""
    counter = [(t, g.energy_mj) for t, g in rows if g.energy_mj is not None]
    if len(counter) >= 2:
        return (counter[-1][1] - counter[0][1]) / 1000, "energy counter"
    power = [(t, g.power_w) for t, g in rows if g.power_w is not None]
    if len(power) >= 2:
        joules = sum((t2 - t1) / NS_PER_S * (p1 + p2) / 2 for (t1, p1), (t2, p2) in zip(power, power[1:], strict=False))
        return joules, "power integrated over samples"
    return None, None


def summarize_telemetry(
    samples: Sequence[TelemetrySample], output_tokens: int | None = None, window: tuple[float, float] | None = None
) -> TelemetrySummary:
    """Peaks, means and energy of the samples taken in `window` (t_ns bounds), or of all of them."""
    if window:
        samples = [s for s in samples if window[0] <= s.t_ns <= window[1]]
    if not samples:
        return TelemetrySummary()
    rss = [s.engine_rss_bytes for s in samples if s.engine_rss_bytes is not None]
    out = TelemetrySummary(
        samples=len(samples),
        engine_peak_rss_bytes=max(rss) if rss else None,
        engine_cpu_percent_mean=_mean([s.engine_cpu_percent for s in samples if s.engine_cpu_percent is not None]),
        client_cpu_percent_mean=_mean([s.client_cpu_percent for s in samples if s.client_cpu_percent is not None]),
        sample_cost_us_mean=_mean([s.sample_cost_us for s in samples if s.sample_cost_us is not None]),
    )
    gauges: dict[str, list[float]] = {}
    for sample in samples:
        for name, value in (sample.engine_gauges or {}).items():
            if value is not None:
                gauges.setdefault(name, []).append(value)
    if gauges:  # the engine's own series: KV-cache use, running and waiting requests, loaded model size
        out.engine_gauges = {name: GaugeStats(max=max(v), mean=math.fsum(v) / len(v)) for name, v in gauges.items()}
    by_gpu: dict[int, list[tuple[int, GpuSample]]] = {}
    for sample in samples:
        for gpu in sample.gpus or ():
            by_gpu.setdefault(gpu.index, []).append((sample.t_ns, gpu))
    gpus = []
    for index, rows in sorted(by_gpu.items()):
        used = [g.memory_used_bytes for _, g in rows if g.memory_used_bytes is not None]
        engine = [g.engine_memory_bytes for _, g in rows if g.engine_memory_bytes is not None]
        sources = sorted({g.engine_memory_source for _, g in rows if g.engine_memory_source})
        energy, method = gpu_energy_j(rows)
        gpus.append(
            GpuSummary(
                index=index,
                memory_peak_bytes=max(used) if used else None,
                memory_steady_bytes=percentile(used, 50) if used else None,
                engine_memory_peak_bytes=max(engine) if engine else None,
                engine_memory_source=", ".join(sources) or None,
                utilization_percent_mean=_mean(
                    [g.utilization_percent for _, g in rows if g.utilization_percent is not None]
                ),
                power_w_mean=_mean([g.power_w for _, g in rows if g.power_w is not None]),
                energy_j=energy,
                energy_method=method,
                throttle_reasons_seen=sorted({r for _, g in rows for r in g.throttle_reasons or ()}),
            )
        )
    if gpus:
        out.gpus = gpus
        energies = [g.energy_j for g in gpus if g.energy_j is not None]
        out.gpu_energy_j = math.fsum(energies) if energies else None
        out.gpu_energy_j_per_output_token = out.gpu_energy_j / output_tokens if energies and output_tokens else None
    return out
