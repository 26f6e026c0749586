"""`bench matrix PLAN.yaml [--ray ADDRESS] [--resume]`: a benchmark matrix, here or on a Ray cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.console import say


def add_parser(sub) -> None:
    p = sub.add_parser(
        "matrix",
        help="run a benchmark matrix (axes x resources) here, one cell after another, or across a Ray cluster",
        description="Expand PLAN.yaml (a base run spec, axes whose values change it, the resources each cell "
        "needs; see examples/matrix-*.yaml) into cells, each a run spec run exactly as `bench run` would. Without "
        "--ray the cells run one after another on this machine; with --ray each cell is one Ray task scheduled "
        "onto a node that has its resources (no automatic retries: a retry is a new, recorded attempt). Writes "
        "results/<matrix_id>/: matrix.json (every cell and attempt), <cell>/ (its run directory), index.csv and "
        "index.parquet (one row per cell), report/ (latency-throughput and cost per cell against the API offers). "
        "Exit 0 when every cell completed, 4 when some failed (the others ran), 130 when interrupted.",
    )
    p.add_argument("plan", type=Path, metavar="PLAN.yaml", help="the matrix plan")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the cells on Ray: an existing cluster's address (auto, HOST:PORT, ray://HOST:10001), or "
        "`local` for a private Ray instance on this machine",
    )
    p.add_argument("--resume", action="store_true", help="run only the cells that are not complete yet")
    p.add_argument("--matrix-id", help="the matrix folder's name (default: the plan's matrix_id, else its file name)")


def cmd_matrix(args: argparse.Namespace) -> int:
    from bench.scale.matrix import run_matrix  # pandas, matplotlib and Ray: loaded by this verb only

    result = run_matrix(args.plan, args.ray, args.resume, args.matrix_id, say=say)
    counts = result.counts
    print(
        f"Matrix {result.state.matrix_id}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f"\nIndex        {result.files.get('index_parquet') or result.files.get('index_csv')}"
        + f"\nReport       {result.files.get('report_markdown')} (and report.html)"
        + f"\nState        {result.matrix_dir / 'matrix.json'}"
    )
    failed = [c for c in result.state.cells.values() if c.status != "complete"]
    for cell in failed:
        say(f"cell {cell.id} {cell.status}: {cell.reason}")
    if failed:
        again = f" --matrix-id {args.matrix_id}" if args.matrix_id else ""
        again += f" --ray {args.ray}" if args.ray else ""
        say(f"resume with: bench matrix {args.plan} --resume{again}")
    return result.exit_code
