"""`bench report RUN...`: the self-host-versus-API cost report, from run directories and catalog prices.

Every figure is computed here from the runs' summary.json, telemetry.jsonl and manifest.json with
bench.cost's formulas and kept in report.json; report.md and report.html are two renderings of the
same blocks (bench.report.render), so the documents cannot disagree with each other or with the data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.cost import (
    CostError,
    TaskProfile,
    cost_report,
    monthly_curve,
    offer_hourly,
    priced_throughput,
    stage_costs,
    with_measured_tokens,
)
from bench.errors import UsageError
from bench.format import money, tasks_per_month
from bench.records import TelemetrySample
from bench.report import plots
from bench.report.render import Figure, Heading, Paragraph, Table, write_documents
from bench.results import RunDirectory, write_json_atomic

PERCENTILES = ("p50", "p99")
TOKEN_MIX_TOLERANCE = 0.10  # a run whose mean task differs more than this from the priced task is flagged


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
    starts: dict[int, int] = {}
    for r in run_dir.request_rows():
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
    task: TaskProfile,
    electricity_per_kwh: float | None = None,
) -> dict[str, Any]:
    """The report's data: per run, its stages, its priced cost and its monthly curve; per API offer, its
    cost and break-even with each run. Token counts the task leaves unset are the first run's means."""
    if len(hardware_offer_names) not in (1, len(run_dirs)):
        raise UsageError(
            f"give --hardware-offer once (for every run) or once per run ({len(run_dirs)}), "
            f"not {len(hardware_offer_names)} times"
        )
    offers = hardware_offer_names * len(run_dirs) if len(hardware_offer_names) == 1 else hardware_offer_names
    api_offers = {n: catalog.api_offers[n] for n in api_offer_names}
    runs = [_run_view(RunDirectory(p)) for p in run_dirs]
    for run, offer_name in zip(runs, offers, strict=True):
        try:
            run["priced"] = priced_throughput(run["summary"])
        except CostError as exc:
            raise UsageError(f"{run['path']}: {exc}") from None
        run["hardware_offer"] = offer_name
    measured_from = runs[0]["run_id"] if task.input_tokens is None or task.output_tokens is None else None
    task = with_measured_tokens(task, runs[0]["priced"])
    warnings = []
    for run in runs:
        offer = catalog.hardware_offers[run["hardware_offer"]]
        try:
            run["cost"] = cost_report(
                run["priced"], run["hardware_offer"], offer, api_offers, task, electricity_per_kwh
            )
        except CostError as exc:
            raise UsageError(f"{run['path']}: {exc}") from None
        run["cost"]["self_hosted"]["gpus"] = offer.gpus
        mean_in, mean_out = run["priced"]["input_tokens_mean"], run["priced"]["output_tokens_mean"]
        for name, measured, priced in (("input", mean_in, task.input_tokens), ("output", mean_out, task.output_tokens)):
            if priced and abs(measured - priced) / priced > TOKEN_MIX_TOLERANCE:
                warnings.append(
                    f"{run['run_id']}: its mean {name} is {measured:,.0f} tokens, the priced task has "
                    f"{priced:,.0f}; its cost per task holds for its own workload, not the priced task"
                )
        if run["status"] != "complete":
            warnings.append(
                f"{run['run_id']}: the run is {run['status']} ({run['incomplete_reason'] or 'no reason'})"
                "; its figures cover only the requests that finished"
            )
    # the volume axis spans every break-even point and the stated volume, with a decade of margin
    anchors = [task.tasks_per_month or 1e6]
    anchors += [
        a["break_even_tasks_per_month"] for r in runs for a in r["cost"]["apis"] if a["break_even_tasks_per_month"]
    ]
    volumes = log_volumes(10 ** math.floor(math.log10(min(anchors)) - 1), 10 ** math.ceil(math.log10(max(anchors)) + 1))
    for run in runs:
        hourly, rps = run["cost"]["self_hosted"]["hourly"], run["priced"]["requests_per_s"]
        run["monthly_curve"] = monthly_curve(task, hourly, rps, volumes)
        run["stage_costs"] = stage_costs(run["summary"], hourly, task.utilization)
    return {
        "task": task.__dict__,
        "task_measured_from": measured_from,
        "volumes": volumes,
        "runs": runs,
        "warnings": warnings,
        "api_offers": {n: o.model_dump() for n, o in api_offers.items()},
        "hardware_offers": {
            n: {**catalog.hardware_offers[n].model_dump(), "hourly": offer_hourly(catalog.hardware_offers[n])}
            for n in sorted(set(offers))
        },
    }


def blended_per_million(per_task_cost: float, task: dict[str, Any]) -> float:
    """$ per 1M tokens at the task's own mix of input and output."""
    return per_task_cost / (task["input_tokens"] + task["output_tokens"]) * 1e6


def figures(data: dict[str, Any]) -> dict[str, bytes]:
    runs, task = data["runs"], data["task"]
    bars = [
        {
            "label": f"self-hosted: {r['run_id']} on {r['hardware_offer']}",
            "kind": "self-hosted",
            "value": blended_per_million(r["cost"]["self_hosted"]["per_task"], task),
        }
        for r in runs
    ]
    first = runs[0]["cost"]
    bars += sorted(
        (
            {"label": f"API: {a['offer']}", "kind": "api", "value": blended_per_million(a["per_task"], task)}
            for a in first["apis"]
        ),
        key=lambda b: b["value"],
    )
    apis = []
    for api in first["apis"]:
        line = [api["per_task"] * v for v in data["volumes"]]
        be = api["break_even_tasks_per_month"]
        points = [{"volume": be, "monthly": api["per_task"] * be}] if be else []
        apis.append({"label": api["offer"], "monthly": line, "break_even": points})
    self_hosted = [{"label": f"{r['run_id']} on {r['hardware_offer']}", "monthly": r["monthly_curve"]} for r in runs]
    return {
        "latency_throughput.png": plots.latency_throughput(runs),
        "cost_per_1m_tokens.png": plots.cost_per_million(bars),
        "monthly_cost.png": plots.monthly_cost(data["volumes"], self_hosted, apis),
        "telemetry.png": plots.telemetry(runs),
    }


def blocks(data: dict[str, Any]) -> list:
    """The report's content, in order, as blocks both renderers understand."""
    task, runs = data["task"], data["runs"]
    u = task["utilization"]
    out: list = [Heading(1, "Self-hosted versus API: cost report")]
    source = f"measured: the mean of run {data['task_measured_from']}" if data["task_measured_from"] else "given"
    out.append(
        Paragraph(
            f"Task: {task['input_tokens']:,.0f} input + {task['output_tokens']:,.0f} output tokens ({source}); "
            f"{task['tasks_per_month']:,.0f} tasks/month, peak-to-average {task['peak_to_average']:g}, "
            f"target utilization {u:.0%}. A rented machine costs every hour whether busy or not, so self-hosted costs "
            f"are at {u:.0%} utilization; the API is billed per token."
        )
    )
    for warning in data["warnings"]:
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

    out.append(Heading(2, "Self-hosted cost"))
    rows = []
    for r in runs:
        p, sh = r["priced"], r["cost"]["self_hosted"]
        ci = sh.get("per_1m_output_tokens_ci95")
        rows.append(
            [
                r["run_id"],
                f"{p['label']} ({p['basis']})",
                f"{p['requests_per_s']:.3f}",
                f"{p['output_tokens_per_s']:,.1f}",
                f"{sh['offer']} ({_gpus_text(sh['gpus'])}) {money(sh['hourly'])}/h",
                money(sh["per_1m_output_tokens"]) + (f" ({money(ci[0])}-{money(ci[1])})" if ci else ""),
                money(sh["per_1m_total_tokens"]),
                money(sh["per_task"]),
                money(sh["per_successful_task"]),
                f"{p['success_rate']:.1%}",
                _energy_text(sh),
            ]
        )
    out.append(
        Table(
            [
                "run",
                "priced stage",
                "req/s",
                "output tok/s",
                "hardware offer",
                "$/1M output tok (95% CI)",
                "$/1M total tok",
                "$/task",
                "$/successful task",
                "success rate",
                "energy $/1M output tok",
            ],
            rows,
        )
    )
    out.append(
        Paragraph(
            "$/1M tokens = hourly price / (tokens per second x 3600 x utilization) x 1e6; $/task uses requests per "
            "second the same way; $/successful task = $/task / success rate, the cost with every failed request or "
            "failed check retried: "
            + "; ".join(f"{r['run_id']} {_retry_text(r)}" for r in runs)
            + ". The 95% interval comes from the bootstrap interval of the priced stage's output throughput."
        )
    )
    out.append(
        Table(
            ["run", "stage", "req/s", "$/1M output tok", "$/1M total tok", "$/task"],
            [
                [
                    r["run_id"],
                    s["label"],
                    _rate(s["requests_per_s"]),
                    money(s["per_1m_output_tokens"]),
                    money(s["per_1m_total_tokens"]),
                    money(s["per_task"]),
                ]
                for r in runs
                for s in r["stage_costs"]
            ],
        )
    )
    levels = list(runs[0]["cost"]["self_hosted"]["per_task_by_utilization"])
    out.append(
        Table(
            ["run", *(f"$/task at {lv}" for lv in levels)],
            [
                [r["run_id"], *(money(v) for v in r["cost"]["self_hosted"]["per_task_by_utilization"].values())]
                for r in runs
            ],
        )
    )
    out.append(Figure("cost_per_1m_tokens.png", "Cost per 1M tokens at the task's input/output mix."))

    out.append(Heading(2, "Against API offers"))
    if not runs[0]["cost"]["apis"]:
        out.append(
            Paragraph("No API offers to compare with: add api_offers to models.yaml or run `bench prices import`.")
        )
    for r in runs:
        sh = r["cost"]["self_hosted"]
        out.append(
            Paragraph(
                f"{r['run_id']} on {sh['offer']}: {sh['instances']} instance(s) serve "
                f"{task['tasks_per_month']:,.0f} tasks/month for {money(sh['monthly'])}/month."
            )
        )
        if r["cost"]["apis"]:
            out.append(
                Table(
                    [
                        "API offer",
                        "$/task",
                        "$/month",
                        "break-even tasks/month",
                        "break-even at API price -50%",
                        "at +50%",
                        "break-even at 10% utilization",
                        "at 90%",
                    ],
                    [
                        [
                            a["offer"],
                            money(a["per_task"]),
                            money(a["monthly"]),
                            tasks_per_month(a["break_even_tasks_per_month"]),
                            tasks_per_month(a["break_even_by_price"]["-50%"]),
                            tasks_per_month(a["break_even_by_price"]["+50%"]),
                            tasks_per_month(a["break_even_by_utilization"]["10%"]),
                            tasks_per_month(a["break_even_by_utilization"]["90%"]),
                        ]
                        for a in r["cost"]["apis"]
                    ],
                )
            )
    out.append(
        Paragraph(
            "Self-hosting is a step function: instances = ceil(peak rate / (measured req/s x utilization)). "
            "The API is linear. Break-even is the volume where the API's monthly bill reaches one instance's; "
            "'never' means the API costs less per task than a fully used instance."
        )
    )
    out.append(Figure("monthly_cost.png", "Monthly cost against tasks per month, with break-even points."))

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
            ],
            [[r["run_id"], s["label"], *_telemetry_cells(s["telemetry"])] for r in runs for s in r["stages"]],
        )
    )
    out.append(Figure("telemetry.png", "Telemetry over time."))

    out.append(Heading(2, "Prices used (source and date)"))
    rows = [
        [
            n,
            "hardware",
            f"{money(o['hourly'])}/h" + (" (owned, amortized)" if o.get("owned") else ""),
            o["source"],
            o["as_of"],
        ]
        for n, o in data["hardware_offers"].items()
    ]
    rows += [
        [n, "API", f"${o['input_per_1m']:g} in / ${o['output_per_1m']:g} out per 1M", o["source"], o["as_of"]]
        for n, o in data["api_offers"].items()
    ]
    out.append(Table(["offer", "kind", "price", "source", "as of"], rows))
    out.append(Paragraph("Prices move: check each against its source before a decision."))
    return out


def _rate(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _engine_text(engine: dict[str, Any]) -> str:
    name = engine.get("engine") or "endpoint"
    launcher = f" via {engine['launcher']}" if engine.get("launcher") else ""
    version = engine.get("version")
    if isinstance(version, dict):
        version = version.get("version") or (version.get("build_info") or {}).get("commit")
    return f"{name}{launcher}" + (f" {version}" if version and version != "unknown" else "")


def _retry_text(run: dict[str, Any]) -> str:
    p, retry = run["priced"], run["cost"]["self_hosted"]["retry_rate"]
    basis = p.get("success_basis", "requests that succeeded")
    if retry is None:
        return "had no success to price"
    return f"{retry:.2f} retries per task (success rate {p['success_rate']:.1%}, {basis}, measured)"


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
    write_json_atomic(out_dir / "report.json", report_data)
    return write_documents(blocks(data), pngs, out_dir, title="Self-hosted versus API: cost report")
