"""The `bench` command line: one subcommand per verb, each verb's arguments beside it in bench/cli/<verb>.py.

The command line only parses, builds what the verb needs (a run spec for `run`), calls the package and
prints; nothing below it reads argparse namespaces.
"""

from __future__ import annotations

import argparse
import os

from bench import __version__
from bench.cli import calibrate, check, matrix, pricing, runs
from bench.cli.common import Parser
from bench.cli.run import add_run_parser, cmd_run, exit_codes_help
from bench.console import say
from bench.errors import BenchError
from bench.run import EXIT_INTERRUPTED, Interrupted

COMMANDS = {
    "run": cmd_run,
    "eval": cmd_run,
    "summarize": runs.cmd_summarize,
    "runs": runs.cmd_runs,
    "export": runs.cmd_export,
    "calibrate": calibrate.cmd_calibrate,
    "cost": pricing.cmd_cost,
    "report": pricing.cmd_report,
    "compare": pricing.cmd_decision,
    "mdr": pricing.cmd_decision,
    "prices": pricing.cmd_prices,
    "models": pricing.cmd_models,
    "route": pricing.cmd_route,
    "check": check.cmd_check,
    "matrix": matrix.cmd_matrix,
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bench",
        description="Benchmark self-hosted LLM inference with real engines: latency, throughput, resources, cost.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=exit_codes_help(),
    )
    parser.add_argument("--version", action="version", version=f"selfhost-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_run_parser(sub, exit_codes_help())
    runs.add_parsers(sub)
    calibrate.add_parser(sub)
    pricing.add_parsers(sub)
    check.add_parser(sub)
    matrix.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except BenchError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    except (KeyboardInterrupt, Interrupted):
        say("interrupted")
        return EXIT_INTERRUPTED
