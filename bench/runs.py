"""Runs as data: one run directory as typed manifest and summary plus pandas DataFrames, and tables across
many runs (`bench runs`, `bench export`).

    run = bench.load_run("results/RUN")
    run.requests          # one row per request: the record's fields, plus ttft_ms, tpot_ms, e2e_ms
    run.stages            # one row per stage: the headline figures of summary.json
    run.telemetry         # one row per sample (GPU readings flattened as gpu<i>_<field>)
    run.manifest.spec     # the typed RunSpec it ran
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UsageError
from bench.metrics.requests import TableBuilder
from bench.records import Manifest
from bench.results import REQUESTS, RunDirectory
from bench.summary import RunSummary, StageSummary

NS_PER_MS = 1_000_000


@dataclass
class RunData:
    path: Path
    manifest: Manifest
    summary: RunSummary | None
    requests: pd.DataFrame
    telemetry: pd.DataFrame
    stages: pd.DataFrame


def requests_frame(run_dir: RunDirectory, run_id: str | None = None) -> pd.DataFrame:
    """requests.jsonl as a DataFrame (chunk times kept as a list column), with each request's latencies. A
    record with a field not of its type is the one-line error `bench summarize` gives for it."""
    rows = list(run_dir.request_rows())
    frame = pd.DataFrame.from_records(rows)
    if frame.empty:
        return frame
    try:
        frame = _with_latencies(frame)
    except (TypeError, ValueError, AttributeError):
        builder = TableBuilder()  # the first record of the wrong type, named as the metrics' reader names it
        for row in rows:
            builder.add_row(row)
        raise UsageError(
            f"{run_dir.file(REQUESTS)}: a record's field is not of its type; the file is damaged"
        ) from None
    if run_id is not None:
        frame.insert(0, "run_id", run_id)
    return frame


def _with_latencies(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ("t_send_ns", "t_end_ns", "t_intended_ns", "output_tokens", "prompt_tokens"):
        if column not in frame:
            frame[column] = np.nan
    times = frame["output_times_ns"] if "output_times_ns" in frame else pd.Series([[]] * len(frame))
    first = times.map(lambda t: t[0] if t else np.nan).astype(float)
    last = times.map(lambda t: t[-1] if t else np.nan).astype(float)
    frame["chunks"] = times.map(len)
    frame["ttft_ms"] = (first - frame["t_send_ns"]) / NS_PER_MS
    frame["e2e_ms"] = (frame["t_end_ns"] - frame["t_send_ns"]) / NS_PER_MS
    n = frame["output_tokens"].astype(float)
    frame["tpot_ms"] = ((last - first) / (n - 1) / NS_PER_MS).where(n >= 2)
    return frame


def telemetry_frame(run_dir: RunDirectory) -> pd.DataFrame:
    rows = []
    for row in map(asdict, run_dir.telemetry()):
        flat = {k: v for k, v in row.items() if k not in ("gpus", "engine_gauges")}
        for gpu in row.get("gpus") or ():
            flat.update({f"gpu{gpu['index']}_{k}": v for k, v in gpu.items() if k != "index"})
        flat.update({f"gauge_{k}": v for k, v in (row.get("engine_gauges") or {}).items()})
        rows.append(flat)
    return pd.DataFrame.from_records(rows)


def stage_row(stage: StageSummary) -> dict[str, Any]:
    return {
        "stage": stage.stage,
        "label": stage.label,
        "successful": stage.requests.successful,
        "failed": stage.requests.failed,
        "request_throughput_per_s": stage.request_throughput_per_s,
        "output_throughput_tokens_per_s": stage.output_throughput_tokens_per_s,
        "ttft_p50_ms": stage.ttft_ms.p50,
        "ttft_p99_ms": stage.ttft_ms.p99,
        "tpot_p50_ms": stage.tpot_ms.p50,
        "tpot_p99_ms": stage.tpot_ms.p99,
        "itl_p99_ms": stage.itl_ms.p99,
        "e2e_p99_ms": stage.e2e_ms.p99,
        "goodput_requests_per_s": stage.slo.goodput_requests_per_s if stage.slo else None,
        "slo_compliant": stage.slo.compliant if stage.slo else None,
        "engine_peak_rss_bytes": stage.telemetry.engine_peak_rss_bytes,
        "gpu_energy_j_per_output_token": stage.telemetry.gpu_energy_j_per_output_token,
    }


def run_identity(manifest: Manifest) -> dict[str, Any]:
    hardware = manifest.hardware
    gpus = [g.get("name") for g in hardware.gpus if g.get("name")]
    return {
        "run_id": manifest.run_id,
        "started_at": manifest.started_at,
        "status": manifest.status,
        "engine": manifest.engine_kind,
        "model": manifest.model.name if manifest.model else None,
        "hardware": ", ".join(gpus) if gpus else hardware.cpu_model,
    }


def load_run(path: str | Path) -> RunData:
    """One run directory: its typed manifest and summary, and its requests, telemetry and stages as tables."""
    run_dir = RunDirectory(Path(path))
    manifest = run_dir.manifest()
    summary = run_dir.summary() if run_dir.has_summary() else None
    stages = pd.DataFrame([run_identity(manifest) | stage_row(s) for s in (summary.stages if summary else [])])
    return RunData(run_dir.path, manifest, summary, requests_frame(run_dir), telemetry_frame(run_dir), stages)


def find_runs(paths: Iterable[Path]) -> list[RunDirectory]:
    """Run directories: each path is one, or a folder holding some (one level down)."""
    found = []
    for path in paths:
        run_dir = RunDirectory(path)
        if run_dir.exists():
            found.append(run_dir)
        elif path.is_dir():
            found += [RunDirectory(p) for p in sorted(path.iterdir()) if RunDirectory(p).exists()]
        else:
            raise UsageError(f"{path}: not a run directory (no manifest.json) nor a folder of them")
    return found


def runs_table(run_dirs: list[RunDirectory]) -> pd.DataFrame:
    """One row per run: id, date, engine, model, hardware, status, and the fastest stage's TTFT p99 and tok/s."""
    rows = []
    for run_dir in run_dirs:
        try:
            manifest = run_dir.manifest()
            summary = run_dir.summary() if run_dir.has_summary() else None
        except UsageError as exc:  # one damaged run is listed as such; the others still are
            rows.append({"run_id": run_dir.path.name, "started_at": "", "status": f"damaged: {exc}"})
            continue
        best = (
            max(
                (s for s in summary.stages if s.output_throughput_tokens_per_s),
                default=None,
                key=lambda s: s.output_throughput_tokens_per_s,
            )
            if summary
            else None
        )
        identity = run_identity(manifest)
        if summary is None:  # a finished run's figures are gone (or it is still running): its status alone misleads
            identity["status"] += "; no summary.json (bench summarize RUN --write)"
        rows.append(
            identity
            | {
                "stages": len(summary.stages) if summary else 0,
                "ttft_p99_ms": best.ttft_ms.p99 if best else None,
                "output_tokens_per_s": best.output_throughput_tokens_per_s if best else None,
            }
        )
    return pd.DataFrame(rows)


def export_table(run_dirs: list[RunDirectory], table: str) -> pd.DataFrame:
    """One table across runs: `stages` (headline figures per stage), `requests` or `telemetry` (every row)."""
    frames = []
    for run_dir in run_dirs:
        manifest = run_dir.manifest()
        if table == "stages":
            summary = run_dir.summary() if run_dir.has_summary() else None
            frames.append(
                pd.DataFrame([run_identity(manifest) | stage_row(s) for s in (summary.stages if summary else [])])
            )
        elif table == "requests":
            frames.append(requests_frame(run_dir, manifest.run_id))
        else:
            frame = telemetry_frame(run_dir)
            frame.insert(0, "run_id", manifest.run_id)
            frames.append(frame)
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_table(frame: pd.DataFrame, out: Path, fmt: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(out, index=False)
        return
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UsageError("--format parquet needs pyarrow: pip install pyarrow (or use --format csv)") from None
    frame.to_parquet(out, index=False)
