"""Text for people: the summary tables, the golden-set verdict, money and volumes (no I/O)."""

from __future__ import annotations

import math
from typing import Any

from bench.metrics.stats import PERCENTILES, percentile_key
from bench.summary import (
    Quality,
    RequestSummary,
    RunSummary,
    SearchResult,
    SloReport,
    StageSummary,
    Stats,
    TelemetrySummary,
)

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


def quality_notes(quality: Quality) -> list[str]:
    """Lines on consistency and invalid outputs, for a console summary (empty when the run had neither)."""
    lines = []
    c = quality.consistency
    if c is not None:
        lines.append(
            f"consistent under rephrasing: {c.consistent}/{c.cases} cases with variants ({c.share:.0%}, 95% Wilson "
            f"interval {c.ci95[0]:.0%}-{c.ci95[1]:.0%}); {c.consistent_passing} pass and {c.consistent_failing} fail "
            f"on every prompt"
            + (f"; inconsistent: {', '.join(r.id for r in c.inconsistent)}" if c.inconsistent else "")
        )
    v = quality.output_validity
    if v is not None:
        kinds = ", ".join(f"{k} {n}" for k, n in v.by_kind.items())
        lines.append(
            f"invalid output: {v.invalid}/{v.cases} answered cases with a format check ({v.rate:.0%}, 95% Wilson "
            f"interval {v.ci95[0]:.0%}-{v.ci95[1]:.0%}){f' ({kinds})' if kinds else ''}; wrong answers in a valid "
            f"format: {v.wrong_answer}"
        )
    return lines


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
    lines += [f"             {note}" for note in quality_notes(quality)]
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
    lines += failure_lines(summary)
    if isinstance(summary, StageSummary):
        lines += _stage_lines(summary)
    tel = telemetry or getattr(summary, "telemetry", None) or TelemetrySummary()
    lines += _telemetry_lines(tel, busy_poll)
    if run_dir:
        lines.append(f"Run dir      {run_dir}")
    return "\n".join(lines)


def failure_lines(summary: RequestSummary) -> list[str]:
    """The streams cut short and the commonest errors (five at most) among the measured requests."""
    lines = []
    if summary.cut_streams:
        lines.append(
            f"Note         {summary.cut_streams} stream(s) were cut short; what arrived is kept in their records"
        )
    for error in summary.errors[:5]:
        lines.append(f"Error        {error.count} x {error.error}")
    return lines


def _stage_lines(stage: StageSummary) -> list[str]:
    lines = []
    shown = stage.ci95.shown()
    if shown:
        text = "; ".join(f"{INTERVAL_NAMES.get(k, k)} {lo:,.1f}-{hi:,.1f}" for k, (lo, hi) in shown.items())
        lines.append(f"95% CI       {text} (percentiles: bootstrap; throughput: t)")
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


def stage_table(
    summary: RunSummary, heading: str, run_dir: str, timing_bound: str | None = None, busy_poll: bool = False
) -> str:
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
    lines += failure_lines(summary)
    if timing_bound:
        lines.append(f"Timing       client timing error: {timing_bound}")
    tel = summary.telemetry
    busiest = max(
        (s for s in summary.stages if s.telemetry.client_cpu_percent_mean is not None),
        key=lambda s: s.telemetry.client_cpu_percent_mean,
        default=None,
    )
    if tel.samples:
        client = (
            f"client CPU up to {busiest.telemetry.client_cpu_percent_mean:.0f} % (stage {busiest.stage}'s mean)"
            if busiest
            else "client CPU -"
        )
        lines.append(
            f"Processes    engine peak RSS {mib(tel.engine_peak_rss_bytes)} (the run's), {client}; 100 % = one core"
        )
    if busiest and not busy_poll and busiest.telemetry.client_cpu_percent_mean >= CLIENT_BUSY_PERCENT:
        lines.append(
            f"Warning      the client used {busiest.telemetry.client_cpu_percent_mean:.0f} % of a core in stage "
            f"{busiest.stage}: it may be the bottleneck there, not the engine (see `bench calibrate` for its limits)"
        )
    lines.append(
        f"Run dir      {run_dir}  (times in ms; queue = client queue in open loop; MBU = decode "
        "bandwidth utilization against the roofline)"
    )
    return "\n".join(lines)


def _memory_cell(tel: TelemetrySummary | None) -> str:
    """The engine's peak memory in a stage: GPU (its own, else the device's) where there is one, else its RSS."""
    if tel is None:
        return "-"
    for gpu in tel.gpus or ():
        peak = gpu.engine_memory_peak_bytes if gpu.engine_memory_peak_bytes is not None else gpu.memory_peak_bytes
        if peak is not None:
            return f"{peak / 2**30:.2f} GiB GPU"
    return f"{mib(tel.engine_peak_rss_bytes)} RSS" if tel.engine_peak_rss_bytes is not None else "-"


def pooling_table(summary: RunSummary, heading: str, run_dir: str, timing_bound: str | None = None) -> str:
    """An embeddings or rerank run: one row per stage (streams or rate, and batch size), its end-to-end latency
    (nothing is streamed), inputs/s and tokens/s, and the engine's peak memory (VRAM on a GPU)."""
    head = (
        f"{'stage':<30}{'ok':>5}{'fail':>5}{'batch':>6}{'req/s':>8}{'inputs/s':>10}{'tok/s':>10}"
        f"{'E2E p50':>9}{'E2E p90':>9}{'E2E p99':>9}{'ms/input':>9}{'memory':>16}"
    )
    lines = [heading, "", head]
    for stage in summary.stages:
        pool, req, rps = stage.pooling, stage.requests, stage.request_throughput_per_s
        batch = pool.batch_size.mean if pool else None
        name = f"{stage.stage} {stage.label or ''}"[:29]
        lines.append(
            f"{name:<30}{req.successful:>5}{req.failed:>5}"
            f"{'-' if batch is None else f'{batch:g}':>6}{'-' if rps is None else f'{rps:.2f}':>8}"
            f"{rate(pool.inputs_per_s if pool else None, '').strip():>10}"
            f"{rate(pool.tokens_per_s if pool else None, '').strip():>10}"
            f"{_cell(stage.e2e_ms, 'p50')}{_cell(stage.e2e_ms, 'p90')}{_cell(stage.e2e_ms, 'p99')}"
            f"{_cell(pool.ms_per_input if pool else None, 'p50')}{_memory_cell(stage.telemetry):>16}"
        )
    pool = summary.pooling
    if pool:
        sources = ", ".join(f"{k} {v}" for k, v in summary.tokens_source.items())
        dims = f"; {pool.dimensions}-dimensional vectors" if pool.dimensions else ""
        lines += [
            "",
            f"{'Embedded' if pool.api == 'embeddings' else 'Scored':<13}{pool.inputs:,} inputs, {pool.tokens:,} tokens "
            f"({_fmt(pool.tokens_per_input, 0).strip()} per input; counted from: {sources}){dims}",
        ]
    lines += failure_lines(summary)
    if timing_bound:
        lines.append(f"Timing       client timing error: {timing_bound}")
    lines.append(
        f"Run dir      {run_dir}  (times in ms, end to end: the answers are not streamed; ms/input = E2E over "
        "the request's inputs, p50; tok/s = tokens embedded or scored per second)"
    )
    return "\n".join(lines)


# -- cost: the answer and the itemised breakdowns (bench cost's terminal output; the report's tables) ------
SECTIONS = {
    "task": "Task and workflow",
    "self-hosted": "Self-hosted cost, itemised",
    "api": "API cost, itemised",
    "break-even": "Break-even and monthly cost",
    "prices": "Prices used (source, date and age)",
}


def see(section: str) -> str:
    return f"[see: {SECTIONS[section]}]"


def pct(value: float | None, digits: int = 1) -> str:
    """A percentage; more digits where rounding would hide a difference from 0% or 100%."""
    if value is None:
        return "-"
    while digits < 4 and value not in (0, 1) and round(value * 100, digits) in (0, 100):
        digits += 1
    return f"{value:.{digits}%}"


def ci_text(ci: list | None, fmt=money) -> str:
    """' (95% CI a-b)', an open end written as 'unbounded'."""
    if not ci:
        return ""
    low, high = ci
    return f" (95% CI {fmt(low) if low is not None else '-'}-{fmt(high) if high is not None else 'unbounded'})"


def volume_text(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f}"


def volume_ci_text(ci: list | None) -> str:
    if not ci:
        return ""
    low, high = ci
    return f" (95% CI {volume_text(low) if low is not None else '-'}-{'never' if high is None else volume_text(high)})"


def _cache(share: float | None) -> str:
    return "API 0% / self-hosted as measured" if share is None else f"{share:.0%}"


def task_text(report) -> str:
    task, tokens = report["task"], report["workflow"]["tokens_per_attempt"]
    esc = task["escalation_rate"]
    escalation = "every failed task" if esc == "failures" else f"{esc:.1%} of tasks"
    return (
        f"{task['input_tokens']:,.0f} input + {task['output_tokens']:,.0f} output tokens; {tokens['calls']} model "
        f"call(s) per attempt ({task['tool_calls']} tool call(s), context {task['tool_context']}), "
        f"{task['reasoning_tokens']:g} reasoning tokens per call; cached input {_cache(task['cached_input_share'])}, "
        f"cache write {task['cache_write_share']:.0%}, batch {task['batch_share']:.0%}; retries up to "
        f"{task['max_retries']}; escalation {escalation} at ${task['human_review_cost']:g}"
    )


def _entry(report, name):
    return next(e for e in report["self_hosted"] + report["apis"] if e["name"] == name)


def _label(entry) -> str:
    return f"self-hosted {entry['name']}" if entry["kind"] == "self-hosted" else f"API {entry['name']}"


def _factor_text(factor: float | None, who: str) -> str:
    if factor is None:
        return f"no change in {who}'s price alone flips it"
    return f"{who}'s price {factor - 1:+.0%}"


def _ratio_text(ratio: float | None) -> str:
    return "the cheapest costs nothing" if ratio is None else f"x{ratio:.2f}"


def _interval_or_why(entry) -> str:
    ci = entry["per_successful_task_at_volume_ci95"]
    return ci_text(ci) if ci else " (no interval: only prices and assumed rates went into it)"


def _assumption_groups(assumptions: list[dict[str, str]]) -> list[str]:
    """The inputs that are not measurements, defaults together and like assumptions of several options once."""
    given = [a for a in assumptions if a["basis"].startswith("given")]
    defaults = [a for a in assumptions if a["basis"].startswith("default")]
    out = [f"{a['input']} {a['value']} ({a['basis']})" for a in given]
    if defaults:
        out.append("defaults: " + ", ".join(f"{a['input']} {a['value']}" for a in defaults))
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for a in assumptions:
        if a["basis"].startswith(("measured", "given", "default")):
            continue
        kind, _, who = a["input"].partition(": ")
        grouped.setdefault((kind, a["value"], a["basis"].replace(who, "{}") if who else a["basis"]), []).append(who)
    for (kind, value, basis), who in grouped.items():
        names = ", ".join(w for w in who if w)
        out.append(f"{kind}{' of ' + names if names else ''} {value} ({basis.replace('{}', 'it')})")
    return out


def answer_lines(report) -> list[str]:
    """The answer first: what costs least per successful task at the stated volume, by how much, the
    break-even volume, what would flip it, and which inputs are assumptions. Each line says where it is derived."""
    d, task = report["decision"], report["task"]
    bar = d["quality_bar"]
    volume = d["tasks_per_month"]
    lines = [
        f"At {volume:,.0f} tasks/month, task {task['input_tokens']:,.0f} in + {task['output_tokens']:,.0f} out tokens "
        f"({report['workflow']['tokens_per_attempt']['calls']} call(s) per attempt) {see('task')}, quality bar "
        + (f"{bar:.0%} (--min-success-rate)" if bar is not None else "none (--min-success-rate)")
        + ":"
    ]
    if d["winner"] is None:
        lines.append("  No option qualifies: " + "; ".join(f"{x['name']}: {x['why']}" for x in d["excluded"]) + ".")
        return lines
    win = _entry(report, d["winner"])
    section = "self-hosted" if win["kind"] == "self-hosted" else "api"
    lines.append(
        f"  Cheapest per successful task: {_label(win)}, {money(win['per_successful_task_at_volume'])}"
        f"{_interval_or_why(win)}, {money(win['monthly'])}/month {see(section)}."
    )
    if d.get("runner_up"):
        run = _entry(report, d["runner_up"])
        diff = d["difference"]
        section = "self-hosted" if run["kind"] == "self-hosted" else "api"
        lines.append(
            f"  Next: {_label(run)}, {money(run['per_successful_task_at_volume'])}"
            f"{_interval_or_why(run)}: {money(diff['per_successful_task'])} more per "
            f"successful task ({_ratio_text(diff['ratio'])}), {money(diff['monthly'])}/month more {see(section)}."
        )
    be = d.get("break_even")
    if be:
        point = be["tasks_per_month"]
        text = (
            f"{volume_text(point)} tasks/month{volume_ci_text(be['ci95'])}"
            if point is not None
            else f"none: {be['api']} costs less per successful task than a fully used instance"
            + (
                f" (at the interval's favourable end: {volume_text(be['ci95'][0])})"
                if be["ci95"] and be["ci95"][0]
                else ""
            )
        )
        note = f" ({be['note']})" if be.get("note") else ""
        lines.append(f"  Break-even of {be['self_hosted']} against {be['api']}{note}: {text} {see('break-even')}.")
    flips = d.get("flips")
    if flips:
        parts = []
        vol = flips["volume"]
        for side, word in (("below", "below"), ("above", "above")):
            if vol[side]:
                parts.append(f"volume {word} {vol[side]['tasks_per_month']:,.0f}/month ({vol[side]['cheapest']} wins)")
        if not vol["below"] and not vol["above"]:
            parts.append("no volume from 1/1000 to 1000 times the stated one")
        price = flips["price"]
        parts.append(_factor_text(price["winner_factor"], d["winner"]))
        parts.append(_factor_text(price["runner_up_factor"], d["runner_up"]))
        sr = flips["success_rate"]
        if sr["winner"] is not None and bar is not None and sr["winner"] < bar:
            parts.append(f"{d['winner']}'s success rate below the {bar:.0%} bar (it would be left out)")
        elif sr["winner"] is not None:
            parts.append(f"{d['winner']}'s success rate below {pct(sr['winner'])}")
        else:
            parts.append(f"no success rate of {d['winner']} alone")
        parts.append(
            f"{d['runner_up']}'s success rate above {pct(sr['runner_up'])}"
            if sr["runner_up"] is not None
            else f"no success rate of {d['runner_up']} up to 100%"
        )
        ut = flips["utilization"]
        if ut["winner"] is not None:
            parts.append(f"{d['winner']}'s utilization below {pct(ut['winner'], 0)}")
        if ut["runner_up"] is not None:
            parts.append(f"{d['runner_up']}'s utilization above {pct(ut['runner_up'], 0)}")
        lines.append("  What would flip it (against the next option, the rest unchanged): " + "; ".join(parts) + ".")
    for b in d.get("below_bar") or []:
        win_at = (
            f"it would be the cheapest from a success rate of {pct(b['success_rate_to_win'])}"
            if b["success_rate_to_win"] is not None
            else "it would still cost more than the cheapest at any success rate"
        )
        lines.append(
            f"  {b['name']} is below the quality bar at {pct(b['success_rate'])}: at the bar it would cost "
            f"{money(b['per_successful_task_at_bar'])} per successful task, and {win_at}."
        )
    lines.append("  Assumptions, not measurements: " + "; ".join(_assumption_groups(d["assumptions"])) + ".")
    measured = [a for a in d["assumptions"] if a["basis"].startswith("measured")]
    if measured:
        lines.append("  Measured: " + "; ".join(f"{a['input']} {a['value']} ({a['basis']})" for a in measured) + ".")
    if d["excluded"]:
        lines.append("  Left out: " + "; ".join(f"{x['name']} ({x['why']})" for x in d["excluded"]) + ".")
    if report["warnings"]:
        lines.append("  Prices flagged: " + "; ".join(report["warnings"]) + f" {see('prices')}.")
    return lines


def _per_hour(value: float) -> str:
    return f"{money(value)}/h"


def self_hosted_rows(sh, task) -> list[list[str]]:
    """Each figure of a self-hosted option as (item, how, value), in the order they build on each other."""
    m, o, rate = sh["measured"], sh["outcome"], sh["rate"]
    u, volume = sh["utilization"], task["tasks_per_month"]
    rows = [[f"hardware: {i['item']}", i["formula"], _per_hour(i["per_hour"])] for i in sh["hardware"]["items"]]
    lab = sh["labour"]
    rows.append(["operations labour", f"{lab['formula']} ({lab['basis']})", _per_hour(lab["per_hour"])])
    rows.append(
        [
            "instance",
            "hardware + labour; x 730 h a month",
            f"{_per_hour(sh['instance_hourly'])}, {money(sh['instance_monthly'])}/month",
        ]
    )
    stage = sh["priced_stage"]
    measured = (
        f"({m['requests_ok']} ok + {m['requests_failed']} failed requests) / {m['window_s']:,.2f} s, stage "
        f"{stage['stage']} ({stage['label']}, {stage['basis']})"
    )
    if rate["method"] == "measured":
        how = f"measured: {measured}; {rate['note']}"
        rows.append(["attempts/s of one instance", how, f"{rate['attempts_per_s']:.4g}"])
    else:
        rows.append(["attempts/s, measured", measured, f"{m['attempts_per_s']:.4g}"])
        rows.append(
            [
                "per-stream rates",
                f"prefill P = {m['input_tokens_mean']:,.1f} x (1 - {m['prefix_cache_hit_rate']:.0%} cached) / "
                f"{m['ttft_ms_mean']:,.1f} ms TTFT; decode D = 1000 / {m['tpot_ms_mean']:,.2f} ms TPOT",
                f"P {rate['prefill_tokens_per_s_per_stream']:,.1f}, D {rate['decode_tokens_per_s_per_stream']:,.2f} "
                "tok/s",
            ]
        )
        rows.append(
            [
                "attempts/s of one instance",
                f"{m['attempts_per_s']:.4g}/s x {rate['run_request_s']:,.2f} s (the run's mean request: "
                f"in / P + out / D) / {rate['attempt_s']:,.2f} s (the task's attempt: sum over its calls); "
                + rate["note"],
                f"{rate['attempts_per_s']:.4g}",
            ]
        )
    rows += _outcome_rows(sh)
    a = o["attempts_per_task"]
    rows.append(
        [
            "$ per attempt",
            f"{_per_hour(sh['instance_hourly'])} / ({rate['attempts_per_s']:.4g}/s x 3600 x {u:.0%} utilization)",
            money(sh["per_attempt"]),
        ]
    )
    items = sh["items"]
    rows.append(
        [
            "$ per task",
            f"{a:.3f} attempts x {money(sh['per_attempt'])} (hardware {money(items['hardware'])} + labour "
            f"{money(items['labour'])}) + {pct(o['escalated_share'])} escalated x ${task['human_review_cost']:g} "
            f"(escalation {money(items['escalation'])})",
            money(sh["per_task"]),
        ]
    )
    rows.append(
        [
            f"$ per successful task at {u:.0%} utilization",
            f"{money(sh['per_task'])} / {pct(o['successful_share'])} successful",
            money(sh["per_successful_task"]) + ci_text(sh["per_successful_task_ci95"]),
        ]
    )
    rows.append(
        [
            "capacity of one instance",
            f"{rate['attempts_per_s']:.4g}/s x {u:.0%} x 2,628,000 s / ({a:.3f} attempts x "
            f"{max((1 - task['batch_share']) * task['peak_to_average'], 1):g} peak factor)",
            f"{sh['capacity_tasks_per_month']:,.0f} tasks/month",
        ]
    )
    mi = sh["monthly_items"]
    rows.append(
        [
            f"instances at {volume:,.0f} tasks/month",
            f"ceil({volume:,.0f} / {sh['capacity_tasks_per_month']:,.0f}), at least 1",
            f"{sh['instances']}",
        ]
    )
    rows.append(
        [
            "monthly",
            f"{sh['instances']} x {money(sh['instance_monthly'])} (hardware {money(mi['hardware'])} + labour "
            f"{money(mi['labour'])}) + escalation {money(mi['escalation'])}",
            money(sh["monthly"]),
        ]
    )
    rows.append(
        [
            f"$ per successful task at {volume:,.0f} tasks/month",
            f"{money(sh['monthly'])} / ({pct(o['successful_share'])} x {volume:,.0f})",
            money(sh["per_successful_task_at_volume"]) + ci_text(sh["per_successful_task_at_volume_ci95"]),
        ]
    )
    rows.append(
        [
            "$ per successful task by utilization",
            "as above at each utilization",
            ", ".join(f"{k} {money(v)}" for k, v in sh["per_successful_task_by_utilization"].items()),
        ]
    )
    ci = sh.get("per_1m_output_tokens_ci95")
    rows.append(
        [
            "$ per 1M tokens (the run's own workload)",
            f"{_per_hour(sh['instance_hourly'])} / (tok/s x 3600 x {u:.0%}) x 1e6 at {m['output_tokens_per_s']:,.1f} "
            "output tok/s" + (f", {m['total_tokens_per_s']:,.1f} total" if m.get("total_tokens_per_s") else ""),
            f"{money(sh['per_1m_output_tokens'])} output{ci_text(ci)}, {money(sh['per_1m_total_tokens'])} total",
        ]
    )
    return rows


def _outcome_rows(entry) -> list[list[str]]:
    o, s = entry["outcome"], entry["success"]
    m = o["max_retries"]
    esc = o["escalation"]
    rows = [
        [
            "success rate of an attempt",
            ("measured: " if s["measured"] else "assumption: ") + s["basis"],
            pct(s["rate"]) + ci_text(s.get("ci95"), pct),
        ],
        ["attempts per task", f"1 + (1 - s) + ... + (1 - s)^{m} (up to {m} retries)", f"{o['attempts_per_task']:.3f}"],
        ["solved by the model", f"1 - (1 - s)^{m + 1}", pct(o["solved_share"])],
        [
            "escalated to a person",
            "the tasks it did not solve (--escalation-rate failures)" if esc == "failures" else "--escalation-rate",
            pct(o["escalated_share"]),
        ],
        [
            "successful",
            "every task (failures are escalated and resolved)" if esc == "failures" else "solved by the model",
            pct(o["successful_share"]),
        ],
    ]
    return rows


def api_rows(api, task) -> list[list[str]]:
    o, bill = api["outcome"], api["attempt"]
    b = bill["batch"]
    c, w = task["cached_input_share"] or 0.0, task["cache_write_share"]
    in_disc = f" x (1 - {b['share']:.0%} x {b['input_discount']:.0%} batch)" if b["share"] else ""
    out_disc = f" x (1 - {b['share']:.0%} x {b['output_discount']:.0%} batch)" if b["share"] else ""
    rows = []
    for call in bill["calls"]:
        p = call["prices_per_1m"]
        tier = f", {call['tier']}" if call["tier"] else ""
        prefix = f"call {call['call']}: " if len(bill["calls"]) > 1 else ""
        n_in = call["input_tokens"]
        parts = [f"{n_in * (1 - c - w):,.0f} input x ${p['input']:g}/1M{in_disc}"]
        if c:
            parts.append(f"{n_in * c:,.0f} cached x ${p['cached']:g}/1M{in_disc}")
        if w:
            parts.append(f"{n_in * w:,.0f} cache-write x ${p['cache_write']:g}/1M{in_disc}")
        parts.append(f"{call['output_tokens']:,.0f} output x ${p['output']:g}/1M{out_disc}")
        if call["reasoning_tokens"]:
            parts.append(f"{call['reasoning_tokens']:,.0f} reasoning x ${p['output']:g}/1M{out_disc}")
        rows.append([f"{prefix}tokens{tier}", " + ".join(parts), money(call["cost"])])
    items = bill["items"]
    kinds = ", ".join(f"{k} {money(v)}" for k, v in items.items() if v)
    rows.append(["$ per attempt", f"the call(s) above: {kinds or 'nothing billed'}", money(api["per_attempt"])])
    rows += _outcome_rows(api)
    rows.append(
        [
            "$ per task",
            f"{o['attempts_per_task']:.3f} attempts x {money(api['per_attempt'])} + {pct(o['escalated_share'])} "
            f"escalated x ${task['human_review_cost']:g}",
            money(api["per_task"]),
        ]
    )
    rows.append(
        [
            "$ per successful task",
            f"{money(api['per_task'])} / {pct(o['successful_share'])} successful",
            money(api["per_successful_task"]) + ci_text(api["per_successful_task_ci95"]),
        ]
    )
    rows.append(
        [
            f"monthly at {task['tasks_per_month']:,.0f} tasks",
            f"{task['tasks_per_month']:,.0f} x {money(api['per_task'])}",
            money(api["monthly"]),
        ]
    )
    age = api["price_age"]
    rows.append(
        [
            "price",
            f"{api['price_source']}"
            + (f" (version {api['source_version']})" if api.get("source_version") else "")
            + f", as of {api['as_of'] or 'unknown'}"
            + (f", read {api['retrieved']}" if api.get("retrieved") else ""),
            age["note"] + ("" if not age["stale"] else " [STALE]"),
        ]
    )
    if api["deprecation"]["note"]:
        rows.append(
            [
                "deprecation",
                "the catalog's deprecation date",
                api["deprecation"]["note"] + (" [DEPRECATED]" if api["deprecation"]["deprecated"] else ""),
            ]
        )
    return rows


def break_even_rows(report) -> list[list[str]]:
    """Per self-hosted option and API offer: the break-even volume, its interval and sensitivities."""
    rows = []
    shs = {sh["name"]: sh for sh in report["self_hosted"]}
    for api in report["apis"]:
        for be in api["break_even"]:
            sh = shs[be["self_hosted"]]
            o = sh["outcome"]
            formula = (
                f"({money(sh['instance_monthly'])} / {pct(o['successful_share'])}) / "
                f"({money(api['per_successful_task'])} - {pct(o['escalated_share'])} x "
                f"${report['task']['human_review_cost']:g} / "
                f"{pct(o['successful_share'])}), if one instance carries it ({sh['capacity_tasks_per_month']:,.0f})"
            )
            rows.append(
                [
                    be["self_hosted"],
                    api["name"] + (" [DEPRECATED]" if api["deprecation"]["deprecated"] else ""),
                    formula,
                    volume_text(be["tasks_per_month"]) + volume_ci_text(be["ci95"]),
                    volume_text(be["by_price"]["-50%"]),
                    volume_text(be["by_price"]["+50%"]),
                    volume_text(be["by_utilization"]["10%"]),
                    volume_text(be["by_utilization"]["90%"]),
                ]
            )
    return rows


BREAK_EVEN_HEADERS = [
    "self-hosted",
    "API offer",
    "V* = (instance monthly / S) / (API $/successful task - e x h / S)",
    "break-even tasks/month (95% CI)",
    "at API price -50%",
    "at +50%",
    "at 10% utilization",
    "at 90%",
]


def _rows_text(rows: list[list[str]], indent: str = "  ") -> list[str]:
    width = max((len(r[0]) for r in rows), default=0)
    return [f"{indent}{r[0]:<{width}}  {r[2]:<24} = {r[1]}" for r in rows]


def format_cost(report) -> str:
    """`bench cost`'s output: the answer first, then each option itemised, then the break-even table."""
    task = report["task"]
    lines = ["Answer", *answer_lines(report), ""]
    lines += [f"{SECTIONS['task']}", f"  {task_text(report)}", ""]
    for sh in report["self_hosted"]:
        age = sh["price_age"]
        lines.append(
            f"{SECTIONS['self-hosted']}: {sh['name']} ({sh['price_source']}, as of {sh['as_of']}: {age['note']})"
        )
        lines += _rows_text(self_hosted_rows(sh, task))
        lines.append("")
    if not report["apis"]:
        lines.append("No API offers in the catalog to compare with (add api_offers to models.yaml).")
    for api in report["apis"]:
        lines.append(f"{SECTIONS['api']}: {api['name']} ({api['provider']} {api['model']})")
        lines += _rows_text(api_rows(api, task))
        lines.append("")
    if report["apis"] and report["self_hosted"]:
        lines.append(SECTIONS["break-even"])
        for r in break_even_rows(report):
            lines.append(
                f"  {r[0]} against {r[1]}: {r[3]} tasks/month; at API prices -50%/+50%: {r[4]} / {r[5]}; at "
                f"10%/90% utilization: {r[6]} / {r[7]}"
            )
        lines.append(f"  {BREAK_EVEN_HEADERS[2]}; 'never': the API costs less per successful task than a fully used")
        lines.append("  instance. Intervals: " + report["interval_method"] + ".")
    return "\n".join(lines)


def search_line(search: SearchResult) -> str:
    """The max-rate search's answer in one line: the rate found, the bracket, the stages it took."""
    found, (held, failed) = search.found_rate, search.bracket
    steps = len(search.steps)
    if found is None:
        return f"Search       no rate held its SLOs, down to {failed:.3g} req/s ({steps} stage(s))"
    top = "the top of the range held: raise HIGH" if failed is None else f"{failed:.3g} failed"
    reached = "" if search.precision_reached else f"; the bracket is wider than {search.precision:.0%}"
    upper = "?" if failed is None else f"{failed:.3g}"
    return (
        f"Search       max rate with SLOs held: {found:.3g} req/s (bracket {held:.3g}-{upper} req/s: {top}; "
        f"{steps} stage(s)){reached}"
    )


def format_embedding_cost(report: dict[str, Any]) -> str:
    """bench cost of an embeddings (or rerank) run: $ per 1M embedded tokens, self-hosted at each stage and
    against each API embedding offer."""
    best = report["priced_stage"]
    u = report["utilization"]
    lines = [
        "Answer",
        f"  Self-hosted on {report['hardware_offer']} (${report['instance_hourly']:,.4g}/h: {report['price_source']}, "
        f"as of {report['as_of']}: {report['price_age']['note']}; utilization {u:.0%}): "
        f"{money(best['per_1m_tokens'])} per 1M embedded tokens at its fastest stage ({best['label']}: "
        f"{best['tokens_per_s']:,.0f} tokens/s, {best['inputs_per_s']:,.1f} inputs/s).",
    ]
    for api in report["apis"]:
        ratio = api["self_hosted_ratio"]
        compare = (
            "-"
            if ratio is None
            else f"self-hosted costs {ratio:,.1f}x as much"
            if ratio >= 1
            else f"self-hosted costs {ratio:.0%} of it"
        )
        batch = f" ({money(api['batch_per_1m_tokens'])} in batch)" if api["batch_per_1m_tokens"] is not None else ""
        even = api["break_even_tokens_per_month"]
        even_text = f"; break-even {even / 1e9:,.2f}B tokens/month" if even else "; no break-even on one instance"
        age = "" if not api["price_age"]["stale"] else f" [{api['price_age']['note']}]"
        lines.append(
            f"  API {api['name']}: {money(api['per_1m_tokens'])} per 1M tokens{batch}: {compare}{even_text} "
            f"({api['price_source']}, as of {api['as_of'] or 'unknown'}){age}"
        )
    if not report["apis"]:
        lines.append("  No API embedding offers to compare with: bench prices import 'text-embedding-3-*'")
    lines += ["", "By stage (self-hosted)"]
    for s in report["stages"]:
        lines.append(
            f"  {s['stage']} {s['label']}: {s['tokens_per_s']:,.0f} tokens/s, {s['inputs_per_s']:,.1f} inputs/s, "
            f"E2E p99 {_fmt(s['e2e_p99_ms'], 0).strip()} ms: {money(s['per_1m_tokens'])} per 1M tokens, "
            f"{money(s['per_1m_inputs'])} per 1M inputs"
        )
    one = report["tokens_per_month_one_instance"]
    lines += ["", f"One instance carries {one / 1e9:,.2f}B tokens a month at the priced stage.", report["formula"]]
    return "\n".join(lines)
