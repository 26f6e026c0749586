"""`bench report RUN...`: the self-host-versus-API cost report, from run directories and catalog prices.

Every figure is computed here from the runs' summary.json, telemetry.jsonl and manifest.json with
bench.cost's formulas and kept in report.json; report.md and report.html are two renderings of the
same blocks (bench.report.render), so the documents cannot disagree with each other or with the data.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.cost import (
    CostError,
    PricingInputs,
    cost_report,
    hardware_items,
    instance_hourly,
    labour_item,
    monthly_curve,
    price_age,
    priced_throughput,
    public,
    stage_costs,
    with_measured_tokens,
)
from bench.errors import UsageError
from bench.format import (
    BREAK_EVEN_HEADERS,
    SECTIONS,
    answer_lines,
    api_rows,
    break_even_rows,
    ci_text,
    money,
    pct,
    self_hosted_rows,
    task_text,
)
from bench.metrics.requests import MEASURED, NS_PER_MS, NS_PER_S, OK, intended_start, table_of
from bench.records import TelemetrySample
from bench.report import plots
from bench.report.render import Figure, Heading, Paragraph, Table, write_documents
from bench.results import RunDirectory, write_json_atomic

PERCENTILES = ("p50", "p99")


def _ms(stats: dict[str, Any] | None, key: str) -> str:
    value = (stats or {}).get(key)
    return "-" if value is None else f"{value:,.1f}"


def _run_view(run_dir: RunDirectory) -> dict[str, Any]:
    """What the report needs from one run directory: identity, stages, telemetry series."""
    manifest, summary = run_dir.manifest(), run_dir.summary()
    engine = manifest.engine.model_dump() if manifest.engine else {}
    model = manifest.model.model_dump() if manifest.model else {}
    label = f"{manifest.run_id} ({engine.get('engine') or 'endpoint'}, {model.get('name')})"
    stages = [
        {
            "stage": stage.stage,
            "label": stage.label,
            "short": (stage.label or "").split(" ")[-1],
            "request_throughput_per_s": stage.request_throughput_per_s,
            "output_tokens_per_s": stage.output_throughput_tokens_per_s,
            "ttft_ms": stage.ttft_ms.model_dump(by_alias=True),
            "tpot_ms": stage.tpot_ms.model_dump(by_alias=True),
            "e2e_ms": stage.e2e_ms.model_dump(by_alias=True),
            "requests": stage.requests.model_dump(),
            "goodput": stage.slo.goodput_requests_per_s if stage.slo else None,
            "telemetry": stage.telemetry.model_dump(),
        }
        for stage in summary.stages
    ]
    trace = manifest.workload is not None and manifest.workload.kind == "trace"
    # a trace's rows are kept for its timeline below; any other run's are streamed once
    rows = list(run_dir.request_rows()) if trace else run_dir.request_rows()
    starts: dict[int, int] = {}
    for r in rows:
        if r.get("t_send_ns") is not None:
            stage = r.get("stage", 0)
            starts[stage] = min(starts.get(stage, r["t_send_ns"]), r["t_send_ns"])
    return {
        "path": str(run_dir.path),
        "run_id": manifest.run_id,
        "label": label,
        "status": manifest.status,
        "incomplete_reason": manifest.incomplete_reason,
        "started_at": manifest.started_at,
        "engine": engine,
        "model": model,
        "hardware": manifest.hardware.model_dump(),
        "summary": summary,
        "quality": summary.quality.model_dump() if summary.quality else None,
        "stages": stages,
        "telemetry": _telemetry_series(run_dir.telemetry()),
        "stage_starts_s": sorted(t / 1e9 for t in starts.values()),
        "timeline": _timeline(rows) if trace else None,
    }


def _timeline(rows: list[dict[str, Any]]) -> dict[str, list]:
    """A replayed trace's measured requests in the order the trace sent them: each one's intended send time (s
    from the first), TTFT and E2E from that time (ms, as its SLOs judge them; None for a failed request), and
    whether it succeeded."""
    table = table_of(rows)
    start = intended_start(table)
    kept = (table.phase == MEASURED) & ~np.isnan(start)
    measured, start = table.select(kept), start[kept]
    order = np.argsort(start, kind="stable")
    start, ok = start[order], measured.status[order] == OK

    def ms(end: np.ndarray) -> list[float | None]:
        return [float(v) if good else None for v, good in zip((end[order] - start) / NS_PER_MS, ok, strict=True)]

    return {
        "t_s": ((start - start[0]) / NS_PER_S).tolist() if len(start) else [],
        "ttft_ms": ms(measured.first_chunk),
        "e2e_ms": ms(measured.t_end),
        "ok": ok.tolist(),
    }


def _telemetry_series(rows: list[TelemetrySample]) -> dict[str, list]:
    def gpu_sum(row: TelemetrySample, key: str, scale: float = 1.0):
        values = [getattr(g, key) for g in row.gpus or [] if getattr(g, key) is not None]
        return sum(values) / scale if values else None

    def gpu_mean(row: TelemetrySample, key: str):
        values = [getattr(g, key) for g in row.gpus or [] if getattr(g, key) is not None]
        return sum(values) / len(values) if values else None

    return {
        "t_s": [r.t_ns / 1e9 for r in rows],
        "engine_cpu_percent": [r.engine_cpu_percent for r in rows],
        "client_cpu_percent": [r.client_cpu_percent for r in rows],
        "engine_rss_mib": [(r.engine_rss_bytes or 0) / 2**20 or None for r in rows],
        "gpu_util_percent": [gpu_mean(r, "utilization_percent") for r in rows] if any(r.gpus for r in rows) else [],
        "gpu_memory_mib": [gpu_sum(r, "memory_used_bytes", 2**20) for r in rows],
        "gpu_power_w": [gpu_sum(r, "power_w") for r in rows],
    }


def log_volumes(low: float, high: float, points: int = 400) -> list[float]:
    step = (math.log10(high) - math.log10(low)) / (points - 1)
    return [10 ** (math.log10(low) + i * step) for i in range(points)]


def build_report(
    run_dirs: list[Path],
    hardware_offer_names: list[str],
    catalog,
    api_offer_names: list[str],
    pricing: PricingInputs,
) -> dict[str, Any]:
    """The report's data: per run, its stages and its priced self-hosted option; every API offer; the answer.
    `hardware_offer_names` holds one name per run, in order.
    Token counts the task leaves unset are the first run's means."""
    api_offers = {n: catalog.api_offers[n] for n in api_offer_names}
    runs = [_run_view(RunDirectory(p)) for p in run_dirs]
    for run, offer_name in zip(runs, hardware_offer_names, strict=True):
        try:
            run["priced"] = priced_throughput(run["summary"])
        except CostError as exc:
            raise UsageError(f"{run['path']}: {exc}") from None
        run["hardware_offer"] = offer_name
    task = pricing.task
    measured_from = runs[0]["run_id"] if task.input_tokens is None or task.output_tokens is None else None
    task = with_measured_tokens(task, runs[0]["priced"])
    try:
        cost = cost_report(
            [
                {
                    "run_id": r["run_id"],
                    "measured": r["priced"],
                    "offer_name": r["hardware_offer"],
                    "offer": catalog.hardware_offers[r["hardware_offer"]],
                }
                for r in runs
            ],
            api_offers,
            replace(pricing, task=task),
            measured_from=measured_from,
        )
    except CostError as exc:
        raise UsageError(f"{runs[0]['path']}: {exc}") from None
    warnings = list(cost["warnings"])
    for run, sh in zip(runs, cost["self_hosted"], strict=True):
        run["cost"] = sh
        if sh["rate"]["method"] == "extrapolated":
            warnings.append(f"{sh['name']}: its throughput for the task is {sh['rate']['note']}")
        if run["status"] != "complete":
            warnings.append(
                f"{run['run_id']}: the run is {run['status']} ({run['incomplete_reason'] or 'no reason'})"
                "; its figures cover only the requests that finished"
            )
    # the volume axis spans every break-even point and the stated volume, with a decade of margin
    anchors = [task.tasks_per_month or 1e6]
    anchors += [be["tasks_per_month"] for a in cost["apis"] for be in a["break_even"] if be["tasks_per_month"]]
    volumes = log_volumes(10 ** math.floor(math.log10(min(anchors)) - 1), 10 ** math.ceil(math.log10(max(anchors)) + 1))
    for run in runs:
        run["monthly_curve"] = monthly_curve(run["cost"]["_option"], volumes)
        run["stage_costs"] = stage_costs(run["summary"], run["cost"]["instance_hourly"], task.utilization)
    for api in cost["apis"]:
        api["monthly_curve"] = monthly_curve(api["_option"], volumes)
    today = pricing.today
    return {
        "task": task.to_json(),
        "task_measured_from": measured_from,
        "volumes": volumes,
        "runs": runs,
        "cost": cost,
        "warnings": warnings,
        "api_offers": {n: o.model_dump(mode="json") for n, o in api_offers.items()},
        "hardware_offers": {
            n: {
                **catalog.hardware_offers[n].model_dump(mode="json"),
                "hourly": instance_hourly(catalog.hardware_offers[n]),
                "items": hardware_items(catalog.hardware_offers[n]),
                "labour_item": labour_item(catalog.hardware_offers[n]),
                "price_age": price_age(catalog.hardware_offers[n].as_of, today, pricing.stale_after) if today else None,
            }
            for n in sorted(set(hardware_offer_names))
        },
    }


def figures(data: dict[str, Any]) -> dict[str, bytes]:
    runs, cost = data["runs"], data["cost"]
    volume = data["task"]["tasks_per_month"]
    bars = [
        {
            "label": f"self-hosted: {sh['name']}",
            "kind": "self-hosted",
            "value": sh["per_successful_task_at_volume"],
            "ci95": sh["per_successful_task_at_volume_ci95"],
        }
        for sh in cost["self_hosted"]
        if sh["per_successful_task_at_volume"]
    ]
    bars += sorted(
        (
            {
                "label": f"API: {a['name']}" + (" (deprecated)" if a["deprecation"]["deprecated"] else ""),
                "kind": "api",
                "value": a["per_successful_task"],
                "ci95": a["per_successful_task_ci95"],
            }
            for a in cost["apis"]
            if a["per_successful_task"]
        ),
        key=lambda b: b["value"],
    )
    apis = []
    for api in cost["apis"]:
        be = api["break_even"][0]["tasks_per_month"] if api["break_even"] else None
        points = [{"volume": be, "monthly": api["_option"].monthly(be)}] if be else []
        apis.append({"label": api["name"], "monthly": api["monthly_curve"], "break_even": points})
    self_hosted = [{"label": r["cost"]["name"], "monthly": r["monthly_curve"]} for r in runs]
    return {
        "latency_throughput.png": plots.latency_throughput(runs),
        "cost_per_successful_task.png": plots.cost_per_successful_task(bars, volume),
        "monthly_cost.png": plots.monthly_cost(data["volumes"], self_hosted, apis),
        "telemetry.png": plots.telemetry(runs),
        **({"trace.png": plots.trace_timeline(traced)} if (traced := [r for r in runs if r["timeline"]]) else {}),
    }


def blocks(data: dict[str, Any]) -> list:
    """The report's content, in order, as blocks both renderers understand: the answer first."""
    out: list = [Heading(1, "Self-hosted versus API: cost report")]
    for section in REPORT_SECTIONS:
        out += section(data)
    return out


def _answer_blocks(data: dict[str, Any]) -> list:
    """The answer first: the cheapest option per successful task, warnings, and what quality was measured."""
    task = data["task"]
    runs = data["runs"]
    cost = data["cost"]
    out: list = []
    out.append(Heading(2, "Answer"))
    lines = answer_lines(cost)
    out.append(Paragraph(lines[0]))
    out += [Paragraph(line.strip()) for line in lines[1:]]
    for warning in data["warnings"]:
        if warning not in cost["warnings"]:
            out.append(Paragraph(f"Warning: {warning}."))
    unscored = [r["run_id"] for r in runs if r["priced"].get("success_basis") != "golden-set cases passed"]
    if unscored:
        out.append(
            Paragraph(
                f"Quality not measured for {', '.join(unscored)}: success there means the request completed, not that "
                "the answer was right, so these costs compare machines, not models. Run a golden set (`bench eval "
                "--golden FILE`) to price successful tasks."
            )
        )

    out.append(
        Figure(
            "cost_per_successful_task.png",
            f"Cost per successful task at {task['tasks_per_month']:,.0f} tasks/month, with 95% intervals "
            "(deprecated offers marked).",
        )
    )
    return out


def _task_blocks(data: dict[str, Any]) -> list:
    """The task priced: its source, volume, calls and tokens, and the assumptions."""
    task = data["task"]
    cost = data["cost"]
    u = task["utilization"]
    out: list = []
    out.append(Heading(2, SECTIONS["task"]))
    source = f"measured: the mean of run {data['task_measured_from']}" if data["task_measured_from"] else "given"
    out.append(
        Paragraph(
            f"Task ({source}): {task_text(cost)}. {task['tasks_per_month']:,.0f} tasks/month, peak-to-average "
            f"{task['peak_to_average']:g}, target utilization {u:.0%}. A rented machine costs every hour whether busy "
            "or not, so self-hosted costs are at the target utilization, and at the stated volume a whole number of "
            "instances; the API is billed per token. The same workflow (calls, tokens, retries, escalation) is priced "
            "on both sides."
        )
    )
    out.append(
        Table(
            ["call", "input tokens", "output tokens", "reasoning tokens"],
            [
                [str(k), f"{c['input_tokens']:,.0f}", f"{c['output_tokens']:,.0f}", f"{c['reasoning_tokens']:,.0f}"]
                for k, c in enumerate(cost["workflow"]["calls"])
            ],
        )
    )
    tokens = cost["workflow"]["tokens_per_attempt"]
    out.append(
        Paragraph(
            "Tokens per attempt by kind: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" for k, v in tokens.items() if k != "calls")
            + ". Call k reads the task's input plus k x (tool-call + tool-result tokens) when the context is carried "
            "(the latest result only when it is reset); calls before the last write a tool call, the last the answer."
        )
    )
    out.append(
        Table(
            ["input", "value", "basis"], [[a["input"], a["value"], a["basis"]] for a in cost["decision"]["assumptions"]]
        )
    )
    return out


def _self_hosted_blocks(data: dict[str, Any]) -> list:
    """Each self-hosted instance: its figures, their inputs and how each is computed."""
    task = data["task"]
    cost = data["cost"]
    out: list = []
    out.append(Heading(2, SECTIONS["self-hosted"]))
    out.append(
        Paragraph(
            "Each figure, the inputs it is computed from, and how: an instance's hourly cost (rented rate, or "
            "amortisation + power + hosting) plus operations labour; the attempts per second one instance serves for "
            "the task; the attempts, escalations and successes per task; the cost per task and per successful task "
            "(total cost / successful tasks: failures counted once, in the success rate). Intervals: "
            + cost["interval_method"]
            + "."
        )
    )
    for sh in cost["self_hosted"]:
        out.append(Heading(3, f"{sh['name']} ({_gpus_text(sh['gpus'])})"))
        out.append(Table(["item", "value", "how"], [[r[0], r[2], r[1]] for r in self_hosted_rows(sh, task)]))
    return out


def _api_blocks(data: dict[str, Any]) -> list:
    """The API offers side by side, then each one worked out."""
    task = data["task"]
    cost = data["cost"]
    out: list = []
    out.append(Heading(2, SECTIONS["api"]))
    if not cost["apis"]:
        out.append(
            Paragraph("No API offers to compare with: add api_offers to models.yaml or run `bench prices import`.")
        )
    else:
        out.append(
            Table(
                [
                    "API offer",
                    "$/attempt",
                    "success rate",
                    "$/task",
                    "$/successful task (95% CI)",
                    "$/month",
                    "price as of",
                    "flags",
                ],
                [
                    [
                        a["name"],
                        money(a["per_attempt"]),
                        pct(a["success"]["rate"]) + (" (measured)" if a["success"]["measured"] else " (assumed)"),
                        money(a["per_task"]),
                        money(a["per_successful_task"]) + ci_text(a["per_successful_task_ci95"]),
                        money(a["monthly"]),
                        a["as_of"] or "unknown",
                        _flags(a),
                    ]
                    for a in cost["apis"]
                ],
            )
        )
    for api in cost["apis"]:
        out.append(Heading(3, f"{api['name']} ({api['provider']} {api['model']})"))
        out.append(Table(["item", "value", "how"], [[r[0], r[2], r[1]] for r in api_rows(api, task)]))
    return out


def _break_even_blocks(data: dict[str, Any]) -> list:
    """Break-even volumes, and why self-hosting is a step function."""
    cost = data["cost"]
    out: list = []
    out.append(Heading(2, SECTIONS["break-even"]))
    if cost["apis"]:
        out.append(Table(BREAK_EVEN_HEADERS, break_even_rows(cost)))
    out.append(
        Paragraph(
            "Self-hosting is a step function: instances = ceil(volume x attempts per task x peak factor / capacity of "
            "one instance). The API is linear. Break-even is the volume where both cost the same per successful task "
            "on the first instance; 'never' means the API costs less per successful task than a fully used instance. "
            "Above it each new instance makes self-hosting briefly dearer again; the curve shows those steps."
        )
    )
    out.append(Figure("monthly_cost.png", "Monthly cost against tasks per month, with break-even points."))
    return out


def _runs_blocks(data: dict[str, Any]) -> list:
    """The runs the report rests on: engine, model digest, hardware and start time."""
    runs = data["runs"]
    out: list = []
    out.append(Heading(2, "Runs"))
    out.append(
        Table(
            ["run", "status", "engine", "model", "model sha256", "hardware", "started"],
            [
                [
                    r["run_id"],
                    r["status"],
                    _engine_text(r["engine"]),
                    r["model"].get("name") or "-",
                    ((r["model"].get("file") or {}).get("sha256") or "-")[:12],
                    _hardware_text(r["hardware"]),
                    r["started_at"] or "-",
                ]
                for r in runs
            ],
        )
    )
    return out


def _stages_blocks(data: dict[str, Any]) -> list:
    """Latency and throughput of every stage of every run."""
    runs = data["runs"]
    out: list = []
    out.append(Heading(2, "Latency and throughput by stage"))
    rows = []
    for r in runs:
        for s in r["stages"]:
            req = s["requests"] or {}
            rows.append(
                [
                    r["run_id"],
                    s["label"],
                    f"{req.get('successful', 0)}/{req.get('measured', 0)}",
                    _rate(s["request_throughput_per_s"]),
                    _rate(s["output_tokens_per_s"], 1),
                    *(_ms(s[m], p) for m in ("ttft_ms", "tpot_ms") for p in PERCENTILES),
                    _ms(s["e2e_ms"], "p99"),
                    _rate(s["goodput"]),
                ]
            )
    out.append(
        Table(
            [
                "run",
                "stage",
                "ok/measured",
                "req/s",
                "output tok/s",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "TPOT p50 ms",
                "TPOT p99 ms",
                "E2E p99 ms",
                "goodput req/s",
            ],
            rows,
        )
    )
    out.append(Figure("latency_throughput.png", "Latency against throughput: one point per stage."))
    if any(r["timeline"] for r in runs):
        out.append(
            Figure(
                "trace.png",
                "A replayed trace over time: arrivals per second as the trace sent them, and each request's TTFT "
                "and end-to-end latency from its intended send time (failed requests marked on the axis).",
            )
        )
    return out


def _quality_blocks(data: dict[str, Any]) -> list:
    """Golden-set success rates, where a run was scored."""
    runs = data["runs"]
    out: list = []
    scored = [r for r in runs if r["quality"]]
    if scored:
        out.append(Heading(2, "Quality on the golden set"))
        rows = []
        for r in scored:
            q = r["quality"]
            by_tag = ", ".join(f"{t} {v['passed']}/{v['cases']}" for t, v in q["by_tag"].items())
            rows.append(
                [
                    r["run_id"],
                    q["golden"]["path"],
                    f"{q['passed']}/{q['cases']}",
                    f"{q['success_rate']:.1%} ({q['ci95'][0]:.1%}-{q['ci95'][1]:.1%})" if q["ci95"] else "-",
                    by_tag or "-",
                    ", ".join(f["id"] for f in q["failures"][:10])
                    + (f" and {len(q['failures']) - 10} more" if len(q["failures"]) > 10 else ""),
                ]
            )
        out.append(Table(["run", "golden set", "passed", "success rate (95% Wilson)", "by tag", "failed cases"], rows))
        out.append(Paragraph("Each case's output and check verdicts are in the run's eval.json."))
    return out


def _stage_costs_blocks(data: dict[str, Any]) -> list:
    """Each stage priced at its own workload."""
    runs = data["runs"]
    u = data["task"]["utilization"]
    out: list = []
    out.append(Heading(2, "Cost by stage (each at its own workload)"))
    out.append(
        Table(
            ["run", "stage", "req/s", "$/1M output tok", "$/1M total tok", "$/successful request"],
            [
                [
                    r["run_id"],
                    s["label"],
                    _rate(s["requests_per_s"]),
                    money(s["per_1m_output_tokens"]),
                    money(s["per_1m_total_tokens"]),
                    money(s["per_successful_request"]),
                ]
                for r in runs
                for s in r["stage_costs"]
            ],
        )
    )
    out.append(
        Paragraph(
            f"At {u:.0%} utilization and each instance's hourly cost (hardware + labour): $/1M tokens = hourly / "
            "(tokens/s x 3600 x utilization) x 1e6; $/successful request = hourly / (successful requests/s x 3600 x "
            "utilization). These price each stage's own requests, not the task."
        )
    )
    return out


def _telemetry_blocks(data: dict[str, Any]) -> list:
    """Memory, CPU, GPU and energy: the priced stage first."""
    runs = data["runs"]
    out: list = []
    out.append(Heading(2, "Telemetry"))
    out.append(
        Table(
            [
                "run",
                "stage",
                "engine peak RSS MiB",
                "engine CPU mean %",
                "client CPU mean %",
                "GPU peak memory MiB",
                "GPU util mean %",
                "GPU energy J/output token",
                "energy $/1M output tok",
            ],
            [
                [r["run_id"], s["label"], *_telemetry_cells(s["telemetry"]), _energy_text(r["cost"])]
                for r in runs
                for s in r["stages"]
                if s["stage"] == r["priced"]["stage"]
            ]
            + [
                [r["run_id"], s["label"], *_telemetry_cells(s["telemetry"]), "-"]
                for r in runs
                for s in r["stages"]
                if s["stage"] != r["priced"]["stage"]
            ],
        )
    )
    out.append(Figure("telemetry.png", "Telemetry over time."))
    return out


def _prices_blocks(data: dict[str, Any]) -> list:
    """Every price with its source and date, and how prices are aged."""
    cost = data["cost"]
    out: list = []
    out.append(Heading(2, SECTIONS["prices"]))
    rows = []
    for n, o in data["hardware_offers"].items():
        items = " + ".join(f"{i['item']} {money(i['per_hour'])}/h" for i in o["items"])
        lab = o["labour_item"]
        age = o["price_age"] or {}
        rows.append(
            [
                n,
                "hardware (owned)" if o.get("owned") else "hardware (rented)",
                f"{items}; labour {lab['hours_per_month']:g} h/month x ${lab['rate_per_hour']:g}/h = "
                f"{money(lab['per_hour'])}/h; instance {money(o['hourly'])}/h",
                o["source"],
                o["as_of"],
                age.get("note", "") + (" [STALE]" if age.get("stale") else ""),
            ]
        )
    for a in cost["apis"]:
        p = a["prices_per_1m"]
        price = f"${p['input']:g} in / ${p['output']:g} out per 1M"
        if p["cached_input"] is not None:
            price += f"; cached ${p['cached_input']:g}"
        if p["cache_write_input"] is not None:
            price += f"; cache write ${p['cache_write_input']:g}"
        if p["batch_input_discount"] or p["batch_output_discount"]:
            price += f"; batch -{p['batch_input_discount']:.0%} in / -{p['batch_output_discount']:.0%} out"
        for t in p["tiers"]:
            price += (
                f"; above {t['above_input_tokens']:,} prompt tokens ${t['input_per_1m']:g} in / "
                f"${t['output_per_1m']:g} out"
            )
        source = a["price_source"] + (f" (version {a['source_version']})" if a.get("source_version") else "")
        rows.append([a["name"], "API", price, source, a["as_of"] or "unknown", _flags(a, long=True)])
    out.append(Table(["offer", "kind", "price", "source", "as of", "age and flags"], rows))
    out.append(
        Paragraph(
            f"Prices are aged against {cost['today']}; older than {cost['stale_after_days']} days (--stale-after) or "
            "of unknown date is flagged STALE; a model past its deprecation date is flagged DEPRECATED and left out of "
            "the answer. Check each price against its source before a decision."
        )
    )
    return out


REPORT_SECTIONS = (
    _answer_blocks,
    _task_blocks,
    _self_hosted_blocks,
    _api_blocks,
    _break_even_blocks,
    _runs_blocks,
    _stages_blocks,
    _quality_blocks,
    _stage_costs_blocks,
    _telemetry_blocks,
    _prices_blocks,
)


def _flags(api: dict[str, Any], long: bool = False) -> str:
    flags = []
    age = api["price_age"]
    if long:
        flags.append(age["note"])
    if age["stale"]:
        flags.append("STALE")
    dep = api["deprecation"]
    if dep["note"]:
        flags.append(("DEPRECATED: " if dep["deprecated"] else "") + dep["note"])
    return "; ".join(flags) or "-"


def _rate(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _engine_text(engine: dict[str, Any]) -> str:
    name = engine.get("engine") or "endpoint"
    launcher = f" via {engine['launcher']}" if engine.get("launcher") else ""
    version = engine.get("version")
    if isinstance(version, dict):
        version = version.get("version") or (version.get("build_info") or {}).get("commit")
    return f"{name}{launcher}" + (f" {version}" if version and version != "unknown" else "")


def _gpus_text(gpus: int) -> str:
    return f"{gpus} GPU" if gpus else "CPU only"


def _hardware_text(hw: dict[str, Any]) -> str:
    gpus = hw.get("gpus") or []
    if gpus:
        return f"{len(gpus)}x {gpus[0].get('name')}"
    return f"CPU: {hw.get('cpu_model') or '?'}, {hw.get('cpus_usable') or '?'} cores"


def _energy_text(sh: dict[str, Any]) -> str:
    if sh.get("energy_per_1m_output_tokens") is not None:
        return f"{money(sh['energy_per_1m_output_tokens'])} at ${sh['electricity_per_kwh']:g}/kWh"
    if sh.get("energy_j_per_output_token") is None:
        return "not measured (no GPU energy counter)"
    return f"{sh['energy_j_per_output_token']:.3g} J/token; give --electricity-per-kwh to price it"


def _telemetry_cells(t: dict[str, Any]) -> list[str]:
    rss = t.get("engine_peak_rss_bytes")
    gpus = t.get("gpus") or []
    peaks = [g["memory_peak_bytes"] for g in gpus if g.get("memory_peak_bytes") is not None]
    gpu_peak = sum(peaks) if peaks else None
    util = [g.get("utilization_percent_mean") for g in gpus if g.get("utilization_percent_mean") is not None]
    energy = t.get("gpu_energy_j_per_output_token")
    return [
        "-" if rss is None else f"{rss / 2**20:,.0f}",
        _rate(t.get("engine_cpu_percent_mean"), 1),
        _rate(t.get("client_cpu_percent_mean"), 1),
        "-" if gpu_peak is None else f"{gpu_peak / 2**20:,.0f}",
        f"{sum(util) / len(util):.1f}" if util else "-",
        "-" if energy is None else f"{energy:.3g}",
    ]


def write_report(data: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json (the data), plots/*.png, report.md and a self-contained report.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = figures(data)
    report_data = {k: v for k, v in data.items() if k != "runs"}
    report_data["runs"] = [{k: v for k, v in r.items() if k not in ("summary", "telemetry")} for r in data["runs"]]
    write_json_atomic(out_dir / "report.json", public(report_data))
    return write_documents(blocks(data), pngs, out_dir, title="Self-hosted versus API: cost report")
