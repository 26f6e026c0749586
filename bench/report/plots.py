"""The report's figures (a replayed trace adds its timeline), drawn with matplotlib's Agg backend into PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

DPI = 110
COLORS = plt.get_cmap("tab10").colors


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def latency_throughput(runs: list[dict[str, Any]]) -> bytes:
    """TTFT and TPOT (p50 solid, p99 dashed) against output throughput, one line per run, a point per stage."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for color, run in zip(COLORS, runs, strict=False):
        stages = [s for s in run["stages"] if s["output_tokens_per_s"]]
        x = [s["output_tokens_per_s"] for s in stages]
        for ax, metric in zip(axes, ("ttft_ms", "tpot_ms"), strict=True):
            for pct, style in (("p50", "-o"), ("p99", "--s")):
                y = [(s[metric] or {}).get(pct) for s in stages]
                ax.plot(x, y, style, color=color, label=f"{run['label']} {pct}", markersize=4)
            for s, xv in zip(stages, x, strict=True):
                ax.annotate(
                    s["short"],
                    (xv, (s[metric] or {}).get("p50") or 0),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 4),
                )
    for ax, title in zip(axes, ("Time to first token", "Time per output token"), strict=True):
        ax.set(title=title, xlabel="output throughput (tokens/s)", ylabel="ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def cost_per_successful_task(bars: list[dict[str, Any]], volume: float) -> bytes:
    """$ per successful task at the stated volume with its 95% interval: self-hosted bars and API bars."""
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(bars) + 1.4))
    labels = [b["label"] for b in bars]
    values = [b["value"] for b in bars]
    colors = ["tab:blue" if b["kind"] == "self-hosted" else "tab:orange" for b in bars]
    ax.barh(labels, values, color=colors)
    for i, b in enumerate(bars):
        ci = b.get("ci95")
        if ci and ci[0] is not None:
            high = ci[1] if ci[1] is not None else b["value"] * 10
            ax.plot([ci[0], high], [i, i], color="black", linewidth=1.5)
        ax.annotate(f" ${b['value']:.3g}", (b["value"], i), va="center", fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set(
        xlabel=f"$ per successful task at {volume:,.0f} tasks/month (log scale; blue: self-hosted, orange: API; "
        "black: 95% interval)",
        title="Cost per successful task",
    )
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def monthly_cost(volumes: list[float], self_hosted: list[dict[str, Any]], apis: list[dict[str, Any]]) -> bytes:
    """Monthly cost against tasks per month: self-hosted steps, API lines, break-even points."""
    fig, ax = plt.subplots(figsize=(10, 5))
    for color, sh in zip(COLORS, self_hosted, strict=False):
        ax.step(volumes, sh["monthly"], where="post", color=color, linewidth=2, label=f"self-hosted: {sh['label']}")
    for i, api in enumerate(apis):
        color = COLORS[(len(self_hosted) + i) % len(COLORS)]
        ax.plot(volumes, api["monthly"], "--", color=color, label=f"API: {api['label']}")
        for point in api["break_even"]:
            ax.plot([point["volume"]], [point["monthly"]], "o", color=color, markersize=7, markeredgecolor="black")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(
        xlabel="tasks per month",
        ylabel="$ per month",
        title="Monthly cost against volume (circles: break-even with the first self-hosted option)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def telemetry(runs: list[dict[str, Any]]) -> bytes:
    """Per run: engine and client CPU, engine memory, and GPU utilization, memory and power when sampled."""
    panels = [
        ("engine_cpu_percent", "engine CPU (%)"),
        ("client_cpu_percent", "client CPU (%)"),
        ("engine_rss_mib", "engine RSS (MiB)"),
    ]
    if any(run["telemetry"].get("gpu_util_percent") for run in runs):
        panels += [
            ("gpu_util_percent", "GPU utilization (%)"),
            ("gpu_memory_mib", "GPU memory (MiB)"),
            ("gpu_power_w", "GPU power (W)"),
        ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.9 * len(panels)), sharex=True)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for color, run in zip(COLORS, runs, strict=False):
            series = run["telemetry"]
            ax.plot(series["t_s"], series.get(key) or [None] * len(series["t_s"]), color=color, label=run["label"])
            for start in run["stage_starts_s"]:
                ax.axvline(start, color=color, alpha=0.25, linestyle=":")
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[0].set_title("Telemetry over time (dotted lines: stage starts)")
    axes[-1].set_xlabel("seconds since the engine was ready")
    return _png(fig)


def trace_timeline(runs: list[dict[str, Any]]) -> bytes:
    """A replayed trace: arrivals per second (intended send times, 1 s bins) above each request's TTFT and E2E
    from its intended send time, on one time axis; a failed request is an x on the axis."""
    fig, (arrivals, latency) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=[1, 2])
    for color, run in zip(COLORS, runs, strict=False):
        line = run["timeline"]
        t = line["t_s"]
        if not t:
            continue
        bins = range(int(max(t)) + 2)
        arrivals.hist(t, bins=bins, color=color, alpha=0.5, label=run["label"])
        ok = [i for i, good in enumerate(line["ok"]) if good]
        when = [t[i] for i in ok]
        latency.plot(when, [line["ttft_ms"][i] for i in ok], "o", color=color, ms=3, label=f"{run['label']} TTFT")
        latency.plot(
            when, [line["e2e_ms"][i] for i in ok], "^", color=color, ms=3, alpha=0.5, label=f"{run['label']} E2E"
        )
        failed = [t[i] for i, good in enumerate(line["ok"]) if not good]
        if failed:
            latency.plot(failed, [0] * len(failed), "x", color="red", label=f"{run['label']} failed")
    arrivals.set(title="Trace replay: arrivals and latency over time", ylabel="requests / s")
    latency.set(xlabel="seconds since the trace's first intended send", ylabel="ms from intended send")
    for ax in (arrivals, latency):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)
