"""Text for people: the summary tables, the golden-set verdict, money and volumes (no I/O)."""

from __future__ import annotations

import math
from typing import Any

from bench.metrics.stats import PERCENTILES, percentile_key
from bench.summary import Quality, RequestSummary, RunSummary, SloReport, StageSummary, Stats, TelemetrySummary

STAT_COLUMNS = ("mean", "std", *(percentile_key(q) for q in PERCENTILES), "n")
CLIENT_BUSY_PERCENT = 80  # above this the load generator, not the engine, may set the pace
LATENCY_ROWS = (
    ("ttft_ms", "TTFT (ms)"),
    ("tpot_ms", "TPOT (ms)"),
    ("itl_ms", "ITL (ms)"),
    ("e2e_ms", "E2E latency (ms)"),
)
OPEN_LOOP_ROWS = (
    ("client_queue_ms", "client queue (ms)"),
    ("ttft_from_intended_ms", "TTFT from intended"),
    ("e2e_from_intended_ms", "E2E from intended"),
)
INTERVAL_NAMES = {
    "ttft_p50_ms": "TTFT p50",
    "ttft_p99_ms": "TTFT p99",
    "tpot_p50_ms": "TPOT p50",
    "tpot_p99_ms": "TPOT p99",
    "output_throughput_tokens_per_s": "output tok/s",
}


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


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def rate(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:,.2f} {unit}"


def quality_lines(quality: Quality, eval_path: str) -> str:
    """The golden-set verdict: success rate with its Wilson interval, by tag, and the failed cases."""
    if quality.success_rate is None or quality.ci95 is None:
        return f"Quality      no case was run ({eval_path})"
    low, high = quality.ci95
    lines = [
        f"Quality      {quality.passed}/{quality.cases} cases passed: success rate {quality.success_rate:.0%} "
        f"(95% Wilson interval {low:.0%}-{high:.0%})"
    ]
    if quality.not_run:
        lines.append(f"             not run: {len(quality.not_run)} case(s) (the run stopped early)")
    tags = ", ".join(f"{tag} {t.passed}/{t.cases}" for tag, t in quality.by_tag.items())
    if tags:
        lines.append(f"             by tag: {tags}")
    failed = [f.id for f in quality.failures]
    if failed:
        shown = ", ".join(failed[:8]) + (f" and {len(failed) - 8} more" if len(failed) > 8 else "")
        lines.append(f"             failed: {shown}")
    lines.append(f"             each case's output and check verdicts: {eval_path}")
    return "\n".join(lines)


def _stats_row(label: str, stats: Stats | None) -> str:
    return f"{label:22}" + "".join(_fmt(stats.at(col) if stats else None) for col in STAT_COLUMNS)


def summary_table(
    summary: StageSummary | RequestSummary,
    heading: str,
    run_dir: str | None = None,
    telemetry: TelemetrySummary | None = None,
    busy_poll: bool = False,
    timing_bound: str | None = None,
) -> str:
    """The detailed table of one stage (or of a whole single-stage run)."""
    lines = [heading, "", f"{'':22}" + "".join(f"{col:>9}" for col in STAT_COLUMNS)]
    rows = LATENCY_ROWS + (OPEN_LOOP_ROWS if summary.client_queue_ms is not None else ())
    lines += [_stats_row(label, getattr(summary, key)) for key, label in rows]
    if timing_bound:
        lines.append(f"{'':22}client timing error: {timing_bound}")
    req = summary.requests
    lines += [
        "",
        f"Requests     {req.successful} ok, {req.failed} failed, {req.cancelled} cancelled "
        f"(measured; {req.warmup} warmup excluded) over {summary.window_s:.2f} s",
        f"Throughput   {rate(summary.request_throughput_per_s, 'req/s')}, "
        f"{rate(summary.output_throughput_tokens_per_s, 'output tok/s')}, "
        f"{rate(summary.total_token_throughput_tokens_per_s, 'total tok/s')}",
        f"Per request  {rate(summary.output_tokens_per_s_per_request.mean, 'output tok/s')} (mean)",
    ]
    prompt, output = summary.prompt_tokens, summary.output_tokens
    if prompt.n or output.n:
        sources = ", ".join(f"{k} {v}" for k, v in summary.tokens_source.items())
        hits = (
            f"; prefix cache hits {summary.prefix_cache_hit_rate:.0%} of prompt tokens"
            if summary.prefix_cache_hit_rate
            else ""
        )
        lines.append(
            f"Tokens       input mean {_fmt(prompt.mean, 0)}, output mean {_fmt(output.mean, 0)}; "
            f"counted from: {sources}{hits}"
        )
    if summary.output_length_differs_from_max_tokens:
        lines.append(
            f"Note         {summary.output_length_differs_from_max_tokens} request(s) produced a "
            "different number of tokens than max_tokens"
        )
    if summary.cut_streams:
        lines.append(
            f"Note         {summary.cut_streams} stream(s) were cut short; what arrived is kept in their records"
        )
    for error in summary.errors[:5]:
        lines.append(f"Error        {error.count} x {error.error}")
    if isinstance(summary, StageSummary):
        lines += _stage_lines(summary)
    tel = telemetry or getattr(summary, "telemetry", None) or TelemetrySummary()
    lines += _telemetry_lines(tel, busy_poll)
    if run_dir:
        lines.append(f"Run dir      {run_dir}")
    return "\n".join(lines)


def _stage_lines(stage: StageSummary) -> list[str]:
    lines = []
    shown = stage.ci95.shown()
    if shown:
        text = "; ".join(f"{INTERVAL_NAMES.get(k, k)} {lo:,.1f}-{hi:,.1f}" for k, (lo, hi) in shown.items())
        lines.append(f"95% CI       {text} (bootstrap)")
    if stage.slo:
        lines += slo_lines(stage.slo)
    server = stage.server
    if server:
        parts = [
            f"{name} {h.mean:,.1f}"
            for name in ("ttft", "queue", "prefill", "decode")
            if (h := getattr(server, f"{name}_ms")) is not None
        ]
        client_ttft = stage.ttft_ms.mean
        counts = f"{server.generation_tokens or 0:,.0f} generation tokens"
        prompt, computed = server.prompt_tokens, server.processed_prompt_tokens
        if prompt is not None and computed is not None:
            cached = "none from the prefix cache" if prompt == computed else f"{computed:,.0f} computed, rest cached"
            counts += f" / {prompt:,.0f} prompt tokens ({cached})"
        elif prompt is not None or computed is not None:
            counts += f" / {prompt or computed:,.0f} prompt tokens" + (" computed" if prompt is None else "")
        lines.append(
            f"Server       the engine's own figures, mean ms: {', '.join(parts) or 'no latency histograms'}"
            + (f" (client TTFT {client_ttft:,.1f})" if client_ttft is not None and server.ttft_ms else "")
            + f"; {counts} (the whole stage, warmup and cooldown included)"
        )
    eff = stage.efficiency
    if eff and eff.decode_bandwidth_utilization is not None:
        prefill = (
            f"; prefill {eff.prefill_tokens_per_s:,.0f} tok/s = {eff.prefill_flops_utilization:.0%} of "
            f"{eff.prefill_bound_tokens_per_s:,.0f}"
            if eff.prefill_flops_utilization
            else ""
        )
        lines.append(
            f"Efficiency   decode {eff.decode_tokens_per_s_per_stream:.1f} tok/s/stream = "
            f"{eff.decode_bandwidth_utilization:.0%} of the {eff.decode_bound_tokens_per_s_per_stream:.1f} "
            f"bandwidth bound ({eff.hardware}, {eff.decode_streams_mean:.1f} streams){prefill}"
        )
    return lines


def _telemetry_lines(tel: TelemetrySummary, busy_poll: bool) -> list[str]:
    lines = []
    for gpu in tel.gpus or ():
        peak, energy = gpu.memory_peak_bytes, gpu.energy_j
        engine = (
            f", engine {gpu.engine_memory_peak_bytes / 2**30:,.1f} GiB ({gpu.engine_memory_source})"
            if gpu.engine_memory_peak_bytes is not None
            else ""
        )
        lines.append(
            f"GPU {gpu.index}        peak memory {'-' if peak is None else f'{peak / 2**30:,.1f} GiB'}{engine}, "
            f"utilization {_fmt(gpu.utilization_percent_mean, 0).strip()} %, power "
            f"{_fmt(gpu.power_w_mean, 0).strip()} W, energy {'-' if energy is None else f'{energy:,.0f} J'}"
        )
    if tel.gpu_energy_j_per_output_token is not None:
        lines.append(f"Energy       {tel.gpu_energy_j_per_output_token:.3f} J per output token (GPUs)")
    if not busy_poll and (tel.client_cpu_percent_mean or 0) >= CLIENT_BUSY_PERCENT:
        lines.append(
            f"Warning      the client used {tel.client_cpu_percent_mean:.0f} % of a core: it may be the "
            "bottleneck, not the engine (see `bench calibrate` for its limits)"
        )
    if tel.samples:
        lines.append(
            f"Processes    engine peak RSS {mib(tel.engine_peak_rss_bytes)}, "
            f"engine CPU {_fmt(tel.engine_cpu_percent_mean, 0)} %, client CPU {_fmt(tel.client_cpu_percent_mean, 0)} % "
            f"(mean of {tel.samples} samples; 100 % = one core)"
        )
    return lines


def slo_lines(slo: SloReport) -> list[str]:
    key = percentile_key(slo.percentile)
    parts = [
        f"{metric} {m.fraction_meeting:.0%} within {m.threshold_ms:g} ms ({key} {_fmt(m.at_percentile, 0).strip()})"
        for metric, m in slo.by_metric.items()
        if m.fraction_meeting is not None
    ]
    goodput = slo.goodput_requests_per_s
    return [
        f"SLO          {'; '.join(parts)}",
        f"Goodput      {'-' if goodput is None else f'{goodput:.2f}'} req/s meeting every SLO "
        f"({(slo.fraction_meeting_all or 0):.0%}); {key} compliant: {'yes' if slo.compliant else 'no'}",
    ]


def _cell(stats: Stats | None, key: str, width: int = 9) -> str:
    value = stats.at(key) if stats else None
    return f"{value:{width}.1f}" if value is not None else f"{'-':>{width}}"


def stage_table(summary: RunSummary, heading: str, run_dir: str, timing_bound: str | None = None) -> str:
    """One row per stage: the latency-throughput curve of the run."""
    head = (
        f"{'stage':<34}{'ok':>5}{'fail':>5}{'req/s':>8}{'tok/s':>9}{'TTFT p50':>9}{'TTFT p99':>9}"
        f"{'TPOT p50':>9}{'TPOT p99':>9}{'E2E p99':>9}{'queue p99':>10}{'goodput':>9}{'MBU':>6}"
    )
    lines = [heading, "", head]
    for stage in summary.stages:
        req, slo = stage.requests, stage.slo
        rps, tps = stage.request_throughput_per_s, stage.output_throughput_tokens_per_s
        goodput = slo.goodput_requests_per_s if slo else None
        mark = ("*" if slo.compliant else " ") if slo else ""
        mbu = stage.efficiency.decode_bandwidth_utilization if stage.efficiency else None
        name = f"{stage.stage} {stage.label or ''}"[:33]
        lines.append(
            f"{name:<34}{req.successful:>5}{req.failed:>5}"
            f"{'-' if rps is None else f'{rps:.2f}':>8}{'-' if tps is None else f'{tps:.1f}':>9}"
            f"{_cell(stage.ttft_ms, 'p50')}{_cell(stage.ttft_ms, 'p99')}{_cell(stage.tpot_ms, 'p50')}"
            f"{_cell(stage.tpot_ms, 'p99')}{_cell(stage.e2e_ms, 'p99')}{_cell(stage.client_queue_ms, 'p99', 10)}"
            f"{'-' if goodput is None else f'{goodput:.2f}':>8}{mark:1}{'-' if mbu is None else f'{mbu:.0%}':>6}"
        )
    if summary.slo:
        best = summary.slo.max_slo_compliant
        limits = ", ".join(f"{k}<={v:g}ms" for k, v in summary.slo.thresholds_ms.items())
        lines += ["", f"SLO          {limits} at p{summary.slo.percentile:g}; * = compliant stage"]
        lines.append(
            "Max SLO-compliant throughput: none of the stages met the SLOs"
            if best is None
            else f"Max SLO-compliant throughput: {best.request_throughput_per_s:.2f} req/s, "
            f"{best.output_throughput_tokens_per_s or 0:.1f} output tok/s (stage {best.stage}, {best.label})"
        )
    if timing_bound:
        lines.append(f"Timing       client timing error: {timing_bound}")
    tel = summary.telemetry
    if tel.samples:
        lines.append(
            f"Processes    engine peak RSS {mib(tel.engine_peak_rss_bytes)}, client CPU "
            f"{_fmt(tel.client_cpu_percent_mean, 0)} % (100 % = one core)"
        )
    lines.append(
        f"Run dir      {run_dir}  (times in ms; queue = client queue in open loop; MBU = decode "
        "bandwidth utilization against the roofline)"
    )
    return "\n".join(lines)


def format_cost(report) -> str:
    tp, sh, task = report["throughput"], report["self_hosted"], report["task"]

    def volume(v):
        return (
            "never (the API is cheaper per task than a fully used instance)" if v is None else f"{v:,.0f} tasks/month"
        )

    lines = [
        f"Priced throughput  {tp['requests_per_s']:.3f} req/s, {tp['output_tokens_per_s']:,.1f} output tok/s "
        f"({tp['basis']}: stage {tp['stage']}, {tp['label']}); success rate {tp['success_rate']:.0%}",
        f"Task               {task['input_tokens']:,.0f} input + {task['output_tokens']:,.0f} output tokens; "
        f"{task['tasks_per_month']:,.0f} tasks/month, peak/average {task['peak_to_average']:g}",
        f"Self-hosted        {sh['offer']} at {money(sh['hourly'])}/h ({sh['price_source']}, as of {sh['as_of']}), "
        f"utilization {sh['utilization']:.0%}",
        f"                   {money(sh['per_1m_output_tokens'])} per 1M output tokens"
        + (
            f" (95% CI {money(sh['per_1m_output_tokens_ci95'][0])}-{money(sh['per_1m_output_tokens_ci95'][1])})"
            if sh.get("per_1m_output_tokens_ci95")
            else ""
        )
        + f", {money(sh['per_1m_total_tokens'])} per 1M total tokens",
        f"                   {money(sh['per_task'])} per task, {money(sh['per_successful_task'])} per successful task;"
        f" {sh['instances']} instance(s), {money(sh['monthly'])}/month",
        "                   per task by utilization: "
        + ", ".join(f"{k} {money(v)}" for k, v in sh["per_task_by_utilization"].items()),
        "",
    ]
    if not report["apis"]:
        lines.append("No API offers in the catalog to compare with (add api_offers to models.yaml).")
    for api in report["apis"]:
        lines.append(
            f"{api['offer']:<30} {money(api['per_task'])} per task, {money(api['monthly'])}/month "
            f"({api['price_source']}, as of {api['as_of']})"
        )
        by_price = " / ".join(volume(api["break_even_by_price"][k]).split(" (")[0] for k in ("-50%", "+50%"))
        lines.append(
            f"{'':<30} break-even {volume(api['break_even_tasks_per_month'])}; at API prices -50%/+50%: {by_price}"
        )
    return "\n".join(lines)
