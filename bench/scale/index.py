"""The matrix index: one row per cell (its axes, status, node and headline figures), written as index.csv
and, where pyarrow is installed, index.parquet (the same table). Built from matrix.json and each cell's
run directory with bench.runs' own row functions, so a cell's figures read as `bench runs` shows them.

Headline figures are the cell's fastest stage (highest output tokens/s), as in `bench runs`; every stage
of every cell is in the matrix report. `gpu_overlaps` checks, from the recorded attempts, that no two cells
ever held the same GPU of the same node at the same time.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.results import RunDirectory
from bench.runs import run_identity, stage_row, write_table

if TYPE_CHECKING:
    from bench.scale.state import MatrixState

INDEX_CSV, INDEX_PARQUET = "index.csv", "index.parquet"
FIXED = (
    "matrix_id",
    "cell",
    "cell_index",
    "status",
    "reason",
    "attempts",
    "run_status",
    "exit_code",
    "host",
    "ray_node_id",
    "gpu_ids",
    "started_at",
    "ended_at",
    "run_s",
    "hardware_offer",
    "run_dir",
)


def best_stage(summary):
    return max(
        (s for s in summary.stages if s.output_throughput_tokens_per_s),
        default=None,
        key=lambda s: s.output_throughput_tokens_per_s,
    )


def cell_rows(state: MatrixState, matrix_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for cs in sorted(state.cells.values(), key=lambda c: c.index):
        last = cs.attempts[-1] if cs.attempts else None
        row: dict[str, Any] = {
            "matrix_id": state.matrix_id,
            "cell": cs.id,
            "cell_index": cs.index,
        }
        for axis, label in cs.axes.items():
            row[axis if axis not in FIXED else f"axis:{axis}"] = label
        gpus = ((last.node.get("accelerator_ids") or {}).get("GPU") if last else None) or []
        row.update(
            status=cs.status,
            reason=cs.reason,
            attempts=len(cs.attempts),
            run_status=last.run_status if last else None,
            exit_code=last.exit_code if last else None,
            host=last.node.get("host") if last else None,
            ray_node_id=last.node.get("ray_node_id") if last else None,
            gpu_ids=",".join(map(str, gpus)) or None,
            started_at=last.started_at if last else None,
            ended_at=last.ended_at if last else None,
            run_s=last.run_s if last else None,
            hardware_offer=cs.hardware_offer,
            run_dir=last.run_dir if last else None,
        )
        run_dir = RunDirectory(matrix_dir / last.run_dir) if last and last.run_dir else None
        if run_dir is not None and run_dir.exists():
            manifest = run_dir.manifest()
            row |= {k: v for k, v in run_identity(manifest).items() if k not in ("status", "started_at")}
            summary = run_dir.summary() if run_dir.has_summary() else None
            if summary is not None:
                best = best_stage(summary)
                row["stages"] = len(summary.stages)
                row["requests_successful"] = summary.requests.successful
                row["requests_failed"] = summary.requests.failed
                msc = summary.slo.max_slo_compliant if summary.slo else None
                row["max_slo_compliant_requests_per_s"] = msc.request_throughput_per_s if msc else None
                if best is not None:
                    row |= {f"best_{k}" if k in ("stage", "label") else k: v for k, v in stage_row(best).items()}
        rows.append(row)
    return rows


def index_frame(state: MatrixState, matrix_dir: Path) -> pd.DataFrame:
    return pd.DataFrame(cell_rows(state, matrix_dir))


def write_index(state: MatrixState, matrix_dir: Path) -> dict[str, Path]:
    frame = index_frame(state, matrix_dir)
    files = {"index_csv": matrix_dir / INDEX_CSV}
    write_table(frame, files["index_csv"], "csv")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return files
    files["index_parquet"] = matrix_dir / INDEX_PARQUET
    write_table(frame, files["index_parquet"], "parquet")
    return files


def gpu_overlaps(state: MatrixState) -> list[str]:
    """Pairs of attempts that held the same GPU of the same node at overlapping times (there must be none)."""
    held: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    for cs in state.cells.values():
        for a in cs.attempts:
            gpus = (a.node.get("accelerator_ids") or {}).get("GPU") or []
            if not gpus or not a.started_at or not a.ended_at or not a.node.get("ray_node_id"):
                continue
            start = dt.datetime.fromisoformat(a.started_at).timestamp()
            end = dt.datetime.fromisoformat(a.ended_at).timestamp()
            for gpu in gpus:
                held.setdefault((a.node["ray_node_id"], str(gpu)), []).append((start, end, f"{cs.id}#{a.n}"))
    clashes = []
    for (node, gpu), spans in held.items():
        spans.sort()
        for i, (s2, e2, c2) in enumerate(spans):
            for _, e1, c1 in spans[:i]:
                if s2 < e1:
                    clashes.append(f"{c1} and {c2} both held GPU {gpu} of node {node[:8]} for {min(e1, e2) - s2:.3f} s")
    return clashes
