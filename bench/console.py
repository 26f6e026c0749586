"""What a person sees: live progress on stderr, and the summary table."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import Any, TextIO

from bench.metrics import PERCENTILES, percentile_key

STAT_COLUMNS = ("mean", "std", *(percentile_key(q) for q in PERCENTILES), "n")
CLIENT_BUSY_PERCENT = 80  # above this the load generator, not the engine, may set the pace
LATENCY_ROWS = (
    ("ttft_ms", "TTFT (ms)"),
    ("tpot_ms", "TPOT (ms)"),
    ("itl_ms", "ITL (ms)"),
    ("e2e_ms", "E2E latency (ms)"),
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """Counts records as they land; redraws one line on a terminal, prints a line now and then otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.label = ""
        self.planned = 0
        self.counts: dict[str, int] = {}
        self.output_tokens = 0
        self.started = time.monotonic()

    def start_stage(self, stage, total_stages: int) -> None:
        if self.label:
            self.draw(final=True)
        self.label = f"stage {stage.index + 1}/{total_stages} {stage.schedule.label()}"
        self.planned = stage.requests
        self.counts = {"warmup": 0, "measured": 0, "cooldown": 0, "ok": 0, "error": 0, "cancelled": 0}
        self.output_tokens = 0
        self.started = time.monotonic()

    def add(self, record: dict[str, Any]) -> None:
        self.counts[record.get("phase", "measured")] = self.counts.get(record.get("phase", "measured"), 0) + 1
        self.counts[record.get("status", "error")] = self.counts.get(record.get("status", "error"), 0) + 1
        if record.get("status") == "ok":
            self.output_tokens += record.get("output_tokens") or 0

    def line(self) -> str:
        c = self.counts
        elapsed = time.monotonic() - self.started
        rates = f" | {c.get('ok', 0) / elapsed:5.2f} req/s | {self.output_tokens / elapsed:7.1f} out tok/s"
        return (
            f"{self.label} | measured {c.get('measured', 0)}/{self.planned} (+{c.get('warmup', 0)} warmup, "
            f"+{c.get('cooldown', 0)} cooldown) | all phases: ok {c.get('ok', 0)} failed {c.get('error', 0)} | "
            f"{elapsed:6.1f} s{rates if elapsed > 0 else ''}"
        )

    async def ticker(self) -> None:
        interval = 0.25 if self.tty else 5.0
        try:
            while True:
                await asyncio.sleep(interval)
                if self.label:
                    self.draw()
        finally:
            if self.label:
                self.draw(final=True)

    def draw(self, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


def _fmt(value: Any, width: int = 9) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, int):
        return f"{value:>{width}d}"
    return f"{value:>{width}.2f}" if abs(value) < 1e6 else f"{value:>{width}.3g}"


def money(value: float | None) -> str:
    """Dollars: cents above $1, else three significant digits written out ($0.0000113, not 1.13e-05)."""
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    decimals = 2 - math.floor(math.log10(abs(value)))
    return f"${value:.{decimals}f}"


def tasks_per_month(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f}"


def quality_lines(quality: dict[str, Any], eval_path: str) -> str:
    """The golden-set verdict: success rate with its Wilson interval, by tag, and the failed cases."""
    rate, ci = quality["success_rate"], quality["ci95"]
    if rate is None:
        return f"Quality      no case was run ({eval_path})"
    lines = [f"Quality      {quality['passed']}/{quality['cases']} cases passed: success rate {rate:.0%} "
             f"(95% Wilson interval {ci[0]:.0%}-{ci[1]:.0%})"]  # fmt: skip
    if quality["not_run"]:
        lines.append(f"             not run: {len(quality['not_run'])} case(s) (the run stopped early)")
    tags = ", ".join(f"{tag} {t['passed']}/{t['cases']}" for tag, t in quality["by_tag"].items())
    if tags:
        lines.append(f"             by tag: {tags}")
    failed = [f["id"] for f in quality["failures"]]
    if failed:
        shown = ", ".join(failed[:8]) + (f" and {len(failed) - 8} more" if len(failed) > 8 else "")
        lines.append(f"             failed: {shown}")
    lines.append(f"             each case's output and check verdicts: {eval_path}")
    return "\n".join(lines)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def _rate(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:,.2f} {unit}"


def summary_table(
    summary: dict[str, Any],
    heading: str,
    run_dir: str | None = None,
    telemetry: dict[str, Any] | None = None,
    busy_poll: bool = False,
) -> str:
    """The detailed table of one stage (or of a whole single-stage run)."""
    header = f"{'':22}" + "".join(f"{col:>9}" for col in STAT_COLUMNS)
    lines = [heading, "", header]
    rows = list(LATENCY_ROWS)
    if "client_queue_ms" in summary:
        rows += [("client_queue_ms", "client queue (ms)"), ("ttft_from_intended_ms", "TTFT from intended"),
                 ("e2e_from_intended_ms", "E2E from intended")]  # fmt: skip
    for key, label in rows:
        stats = summary.get(key) or {}
        lines.append(f"{label:22}" + "".join(_fmt(stats.get(col)) for col in STAT_COLUMNS))
    req = summary["requests"]
    lines += [
        "",
        f"Requests     {req['successful']} ok, {req['failed']} failed, {req['cancelled']} cancelled "
        f"(measured; {req['warmup']} warmup excluded) over {summary['window_s']:.2f} s",
        f"Throughput   {_rate(summary['request_throughput_per_s'], 'req/s')}, "
        f"{_rate(summary['output_throughput_tokens_per_s'], 'output tok/s')}, "
        f"{_rate(summary['total_token_throughput_tokens_per_s'], 'total tok/s')}",
        f"Per request  {_rate((summary['output_tokens_per_s_per_request'] or {}).get('mean'), 'output tok/s')} (mean)",
    ]
    prompt, output = summary.get("prompt_tokens") or {}, summary.get("output_tokens") or {}
    if prompt.get("n") or output.get("n"):
        sources = ", ".join(f"{k} {v}" for k, v in summary.get("tokens_source", {}).items())
        lines.append(
            f"Tokens       input mean {_fmt(prompt.get('mean'), 0)}, output mean {_fmt(output.get('mean'), 0)}; "
            f"counted from: {sources}"
            + (f"; prefix cache hits {summary['prefix_cache_hit_rate']:.0%} of prompt tokens"
               if summary.get("prefix_cache_hit_rate") else "")
        )  # fmt: skip
    if summary.get("output_length_differs_from_max_tokens"):
        lines.append(
            f"Note         {summary['output_length_differs_from_max_tokens']} request(s) produced a "
            "different number of tokens than max_tokens"
        )
    for error in summary.get("errors", [])[:5]:
        lines.append(f"Error        {error['count']} x {error['error']}")
    ci = summary.get("ci95") or {}
    if any(ci.values()):
        names = {"ttft_p50_ms": "TTFT p50", "ttft_p99_ms": "TTFT p99", "tpot_p50_ms": "TPOT p50",
                 "tpot_p99_ms": "TPOT p99", "output_throughput_tokens_per_s": "output tok/s"}  # fmt: skip
        shown = "; ".join(f"{names.get(k, k)} {lo:,.1f}-{hi:,.1f}" for k, v in ci.items() if v for lo, hi in [v])
        lines.append(f"95% CI       {shown} (bootstrap)")
    if summary.get("slo"):
        lines += _slo_lines(summary["slo"])
    server = summary.get("server") or {}
    if server:
        parts = [f"{name} {server[f'{name}_ms']['mean']:,.1f}" for name in ("ttft", "queue", "prefill", "decode")
                 if server.get(f"{name}_ms")]  # fmt: skip
        client_ttft = (summary.get("ttft_ms") or {}).get("mean")
        generation, prompt = server.get("generation_tokens", 0), server.get("prompt_tokens", 0)
        counts = f"{generation:,.0f} generation / {prompt:,.0f} prompt tokens"
        lines.append(
            f"Server       the engine's own figures, mean ms: {', '.join(parts) or 'no latency histograms'}"
            + (f" (client TTFT {client_ttft:,.1f})" if client_ttft is not None and server.get("ttft_ms") else "")
            + f"; {counts} (the whole stage, warmup and cooldown included)"
        )
    eff = summary.get("efficiency") or {}
    if eff.get("decode_bandwidth_utilization") is not None:
        prefill = (
            f"; prefill {eff['prefill_tokens_per_s']:,.0f} tok/s = {eff['prefill_flops_utilization']:.0%} of "
            f"{eff['prefill_bound_tokens_per_s']:,.0f}"
            if eff.get("prefill_flops_utilization")
            else ""
        )
        lines.append(
            f"Efficiency   decode {eff['decode_tokens_per_s_per_stream']:.1f} tok/s/stream = "
            f"{eff['decode_bandwidth_utilization']:.0%} of the {eff['decode_bound_tokens_per_s_per_stream']:.1f} "
            f"bandwidth bound ({eff['hardware']}, {eff['decode_streams_mean']:.1f} streams){prefill}"
        )  # fmt: skip
    tel = telemetry or summary.get("telemetry") or {}
    for gpu in tel.get("gpus") or ():
        peak = gpu.get("memory_peak_bytes")
        energy = gpu.get("energy_j")
        lines.append(
            f"GPU {gpu['index']}        peak memory {'-' if peak is None else f'{peak / 2**30:,.1f} GiB'}, "
            f"utilization {_fmt(gpu.get('utilization_percent_mean'), 0).strip()} %, power "
            f"{_fmt(gpu.get('power_w_mean'), 0).strip()} W, energy {'-' if energy is None else f'{energy:,.0f} J'}"
        )  # fmt: skip
    if tel.get("gpu_energy_j_per_output_token") is not None:
        lines.append(f"Energy       {tel['gpu_energy_j_per_output_token']:.3f} J per output token (GPUs)")
    if not busy_poll and (tel.get("client_cpu_percent_mean") or 0) >= CLIENT_BUSY_PERCENT:
        lines.append(f"Warning      the client used {tel['client_cpu_percent_mean']:.0f} % of a core: it may be the "
                     "bottleneck, not the engine (see `bench calibrate` for its limits)")  # fmt: skip
    if tel.get("samples"):
        lines.append(
            f"Processes    engine peak RSS {_mib(tel.get('engine_peak_rss_bytes'))}, "
            f"engine CPU {_fmt(tel.get('engine_cpu_percent_mean'), 0)} %, "
            f"client CPU {_fmt(tel.get('client_cpu_percent_mean'), 0)} % "
            f"(mean of {tel['samples']} samples; 100 % = one core)"
        )
    if run_dir:
        lines.append(f"Run dir      {run_dir}")
    return "\n".join(lines)


def _slo_lines(slo: dict[str, Any]) -> list[str]:
    key = f"p{slo['percentile']:g}"
    parts = [
        f"{metric} {m['fraction_meeting']:.0%} within {m['threshold_ms']:g} ms ({key} {_fmt(m[key], 0).strip()})"
        for metric, m in slo["by_metric"].items()
        if m["fraction_meeting"] is not None
    ]
    goodput = slo["goodput_requests_per_s"]
    return [
        f"SLO          {'; '.join(parts)}",
        f"Goodput      {'-' if goodput is None else f'{goodput:.2f}'} req/s meeting every SLO "
        f"({(slo['fraction_meeting_all'] or 0):.0%}); {key} compliant: {'yes' if slo['compliant'] else 'no'}",
    ]


def _cell(stats: dict[str, Any] | None, key: str) -> str:
    value = (stats or {}).get(key)
    return f"{value:9.1f}" if value is not None else f"{'-':>9}"


def stage_table(summary: dict[str, Any], heading: str, run_dir: str) -> str:
    """One row per stage: the latency-throughput curve of the run."""
    head = (f"{'stage':<34}{'ok':>5}{'fail':>5}{'req/s':>8}{'tok/s':>9}{'TTFT p50':>9}{'TTFT p99':>9}"
            f"{'TPOT p50':>9}{'TPOT p99':>9}{'E2E p99':>9}{'queue p99':>10}{'goodput':>9}{'MBU':>6}")  # fmt: skip
    lines = [heading, "", head]
    for stage in summary["stages"]:
        req = stage["requests"]
        rps, tps = stage["request_throughput_per_s"], stage["output_throughput_tokens_per_s"]
        slo = stage.get("slo") or {}
        goodput = slo.get("goodput_requests_per_s")
        mark = ("*" if slo.get("compliant") else " ") if slo else ""
        mbu = (stage.get("efficiency") or {}).get("decode_bandwidth_utilization")
        name = f"{stage['stage']} {stage.get('label') or ''}"[:33]
        lines.append(
            f"{name:<34}{req['successful']:>5}{req['failed']:>5}"
            f"{'-' if rps is None else f'{rps:.2f}':>8}{'-' if tps is None else f'{tps:.1f}':>9}"
            f"{_cell(stage['ttft_ms'], 'p50')}{_cell(stage['ttft_ms'], 'p99')}{_cell(stage['tpot_ms'], 'p50')}"
            f"{_cell(stage['tpot_ms'], 'p99')}{_cell(stage['e2e_ms'], 'p99')}"
            f"{_cell(stage.get('client_queue_ms'), 'p99'):>10}{'-' if goodput is None else f'{goodput:.2f}':>8}{mark:1}"
            f"{'-' if mbu is None else f'{mbu:.0%}':>6}"
        )
    slo = summary.get("slo")
    if slo:
        best = slo["max_slo_compliant"]
        limits = ", ".join(f"{k}<={v:g}ms" for k, v in slo["thresholds_ms"].items())
        lines.append("")
        lines.append(f"SLO          {limits} at p{slo['percentile']:g}; * = compliant stage")
        lines.append(
            "Max SLO-compliant throughput: none of the stages met the SLOs" if best is None else
            f"Max SLO-compliant throughput: {best['request_throughput_per_s']:.2f} req/s, "
            f"{best['output_throughput_tokens_per_s']:.1f} output tok/s (stage {best['stage']}, {best['label']})"
        )  # fmt: skip
    tel = summary.get("telemetry") or {}
    if tel.get("samples"):
        lines.append(f"Processes    engine peak RSS {_mib(tel.get('engine_peak_rss_bytes'))}, client CPU "
                     f"{_fmt(tel.get('client_cpu_percent_mean'), 0)} % (100 % = one core)")  # fmt: skip
    lines.append(
        f"Run dir      {run_dir}  (times in ms; queue = client queue in open loop; MBU = decode "
        "bandwidth utilization against the roofline)"
    )
    return "\n".join(lines)
