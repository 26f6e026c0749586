"""The matrix report: results/<matrix_id>/report/report.md, a self-contained report.html, plots/ and
report.json (every figure the documents show).

Sections: the cells (axes, status, node, attempts, reason); latency against throughput, every stage of every
cell, as a table and a plot (bench.report.plots.latency_throughput); cost per cell against the API offers:
for each cell that measured throughput and has a hardware offer, bench.cost.cost_report prices that cell
and every API offer for the cell's own task (its mean input and output tokens), giving $ per 1M tokens and
$ per task and per successful task on both sides; and every price with its source and date. The cost
figures are bench.cost's, unchanged; this module only lays them out per cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.catalog import load_catalog
from bench.cost import (
    CostError,
    PricingInputs,
    TaskProfile,
    cost_report,
    priced_throughput,
    public,
    with_measured_tokens,
)
from bench.report import plots
from bench.report.render import Figure, Heading, Paragraph, Table, write_documents
from bench.results import RunDirectory, write_json_atomic

if TYPE_CHECKING:
    from bench.scale.plan import ReportSettings
    from bench.scale.state import MatrixState

REPORT_DIR = "report"
PLOT = "latency_throughput.png"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _stage_view(stage) -> dict[str, Any]:
    return {
        "stage": stage.stage,
        "label": stage.label,
        "short": (stage.label or "").split(" ")[-1],
        "request_throughput_per_s": stage.request_throughput_per_s,
        "output_tokens_per_s": stage.output_throughput_tokens_per_s,
        "ttft_ms": stage.ttft_ms.model_dump(by_alias=True),
        "tpot_ms": stage.tpot_ms.model_dump(by_alias=True),
        "e2e_ms": stage.e2e_ms.model_dump(by_alias=True),
        "successful": stage.requests.successful,
        "failed": stage.requests.failed,
    }


def _cell_cost(cell_id: str, summary, offer_name: str, catalog, api_names: list[str], settings) -> dict[str, Any]:
    """bench.cost's report for one cell against the API offers, at the cell's own mean request."""
    measured = priced_throughput(summary)
    task = with_measured_tokens(
        TaskProfile(
            input_tokens=None,
            output_tokens=None,
            tasks_per_month=settings.tasks_per_month,
            utilization=settings.utilization,
        ),
        measured,
    )
    report = cost_report(
        [
            {
                "run_id": cell_id,
                "measured": measured,
                "offer_name": offer_name,
                "offer": catalog.hardware_offers[offer_name],
            }
        ],
        {n: catalog.api_offers[n] for n in api_names},
        PricingInputs(task=task),
        measured_from=cell_id,
    )
    tokens = (task.input_tokens or 0) + (task.output_tokens or 0)
    sh = report["self_hosted"][0]
    rows = [
        {
            "option": f"self-hosted on {offer_name}",
            "kind": "self-hosted",
            "per_1m_tokens": sh.get("per_1m_total_tokens"),
            "per_1m_output_tokens": sh.get("per_1m_output_tokens"),
            "per_task": sh.get("per_task"),
            "per_successful_task": sh.get("per_successful_task"),
            "source": sh.get("price_source"),
            "as_of": sh.get("as_of"),
        }
    ]
    for api in report["apis"]:
        per_attempt = api.get("per_attempt")
        rows.append(
            {
                "option": f"API {api['name']}",
                "kind": "api",
                "per_1m_tokens": per_attempt / tokens * 1e6 if per_attempt is not None and tokens else None,
                "per_1m_output_tokens": (api.get("prices_per_1m") or {}).get("output"),
                "per_task": api.get("per_task"),
                "per_successful_task": api.get("per_successful_task"),
                "source": api.get("price_source"),
                "as_of": api.get("as_of"),
            }
        )
    return {
        "task": {"input_tokens": task.input_tokens, "output_tokens": task.output_tokens},
        "priced_stage": sh.get("priced_stage"),
        "rows": rows,
        "cost_report": public(report),
    }


def matrix_data(state: MatrixState, matrix_dir: Path, settings: ReportSettings) -> dict[str, Any]:
    catalog, _ = load_catalog(settings.catalog)
    api_names = list(settings.api_offers) if settings.api_offers is not None else sorted(catalog.api_offers)
    cells = []
    for cs in sorted(state.cells.values(), key=lambda c: c.index):
        last = cs.attempts[-1] if cs.attempts else None
        view: dict[str, Any] = {
            "cell": cs.id,
            "axes": cs.axes,
            "status": cs.status,
            "reason": cs.reason,
            "attempts": len(cs.attempts),
            "host": last.node.get("host") if last else None,
            "ray_node_id": last.node.get("ray_node_id") if last else None,
            "hardware_offer": cs.hardware_offer,
            "stages": [],
            "cost": None,
            "cost_note": None,
        }
        run_dir = RunDirectory(matrix_dir / last.run_dir) if last and last.run_dir else None
        summary = run_dir.summary() if run_dir is not None and run_dir.has_summary() else None
        if summary is not None:
            view["stages"] = [_stage_view(s) for s in summary.stages]
        if cs.status != "complete" or summary is None:
            view["cost_note"] = f"not priced: the cell is {cs.status}"
        elif not cs.hardware_offer:
            view["cost_note"] = "not priced: no hardware_offer (give report.hardware_offer or one per axis value)"
        elif summary.pooling is not None:  # nothing generated: priced per 1M embedded tokens, not per task
            view["cost_note"] = (
                f"not priced here: an embeddings or rerank cell; `bench report {matrix_dir / last.run_dir} "
                f"--hardware-offer {cs.hardware_offer}` prices it per 1M embedded tokens"
            )
        else:
            try:
                view["cost"] = _cell_cost(cs.id, summary, cs.hardware_offer, catalog, api_names, settings)
            except CostError as exc:
                view["cost_note"] = f"not priced: {exc}"
        cells.append(view)
    return {
        "matrix_id": state.matrix_id,
        "settings": settings.model_dump(mode="json"),
        "api_offers": api_names,
        "cells": cells,
    }


def blocks(data: dict[str, Any], plot: bool = True) -> list:
    cells = data["cells"]
    axes = list(cells[0]["axes"]) if cells else []
    counts: dict[str, int] = {}
    for c in cells:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    out: list = [
        Heading(1, f"Matrix {data['matrix_id']}"),
        Paragraph(
            f"{len(cells)} cells: "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + f". Axes: {', '.join(axes) or 'none'}."
        ),
        Heading(2, "Cells"),
        Table(
            ["cell", *axes, "status", "node", "attempts", "reason"],
            [
                [
                    c["cell"],
                    *(c["axes"].get(a, "") for a in axes),
                    c["status"],
                    (c["host"] or "-") + (f" ({c['ray_node_id'][:8]})" if c["ray_node_id"] else ""),
                    str(c["attempts"]),
                    c["reason"] or "",
                ]
                for c in cells
            ],
        ),
        Heading(2, "Latency and throughput per cell"),
        Paragraph("Every stage of every cell; TTFT and TPOT percentiles of successful measured requests (ms)."),
        Table(
            [
                "cell",
                "stage",
                "req/s",
                "output tok/s",
                "TTFT p50",
                "TTFT p99",
                "TPOT p50",
                "TPOT p99",
                "E2E p99",
                "ok",
                "failed",
            ],
            [
                [
                    c["cell"],
                    s["label"] or str(s["stage"]),
                    _rate(s["request_throughput_per_s"]),
                    _rate(s["output_tokens_per_s"]),
                    _ms(s["ttft_ms"].get("p50")),
                    _ms(s["ttft_ms"].get("p99")),
                    _ms(s["tpot_ms"].get("p50")),
                    _ms(s["tpot_ms"].get("p99")),
                    _ms(s["e2e_ms"].get("p99")),
                    str(s["successful"]),
                    str(s["failed"]),
                ]
                for c in cells
                for s in c["stages"]
            ],
        ),
        *(
            [Figure(PLOT, "TTFT and TPOT (p50 solid, p99 dashed) against output throughput, one line per cell")]
            if plot
            else [Paragraph("No cell measured a stage, so there is no latency-throughput plot.")]
        ),
        Heading(2, "Cost per cell against the API offers"),
        Paragraph(
            f"Each cell is priced by bench.cost at {data['settings']['utilization']:.0%} utilization and "
            f"{data['settings']['tasks_per_month']:,.0f} tasks a month, for a task shaped like the cell's own mean "
            "request; each API offer is priced for the same task. $/1M tokens counts input and output tokens; an "
            "API's is its bill for one attempt over the attempt's tokens."
        ),
    ]
    rows = []
    for c in cells:
        if c["cost"] is None:
            rows.append([c["cell"], c["cost_note"] or "-", "", "", "", "", ""])
            continue
        task = c["cost"]["task"]
        shape = f"{task['input_tokens']:,.0f} in / {task['output_tokens']:,.0f} out"
        for r in c["cost"]["rows"]:
            rows.append(
                [
                    c["cell"],
                    r["option"],
                    shape,
                    _money(r["per_1m_tokens"]),
                    _money(r["per_1m_output_tokens"]),
                    _money(r["per_task"]),
                    _money(r["per_successful_task"]),
                ]
            )
    out.append(Table(["cell", "option", "task", "$/1M tokens", "$/1M output", "$/task", "$/successful task"], rows))
    prices = {}
    for c in cells:
        for r in (c["cost"] or {}).get("rows", []):
            prices[r["option"]] = (r["source"], r["as_of"])
    out.append(Heading(2, "Prices"))
    out.append(
        Table(["option", "source", "as of"], [[k, s or "-", d or "unknown"] for k, (s, d) in sorted(prices.items())])
    )
    return out


def write_matrix_report(state: MatrixState, matrix_dir: Path, settings: ReportSettings) -> dict[str, Path]:
    data = matrix_data(state, matrix_dir, settings)
    out_dir = matrix_dir / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [{"label": c["cell"], "stages": c["stages"]} for c in data["cells"] if c["stages"]]
    figures = {PLOT: plots.latency_throughput(runs)} if runs else {}
    write_json_atomic(out_dir / "report.json", data)
    paths = write_documents(blocks(data, bool(runs)), figures, out_dir, title=f"Matrix {data['matrix_id']}")
    files = {"report_json": out_dir / "report.json"}
    for name, path in paths.items():
        files[f"report_{name}"] = path
    return files
