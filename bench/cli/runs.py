"""`bench summarize`, `bench runs` and `bench export`: run directories read back, recomputed and tabled."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.analysis import analyse, same_figures
from bench.cli.common import output_file
from bench.cli.run import result_table
from bench.console import say
from bench.errors import UsageError
from bench.format import quality_lines, search_line
from bench.results import EVAL, RunDirectory, write_json_atomic
from bench.run import RunResult

EXPORT_TABLES = ("stages", "requests", "telemetry")


def add_parsers(sub) -> None:
    summ = sub.add_parser(
        "summarize",
        help="recompute a run's summary from requests.jsonl and telemetry.jsonl",
        description="Recompute summary.json from the raw records and print it; says whether it "
        "matches the summary.json on disk (floats to 1e-9 relative: a recomputation may sum in "
        "another order).",
    )
    summ.add_argument("run_dir", type=Path, help="a run directory written by `bench run`")
    summ.add_argument("--write", action="store_true", help="replace summary.json with the recomputed summary")

    runs = sub.add_parser(
        "runs",
        help="list the runs in a folder as a table",
        description="One line per run directory in DIR (default results/): id, date, engine, "
        "model, hardware, status, and its fastest stage's TTFT p99 and output tok/s.",
    )
    runs.add_argument("dirs", type=Path, nargs="*", metavar="DIR", help="folders of runs, or run directories")

    export = sub.add_parser(
        "export",
        help="write one table (Parquet or CSV) across many runs",
        description="Write one table across run directories: `stages` (a row per stage with "
        "its headline figures and the run's engine, model and hardware), `requests` (every "
        "request record, with its TTFT, TPOT and E2E) or `telemetry` (every sample). Parquet "
        "needs pyarrow. In Python: bench.load_run(path) gives the same as DataFrames.",
    )
    export.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run directories, or folders of them")
    export.add_argument("--table", choices=EXPORT_TABLES, default="stages", help="which table (default stages)")
    export.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="file format (default parquet)")
    export.add_argument("-o", "--out", type=output_file, required=True, metavar="FILE", help="where to write the table")


def cmd_summarize(args: argparse.Namespace) -> int:
    run_dir = RunDirectory(args.run_dir)
    manifest = run_dir.manifest()
    analysis = analyse(run_dir, manifest)
    recomputed = analysis.summary
    damaged = None
    try:
        on_disk = run_dir.summary() if run_dir.has_summary() else None
    except UsageError as exc:  # the recomputation is what repairs it
        on_disk, damaged = None, str(exc)
    if args.write:
        run_dir.write_summary(recomputed)
        if analysis.evaluation is not None:
            write_json_atomic(run_dir.file(EVAL), analysis.evaluation)
    heading = f"Run {manifest.run_id}: {manifest.status} (recomputed from raw records)"
    print(result_table(RunResult(run_dir, manifest, recomputed, exit_code=0), heading))
    if recomputed.quality:
        print(quality_lines(recomputed.quality, str(run_dir.file(EVAL))))
    if recomputed.search:
        print(search_line(recomputed.search))
    if damaged:
        say(f"summary.json: damaged ({damaged})" + (", replaced" if args.write else "; --write to replace it"))
    elif on_disk is None:
        say("summary.json: missing" + (", written" if args.write else "; --write to create it"))
    elif same_figures(on_disk.to_json(), recomputed.to_json()):
        say("summary.json: matches the recomputation")
    else:
        say(
            "summary.json: differs from the recomputation" + (", replaced" if args.write else "; --write to replace it")
        )
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from bench.runs import find_runs, runs_table

    run_dirs = find_runs(args.dirs or [Path("results")])
    table = runs_table(run_dirs)
    if table.empty:
        say(f"no runs in {', '.join(str(d) for d in args.dirs or ['results'])}")
        return 0
    table["started_at"] = table["started_at"].str.slice(0, 16).str.replace("T", " ")
    print(table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:,.1f}"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bench.runs import export_table, find_runs, write_table

    run_dirs = find_runs(args.runs)
    frame = export_table(run_dirs, args.table)
    if frame.empty:  # an empty file would pass for a table
        raise UsageError(
            f"no {args.table} rows in {len(run_dirs)} run(s) under {', '.join(map(str, args.runs))}: nothing written"
        )
    write_table(frame, args.out, args.format)
    say(f"{len(frame)} row(s) of {args.table} from {len(run_dirs)} run(s) written to {args.out}")
    return 0
