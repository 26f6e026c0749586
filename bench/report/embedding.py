"""`bench report` of embeddings and rerank runs: their own table and cost per 1M embedded tokens.

A pooling run generates nothing, so the generation report (TTFT, TPOT, cost per task) does not describe it.
This one leads with the answer (self-hosted $ per 1M embedded tokens at each run's fastest stage against each
API embedding offer), then one row per stage of every run (batch size, streams or rate, inputs/s, tokens/s,
end-to-end latency percentiles, the engine's peak memory: VRAM on a GPU, else RSS, with $ per 1M tokens at
that stage), a plot of tokens/s against batch size, and every price with its source and date. Every figure
comes from summary.json and bench.cost.embedding_cost, the same as `bench cost` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.cost import embedding_cost, public
from bench.format import money
from bench.report.render import Figure, Heading, Paragraph, Table, write_documents
from bench.results import RunDirectory, write_json_atomic
from bench.summary import RunSummary

TITLE = "Embeddings: self-hosted versus API, per 1M embedded tokens"


def is_pooling_run(summary: RunSummary) -> bool:
    return summary.pooling is not None


def _memory(telemetry) -> str:
    for gpu in telemetry.gpus or ():
        peak = gpu.engine_memory_peak_bytes if gpu.engine_memory_peak_bytes is not None else gpu.memory_peak_bytes
        if peak is not None:
            return f"{peak / 2**30:,.2f} GiB VRAM"
    rss = telemetry.engine_peak_rss_bytes
    return "-" if rss is None else f"{rss / 2**20:,.0f} MiB RSS"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def build_embedding_report(
    run_dirs: list[Path], hardware_offers: list[str], catalog, api_names: list[str], pricing
) -> dict[str, Any]:
    """Each run's stages and its cost per 1M embedded tokens against the API embedding offers."""
    runs = []
    for path, offer_name in zip(run_dirs, hardware_offers, strict=True):  # one offer per run
        run_dir = RunDirectory(path)
        summary, manifest = run_dir.summary(), run_dir.manifest()
        cost = embedding_cost(
            summary,
            offer_name,
            catalog.hardware_offers[offer_name],
            {n: catalog.api_offers[n] for n in api_names},
            pricing.task.utilization,
            pricing.today,
            pricing.stale_after,
        )
        stages = []
        for stage in summary.stages:
            pool = stage.pooling
            priced = next((s for s in cost["stages"] if s["stage"] == stage.stage), None)
            stages.append(
                {
                    "stage": stage.stage,
                    "label": stage.label,
                    "ok": stage.requests.successful,
                    "failed": stage.requests.failed,
                    "batch_size": pool.batch_size.mean if pool else None,
                    "inputs_per_s": pool.inputs_per_s if pool else None,
                    "tokens_per_s": pool.tokens_per_s if pool else None,
                    "e2e_ms": {k: stage.e2e_ms.at(k) for k in ("p50", "p90", "p99")},
                    "ms_per_input_p50": pool.ms_per_input.p50 if pool else None,
                    "memory": _memory(stage.telemetry),
                    "per_1m_tokens": priced["per_1m_tokens"] if priced else None,
                }
            )
        runs.append(
            {
                "run_id": manifest.run_id,
                "path": str(path),
                "model": manifest.spec.model if manifest.spec else None,
                "engine": manifest.engine_kind,
                "launcher": manifest.engine.launcher if manifest.engine else None,
                "api": manifest.api,
                "status": manifest.status,
                "dimensions": summary.pooling.dimensions if summary.pooling else None,
                "tokens_source": summary.tokens_source,
                "stages": stages,
                "cost": cost,
            }
        )
    warnings = sorted(
        {
            f"price of {a['name']} ({a['price_source']}, as of {a['as_of'] or 'unknown'}): {a['price_age']['note']}"
            for run in runs
            for a in [{"name": run["cost"]["hardware_offer"], **run["cost"]}, *run["cost"]["apis"]]
            if a["price_age"]["stale"]
        }
    )
    warnings += [f"{r['run_id']}: the run is {r['status']}" for r in runs if r["status"] != "complete"]
    return {
        "kind": "embedding",
        "runs": runs,
        "api_offers": api_names,
        "today": pricing.today.isoformat(),
        "warnings": warnings,
    }


def blocks(data: dict[str, Any]) -> list:
    out: list = [Heading(1, TITLE), Heading(2, "Answer")]
    for run in data["runs"]:
        cost, best = run["cost"], run["cost"]["priced_stage"]
        out.append(
            Paragraph(
                f"{run['model']} on {run['engine']} ({run['launcher']}), run {run['run_id']}: self-hosted on "
                f"{cost['hardware_offer']} costs {money(best['per_1m_tokens'])} per 1M embedded tokens at its "
                f"fastest stage ({best['label']}: {best['tokens_per_s']:,.0f} tokens/s, utilization "
                f"{cost['utilization']:.0%}). "
                + " ".join(
                    f"{a['name']}: {money(a['per_1m_tokens'])} per 1M"
                    + (f" (self-hosted {a['self_hosted_ratio']:.2g}x)" if a["self_hosted_ratio"] is not None else "")
                    + "."
                    for a in cost["apis"]
                )
            )
        )
    out.append(Heading(2, "Stages"))
    headers = ["run", "stage", "ok", "fail", "batch", "inputs/s", "tokens/s", "E2E p50 ms", "E2E p90 ms"]
    headers += ["E2E p99 ms", "ms/input p50", "memory", "$/1M tokens"]
    rows = []
    for run in data["runs"]:
        for s in run["stages"]:
            rows.append(
                [
                    run["run_id"],
                    f"{s['stage']} {s['label']}",
                    str(s["ok"]),
                    str(s["failed"]),
                    "-" if s["batch_size"] is None else f"{s['batch_size']:g}",
                    "-" if s["inputs_per_s"] is None else f"{s['inputs_per_s']:,.1f}",
                    "-" if s["tokens_per_s"] is None else f"{s['tokens_per_s']:,.0f}",
                    _ms(s["e2e_ms"]["p50"]),
                    _ms(s["e2e_ms"]["p90"]),
                    _ms(s["e2e_ms"]["p99"]),
                    _ms(s["ms_per_input_p50"]),
                    s["memory"],
                    money(s["per_1m_tokens"]),
                ]
            )
    out.append(Table(headers, rows))
    out.append(
        Paragraph(
            "Latency is end to end (the answers are not streamed). tokens/s: tokens embedded (or scored) per second, "
            "from the server's usage where it reports one. $/1M tokens = instance $/h / (tokens/s x 3600 x "
            "utilization) x 1e6."
        )
    )
    if any(len(run["stages"]) > 1 for run in data["runs"]):
        out.append(Figure("embedding-throughput.png", "Embedded tokens/s by stage (batch size and streams)"))
    out.append(Heading(2, "Prices used"))
    price_rows: list[list[str]] = []  # each offer once: runs on different hardware each bring their own
    for run in data["runs"]:
        hw = run["cost"]
        age = hw["price_age"]["note"] if hw["price_age"]["stale"] else "current"
        rows = [[hw["hardware_offer"], f"${hw['instance_hourly']:,.4g}/h", hw["price_source"], hw["as_of"], age]]
        for a in run["cost"]["apis"]:
            age = a["price_age"]["note"] if a["price_age"]["stale"] else "current"
            rows.append(
                [a["name"], f"{money(a['per_1m_tokens'])}/1M tokens", a["price_source"], a["as_of"] or "unknown", age]
            )
        price_rows += [row for row in rows if row not in price_rows]
    out.append(Table(["offer", "price", "source", "as of", "age"], price_rows))
    return out


def figures(data: dict[str, Any]) -> dict[str, bytes]:
    if not any(len(run["stages"]) > 1 for run in data["runs"]):
        return {}
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for run in data["runs"]:
        labels = [s["label"] for s in run["stages"]]
        values = [s["tokens_per_s"] or 0 for s in run["stages"]]
        names = labels if len(data["runs"]) == 1 else [f"{run['run_id']}: {label}" for label in labels]
        ax.bar(names, values)
    ax.set_ylabel("embedded tokens/s")
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return {"embedding-throughput.png": buffer.getvalue()}


def write_embedding_report(data: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "report.json", public(data))
    return write_documents(blocks(data), figures(data), out_dir, title=TITLE)
