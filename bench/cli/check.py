"""`bench check RUN --baseline BASELINE_RUN`: the CI gate (bench.check has the method)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.check import (
    DEFAULT_TOLERANCES,
    MAX_CONTENTION,
    MIN_TAIL,
    RESAMPLES,
    SATURATED,
    check,
    junit_xml,
    markdown_report,
    parse_tolerances,
    text_report,
)
from bench.cli.common import fraction, output_file
from bench.console import say
from bench.errors import UsageError
from bench.results import write_atomic
from bench.spec import parse_slo

DESCRIPTION = f"""\
Compare a run with a baseline run of the same workload and fail on a regression: the gate for CI.

A metric regresses only when its change is worse than its tolerance AND statistically clear. Latency
(ttft/tpot/e2e at p50, p90, p95, p99, p99.9 or mean) and output tok/s: the 95% interval of the relative
change must lie entirely on the worse side. A percentile's: the bootstrap of the per-request values
({RESAMPLES} independent block resamples of each run, from a fixed seed; expanded at small n, where the
plain percentile interval is too narrow). A mean's, output tok/s over the stage's ten time slices included:
Welch's t on the log of the ratio, each run's variance the larger of the independent-values formula and the
bootstrap's. A bootstrap of the difference, not a rank test, because the tolerance is on a percentile: the
bootstrap tests the very figure that is gated, whatever its distribution, while a rank test (Mann-Whitney)
asks whether the whole distribution shifted, misses a p99 that regresses with the ranks barely moving, and
calls a 1% median shift significant over enough requests. Error rate: Newcombe's interval of the difference.
Two golden runs: their cases are paired and the success rate and invalid-output rate are judged by the exact
McNemar test (p < 0.05), with the cases that went from pass to fail and back listed.

The interval covers the spread between requests of each run, not the drift between two runs of one setup on
a busy machine: the tolerances absorb that, so size them from repeated identical runs on your CI machine
(scripts/check_false_alarms.py measures the false-alarm rate).

Timing is only judged on a machine with cores to spare: from each run's telemetry over the measured window,
how busy the machine was and how much of it other processes used (system CPU - the engine's processes - the
rig's client). When it was saturated (>= {SATURATED:.0%} busy) with other processes on more than
--max-contention of its CPUs (default {MAX_CONTENTION:g}) in either run, latency and throughput are shown but
"not judged" (a JUnit skip; exit 0 unless something else fails). On the shared 2-core development VM, TPOT p50
of one setup ranged 53-125 ms in such runs and 52-57 ms in runs with CPU to spare. A percentile is judged only
when at least {MIN_TAIL} requests of each run lie above it (p99 from 500 requests): below that it is about the
slowest request ("too few requests").

Default tolerances: {DEFAULT_TOLERANCES.replace(",", ", ")}.
--tolerance replaces the named ones (METRIC=off turns one off) and keeps the rest.

Warns when the runs differ in engine (kind, launcher, version, settings), model (name, digest), hardware,
request counts or seed; refuses (exit 2) runs of different workloads (prompt lengths or prompt file / golden
set, prefixes, turns, API, EOS handling, temperature, stage schedules) unless --allow-different-workload.

Exit codes: 0 pass, 1 a regression or a failed gate, 2 bad input (a folder that is no run, different
workloads, a bad flag).

Example (the one-line CI gate):
  bench check results/ci-run --baseline baseline/ci-run --junit check.xml --markdown "$GITHUB_STEP_SUMMARY"
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check",
        help="CI gate: compare a run with a baseline run; exit 1 on a clear regression past its tolerance",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, metavar="RUN", help="the run to check")
    p.add_argument("--baseline", type=Path, required=True, metavar="BASELINE_RUN", help="the run to compare against")
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=AMOUNT,...",
        help="how much worse each metric may get: ttft_p99=+10%%,tpot_p50=+5%%,output_tok_s=-5%%,success_rate=-2pp "
        "(relative %% for latency and throughput, percentage points for rates; METRIC=off to skip one); "
        "repeatable; the metrics not named keep their defaults",
    )
    p.add_argument(
        "--slo",
        metavar="METRIC=LIMIT,...",
        help="absolute gate on the run: ttft=500ms,tpot=50ms,itl=200ms,e2e=10s met at --slo-percentile in every stage",
    )
    p.add_argument(
        "--slo-percentile",
        type=float,
        default=99.0,
        help="the percentile the SLOs must hold at (default 99; a failed request counts as infinitely slow)",
    )
    p.add_argument(
        "--max-error-rate",
        type=fraction,
        metavar="FRACTION",
        help="absolute gate: at most this share of a stage's finished requests may fail (0.01 = 1%%)",
    )
    p.add_argument(
        "--max-contention",
        type=_contention,
        default=MAX_CONTENTION,
        metavar="SHARE|off",
        help=f"do not judge timing when, in either run, the machine was saturated (>= {SATURATED * 100:g}%% busy) "
        f"with other processes on more than this share of its CPUs (default {MAX_CONTENTION:g}); off: judge it "
        "regardless",
    )
    p.add_argument(
        "--allow-different-workload",
        action="store_true",
        help="compare runs of different workloads anyway (each difference is listed as a warning)",
    )
    p.add_argument(
        "--junit", type=output_file, metavar="FILE", help="write JUnit XML here (one test case per metric, gate)"
    )
    p.add_argument(
        "--markdown",
        type=output_file,
        metavar="FILE",
        help="write a Markdown summary here (appended when the file exists, as $GITHUB_STEP_SUMMARY expects)",
    )


def _contention(text: str) -> float | None:
    if text == "off":
        return None
    return fraction(text)


def cmd_check(args) -> int:
    tolerances = parse_tolerances(",".join(args.tolerance))
    try:
        slo = parse_slo(args.slo) if args.slo else None
    except ValueError as exc:
        raise UsageError(f"--slo {exc}") from None
    if not 0 < args.slo_percentile <= 100:
        raise UsageError(f"--slo-percentile {args.slo_percentile:g}: give a percentile in (0, 100]")
    result = check(
        args.run_dir,
        args.baseline,
        tolerances,
        slo=slo,
        slo_percentile=args.slo_percentile,
        max_error_rate=args.max_error_rate,
        allow_different_workload=args.allow_different_workload,
        max_contention=args.max_contention,
    )
    print(text_report(result))
    for path in (args.junit, args.markdown):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    if args.junit:
        write_atomic(args.junit, junit_xml(result))
        say(f"JUnit XML: {args.junit}")
    if args.markdown:
        text = markdown_report(result)
        if args.markdown.exists() and args.markdown.is_file():
            with args.markdown.open("a+b") as handle:  # a CI job summary gathers several steps
                size = handle.seek(0, os.SEEK_END)
                if size:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        text = "\n" + text  # the heading starts a line of its own
                handle.write(text.encode())  # append mode: at the end, wherever the file was read
        else:
            write_atomic(args.markdown, text)
        say(f"Markdown summary: {args.markdown}")
    return result.exit_code
