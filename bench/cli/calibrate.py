"""`bench calibrate`: the load generator's own timing error, against a loopback server with known timing."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from bench.calibrate import SHAPES, WITHIN_MS, Shape, calibrate
from bench.cli.common import positive_int
from bench.cli.run import BUSY_POLL_HELP
from bench.clients.http import HttpClient
from bench.console import say
from bench.errors import UsageError
from bench.hardware import inventory, software
from bench.results import RunDirectory, write_json_atomic


def _streams(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma-separated list of numbers, e.g. 1,64,256"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every stream count must be at least 1")
    return values


def add_parser(sub) -> None:
    cal = sub.add_parser(
        "calibrate",
        help="measure the load generator's own timing error against a loopback server with known timing",
        description="Start a loopback streaming server whose TTFT, inter-token gap and length are set exactly and "
        "which records when it wrote each token; drive it with this rig's client at several stream counts; report "
        "the client's error (measured minus truth) for TTFT and TPOT at p50 and p99, tokens/s delivered, and the "
        "most streams whose p99 TTFT error stays within 1 ms. The server and the client share this machine's cores.",
    )
    cal.add_argument(
        "--shape",
        nargs="+",
        choices=tuple(SHAPES),
        default=list(SHAPES),
        help="latency: TTFT 50 ms, gap 10 ms, 64 tokens at 1-256 streams; capacity: TTFT 5 ms, gap 1 ms, "
        "256 tokens at 64 and 256 streams (default both)",
    )
    cal.add_argument("--streams", type=_streams, help="stream counts to test, e.g. 1,64,256")
    cal.add_argument(
        "--requests-per-stream",
        type=positive_int,
        default=2,
        help="measured requests per stream at each level (at least 64 in all; default 2)",
    )
    cal.add_argument("--busy-poll", action="store_true", help=BUSY_POLL_HELP)
    cal.add_argument(
        "--wire",
        nargs="?",
        const="auto",
        default="off",
        choices=("auto", "tcpdump", "raw-socket"),
        help="also capture the loopback traffic and report the client's error against the wire (request segment "
        "to first data segment, per connection) beside the error against the server's log: tcpdump where "
        "installed, else a raw socket when root; without either it says so and uses the log (default: no "
        "capture; --wire alone: auto)",
    )
    cal.add_argument("--results-dir", type=Path, default=Path("results"), help="where the report folder goes")
    cal.add_argument("--run-id", help="name of the report folder (default calibration-<time>)")


def cmd_calibrate(args: argparse.Namespace) -> int:
    shapes = [SHAPES[name] for name in args.shape]
    if args.streams:
        shapes = [Shape(s.name, s.ttft_ms, s.gap_ms, s.tokens, tuple(args.streams)) for s in shapes]
    run_id = args.run_id or f"calibration-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    if "/" in run_id:
        raise UsageError(f"--run-id {run_id!r}: a folder name, without '/'")
    run_dir = RunDirectory.create(args.results_dir, run_id)
    say("calibrating the load generator against a loopback server with known timing (shares this machine's cores)")
    probe = HttpClient("http://127.0.0.1:1")  # what reads and times this machine's sockets (bench.clients.http)
    say(
        f"client event loop: {'busy-polling (one core kept busy)' if args.busy_poll else 'idle-waiting'}; "
        f"each read timed by the {probe.stamps}, read by the {probe.read_path} path"
    )
    report = calibrate(shapes, args.requests_per_stream, run_dir.path, args.busy_poll, progress=say, wire=args.wire)
    if args.wire != "off":
        say(f"wire: {report['wire']['note']}")
    report.update(
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), hardware=inventory(), software=software()
    )
    path = run_dir.file("calibration.json")
    write_json_atomic(path, report)
    for shape in report["shapes"]:
        best = shape[f"max_streams_p99_ttft_error_within_{WITHIN_MS:g}ms"]
        print(
            f"{shape['name']}: TTFT {shape['ttft_ms']:g} ms, gap {shape['gap_ms']:g} ms, {shape['tokens']} tokens; "
            f"p99 TTFT error within {WITHIN_MS:g} ms up to {best or 'no tested'} streams"
            + (f" ({shape['output_tokens_per_s_at_that_level']:,.0f} tok/s)" if best else "")
            + f"; most delivered {shape['max_output_tokens_per_s']:,.0f} tok/s"
        )
    print(f"Calibration written to {path} (attach it to runs with `bench run --calibration {path}`)")
    return 0
