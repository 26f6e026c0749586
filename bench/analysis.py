"""A run's derived figures: summary.json (and a golden run's eval.json) as a pure function of
requests.jsonl, telemetry.jsonl, engine-metrics.jsonl and the manifest's stages, SLOs and efficiency
inputs. `bench run` writes them with this at the end of a run; `bench summarize` recomputes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from bench.errors import UsageError
from bench.metrics.efficiency import efficiency
from bench.metrics.requests import (
    RequestTable,
    TableBuilder,
    confidence_intervals,
    max_slo_compliant,
    measured_window,
    slo_report,
    summarize_requests,
)
from bench.metrics.server import deltas
from bench.metrics.telemetry import summarize_telemetry
from bench.quality import evaluate, load_golden
from bench.records import EngineMetricsSnapshot, Manifest, RequestRecord, TelemetrySample
from bench.results import GOLDEN_COPY, RunDirectory, first_error
from bench.summary import RequestSummary, RunSlo, RunSummary, SearchResult, StageSummary, TelemetrySummary


@dataclass
class Analysis:
    summary: RunSummary
    evaluation: dict[str, Any] | None  # eval.json: {"summary": quality, "cases": verdicts}, golden runs only


def summarize_stage(
    table: RequestTable,
    index: int,
    manifest: Manifest,
    telemetry: list[TelemetrySample],
    engine_metrics: list[EngineMetricsSnapshot] | None = None,
) -> StageSummary:
    """One stage's figures from its records alone (and the manifest's definition of it)."""
    definition = next((s for s in manifest.stages if s.index == index), None)
    stage = StageSummary(
        stage=index,
        name=definition.name if definition else None,
        label=definition.label if definition else None,
        **dict(summarize_requests(table)),
        ci95=confidence_intervals(table),
    )
    stage.telemetry = summarize_telemetry(telemetry, stage.total_output_tokens, measured_window(table))
    inputs = manifest.efficiency_inputs
    if inputs.get("model_shape") and inputs.get("hardware_limits"):
        stage.efficiency = efficiency(table, inputs["model_shape"], inputs["hardware_limits"])
    if manifest.slo and manifest.slo.thresholds_ms:
        stage.slo = slo_report(table, manifest.slo.thresholds_ms, manifest.slo.percentile)
    snapshots = {
        row.when: {k: v for k, v in row.samples.items() if v is not None}  # a NaN reading tells nothing
        for row in engine_metrics or ()
        if row.stage == index
    }
    if "start" in snapshots and "end" in snapshots:
        stage.server = deltas(snapshots["start"], snapshots["end"])
    return stage


def summarize_run(
    table: RequestTable,
    telemetry: list[TelemetrySample],
    manifest: Manifest,
    engine_metrics: list[EngineMetricsSnapshot] | None = None,
) -> RunSummary:
    indices = sorted(set(np.unique(table.stage).tolist()) | {s.index for s in manifest.stages})
    stages = [summarize_stage(table.select(table.stage == i), i, manifest, telemetry, engine_metrics) for i in indices]
    if len(stages) == 1 and (table.stage == indices[0]).all():  # one stage holds every request: the same figures
        overall = RequestSummary(**{name: getattr(stages[0], name) for name in RequestSummary.model_fields})
    else:
        overall = summarize_requests(table)
    summary = RunSummary(**dict(overall), stages=stages, telemetry=run_telemetry(telemetry, stages))
    if manifest.search:
        summary.search = search_result(manifest, stages)
    if manifest.slo and manifest.slo.thresholds_ms:
        summary.slo = RunSlo(
            thresholds_ms=manifest.slo.thresholds_ms,
            percentile=manifest.slo.percentile,
            max_slo_compliant=max_slo_compliant(stages),
        )
    return summary


def search_result(manifest: Manifest, stages: list[StageSummary]) -> SearchResult:
    """A max-rate search from its stages: the highest rate that held its SLOs, and the lowest above it that failed."""
    rates = {s.index: s.schedule.get("rate") for s in manifest.stages}
    steps = [
        {"stage": s.stage, "rate": rates.get(s.stage), "compliant": bool(s.slo and s.slo.compliant)}
        for s in stages
        if rates.get(s.stage) is not None
    ]
    held = max((st["rate"] for st in steps if st["compliant"]), default=None)
    failed = min(
        (st["rate"] for st in steps if not st["compliant"] and (held is None or st["rate"] > held)), default=None
    )
    precision = manifest.search["precision"]
    reached = held is not None and (failed is None or (failed - held) / held <= precision)
    return SearchResult(
        found_rate=held,
        bracket=[held, failed],
        steps=steps,
        precision=precision,
        precision_reached=reached or (held is None and bool(steps)),
    )


def run_telemetry(telemetry: list[TelemetrySample], stages: list[StageSummary]) -> TelemetrySummary:
    """The run's telemetry over every sample (its peaks include the engine's load), but its J per output token
    the stages' measured energy over their tokens: the load's and the gaps' energy is no token's."""
    out = summarize_telemetry(telemetry)
    measured = [(s.telemetry.gpu_energy_j, s.total_output_tokens) for s in stages if s.telemetry.gpu_energy_j]
    tokens = sum(n or 0 for _, n in measured)
    if measured and tokens:
        out.gpu_energy_j_per_output_token = math.fsum(j for j, _ in measured) / tokens
    return out


def table_and_cases(rows: Iterable[Mapping[str, Any]], keep_cases: bool) -> tuple[RequestTable, list[RequestRecord]]:
    """One pass over the records: the table the metrics use and, for a golden run, the answered cases."""
    builder = TableBuilder()
    cases = []
    for number, row in enumerate(rows, start=1):
        builder.add_row(row)
        if keep_cases and row.get("case_id") is not None:
            try:
                cases.append(RequestRecord.from_row(row))
            except ValidationError as exc:
                raise UsageError(f"requests.jsonl, record {number}: {first_error(exc)}; the file is damaged") from None
    return builder.build(), cases


def analyse(run_dir: RunDirectory, manifest: Manifest | None = None) -> Analysis:
    """The summary and, for a golden run, each case's verdict, from one read of the raw files."""
    manifest = manifest or run_dir.manifest()
    golden = manifest.golden
    table, answered = table_and_cases(run_dir.request_rows(), golden)
    summary = summarize_run(table, run_dir.telemetry(), manifest, run_dir.engine_metrics())
    if not golden:
        return Analysis(summary, None)
    cases = load_golden(run_dir.file(GOLDEN_COPY))
    quality, verdicts = evaluate(answered, cases)
    workload = manifest.workload
    quality.golden = {
        "path": workload.path,
        "sha256": workload.sha256,
        "cases": quality.cases_in_set,  # the cases themselves; `prompts` counts their variants too
        "prompts": len(cases),
        "temperature": manifest.temperature,
        "seed": manifest.seed,
    }
    summary.quality = quality
    return Analysis(summary, {"summary": quality.model_dump(mode="json"), "cases": verdicts})


def same_figures(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Equal summaries, floats to `rel` (a recomputation may sum in another order than the one on disk)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_figures(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_figures(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
            return a == b
        return abs(a - b) <= rel * max(abs(a), abs(b)) or a == b
    return a == b
