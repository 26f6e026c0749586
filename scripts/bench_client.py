#!/usr/bin/env python3
"""The load generator's own fidelity and cost, against the wire: the before/after table of issue 15.

For each shape, stream count and waiting mode (default, --busy-poll) the client drives the calibration
server (this tree's bench/calibrate/server.py: the instrument) in a fresh interpreter of its own, while
the loopback traffic is captured (tcpdump, else a raw socket as root). Printed per row: the client's TTFT
error against the wire (measured TTFT minus request-segment-to-first-data-segment) at p50, p99 and max,
the p99 against the server's log beside it, the client's CPU-seconds per million streamed tokens
(user + system, from getrusage over the drive, with the kernel's share: system time), its CPU use and the
server's, tokens per read (streamed tokens over kernel-stamped reads), how many first tokens were over
0.5 ms late against the wire and how many of those were read with the next token (the kernel had merged
the two segments: the first then has the second's time), the tokens/s delivered, and the host's speed
just before the row (host_reference: CPU-µs per loopback TCP message, one send and one read with its ACK),
so that CPU per token measured on a slowed host can be told from a slower client.

    .venv/bin/python scripts/bench_client.py                      # this tree
    mkdir /tmp/before && git archive <commit> bench | tar -x -C /tmp/before
    .venv/bin/python scripts/bench_client.py --tree before=/tmp/before --tree after=.   # both, level by level

--tree (repeatable, NAME=PATH) only swaps the client under test (bench.clients, bench.load): the server,
the capture and the arithmetic are this tree's, so every table measures the same way; with several trees
each level runs for each tree in turn, so a change in the machine's load falls on all of them alike. The
client process and the server share the machine's cores with whatever else runs: the load average (and
how many cores other tasks kept busy just before) is printed with each row; measure quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> int:
    """In the client's own interpreter (bench imported from --tree): drive one level, write its records."""
    import asyncio
    import resource

    import orjson

    import bench
    from bench.clients.base import PreparedRequest
    from bench.clients.http import HttpClient, perf_ns
    from bench.clients.openai import COMPLETIONS
    from bench.clients.streaming import StreamingClient
    from bench.load.plan import Stage
    from bench.load.runner import LoadRunner, keep_loop_hot, run_event_loop
    from bench.load.schedules import ClosedLoop
    from bench.load.workload import WorkItem

    streams, requests, tokens = int(args.streams), args.requests, args.tokens
    http_client = []

    async def drive():
        hot = asyncio.create_task(keep_loop_hot()) if args.mode == "busy-poll" else None
        anchor = perf_ns()
        # "read-time": the event loop's own clock at each read (how every tree before issue 15 timed reads)
        http = HttpClient(args.url, kernel_stamps=False) if args.mode == "read-time" else HttpClient(args.url)
        http_client.append(http)
        client = StreamingClient(http, COMPLETIONS, "calibration", {}, 300.0, anchor)
        records = []
        work = (WorkItem([PreparedRequest(f"calibrate #{i}", tokens)]) for i in range(requests + streams))
        runner = LoadRunner(client, work, records.append)
        stage = Stage(0, f"c{streams}", ClosedLoop(streams), requests=requests, warmup_requests=streams)
        try:
            await runner.run_stage(stage)
        finally:
            if hot:
                hot.cancel()
            await client.http.close()
        return records, anchor

    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    if args.mode in ("read-time", "no-slice"):  # ablations: without the short scheduler slice
        records, anchor = run_event_loop(drive, latency_slice_ns=0)
    else:
        records, anchor = run_event_loop(drive)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - wall
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    clock = getattr(http_client[0], "clock", None)  # kernel-stamped reads (trees since issue 15)
    loop = {"timestamps": getattr(http_client[0], "stamps", "event-loop read time")}
    loop["read_path"] = getattr(http_client[0], "read_path", "python")  # trees before the compiled read: python
    if clock is not None:
        loop.update(reads=clock.reads, late_reads=clock.late_reads, max_read_lag_ms=clock.max_read_lag_ns / 1e6)
    out = {"anchor": anchor, "cpu_s": user + system, "cpu_system_s": system, "wall_s": wall, "bench": bench.__file__}
    out.update(records=records, loop=loop)
    Path(args.out).write_bytes(orjson.dumps(out))
    return 0


def load_average() -> float:
    return os.getloadavg()[0]


def others_running(seconds: float = 2.0) -> float:
    """How many other tasks were runnable on average over `seconds` (/proc/stat procs_running, less this one)."""
    samples = []
    for _ in range(int(seconds / 0.1)):
        with open("/proc/stat") as handle:
            running = next(int(line.split()[1]) for line in handle if line.startswith("procs_running"))
        samples.append(running - 1)
        time.sleep(0.1)
    return sum(samples) / len(samples)


def host_reference(messages: int = 10_000, rounds: int = 5) -> float:
    """The host's speed just now, in CPU-µs per loopback TCP message: one 128-byte send and one read of it on
    a connected pair (TCP_NODELAY), each read with its ACK, as one streamed token costs server and client
    together. The least of `rounds`, as timeit takes: a disturbance only adds. A slowed host (a busy neighbour
    on a shared VM) shows here, so a row's CPU per token can be read against the speed of the host it ran on."""
    import resource
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
        with sender, receiver:
            sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            payload, send, recv, took = b"x" * 128, sender.send, receiver.recv, []
            for _ in range(rounds):
                before = resource.getrusage(resource.RUSAGE_SELF)
                for _ in range(messages):
                    send(payload)
                    recv(4096)
                after = resource.getrusage(resource.RUSAGE_SELF)
                cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                took.append(cpu / messages * 1e6)
    return min(took)


def wait_for_quiet(below: float, most_s: float) -> float:
    """Wait (at most most_s) until other tasks keep fewer than `below` cores busy; returns what was seen last."""
    deadline = time.monotonic() + most_s
    while True:
        busy = others_running()
        if busy < below or time.monotonic() > deadline:
            return busy
        time.sleep(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tree",
        action="append",
        help="NAME=PATH (or PATH) of a tree whose client is measured; repeatable (default: this tree)",
    )
    parser.add_argument("--streams", default="1,16,64,256,1024", help="latency-shape stream counts")
    parser.add_argument("--capacity-streams", default="256", help="capacity-shape stream counts ('' for none)")
    parser.add_argument(
        "--modes",
        default="default,busy-poll",
        help="comma-separated: default, busy-poll; the ablations read-time (this tree's parser with reads timed by "
        "the event loop's clock and the kernel's default slice, as before issue 15) and no-slice (kernel receive "
        "times without the short scheduler slice); --tree of an older tree: default and busy-poll only",
    )
    parser.add_argument("--requests-per-stream", type=int, default=2)
    parser.add_argument(
        "--wire",
        default="auto",
        choices=("auto", "tcpdump", "raw-socket", "off"),
        help="the capture (default auto); off measures CPU without the capture's own cost to the client (the "
        "filter runs for every segment the client sends, its ACKs too), and errors against the server's log only",
    )
    parser.add_argument("--json", type=Path, help="also write every level's figures here")
    parser.add_argument(
        "--quiet-below",
        type=float,
        help="before each level, wait (up to --quiet-wait s) until other tasks keep fewer cores than this busy",
    )
    parser.add_argument("--quiet-wait", type=float, default=600.0)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run each level's client under py-spy (200 samples/s, native frames too) and write its folded stacks "
        "to DIR/<tree>-<shape>-<streams>-<mode>.txt, with the functions that hold the most samples printed per "
        "level; py-spy's own sampling costs the client CPU, so figures taken this way are not the ones to quote",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    sys.path.insert(0, str(REPO))
    from bench.calibrate.wire import capture_method

    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        if profiler() is None:
            print("error: --profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
            return 2
    method, note = capture_method(args.wire) if args.wire != "off" else (None, "off (errors against the log only)")
    trees = []
    for item in args.tree or [f"this={REPO}"]:
        name, _, where = item.rpartition("=")
        trees.append((name or Path(where).name, Path(where).resolve()))
    print(f"clients under test: {', '.join(f'{n} ({p})' for n, p in trees)}; wire: {note}", file=sys.stderr)
    plan = [("latency", [int(s) for s in args.streams.split(",") if s])]
    if args.capacity_streams:
        plan.append(("capacity", [int(s) for s in args.capacity_streams.split(",") if s]))
    modes = [m for m in args.modes.split(",") if m]
    levels: list[dict] = []
    try:
        _drive_levels(args, trees, plan, modes, method, levels)
    except ClientFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    for tree_name, tree in trees:
        print(f"\nclient: {tree_name} ({tree}) | wire: {note}")
        print(HEADER)
        print("\n".join(_row(level) for level in levels if level["tree"] == tree_name))
    if args.json:
        args.json.write_text(json.dumps(levels, indent=1))
    return 0


def _drive_levels(args, trees, plan, modes, method, levels: list[dict]) -> None:
    """Every level of the plan for every tree and mode, one after another, each appended to levels."""
    from bench.calibrate import SERVER_SCRIPT, SHAPES
    from bench.engines.base import free_port, http_json, wait_until_ready
    from bench.engines.process import ManagedProcess

    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        work = Path(tmp)
        for shape_name, counts in plan:
            shape = SHAPES[shape_name]
            port = free_port("127.0.0.1")
            argv = [sys.executable, str(SERVER_SCRIPT), "--port", str(port), "--ttft-ms", str(shape.ttft_ms)]
            server = ManagedProcess([*argv, "--gap-ms", str(shape.gap_ms)], work / f"server-{shape_name}.log")
            server.start()
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until_ready(
                    server,
                    lambda url=url: None if http_json("GET", f"{url}/health", timeout_s=2)[0] == 200 else "not ready",
                    30,
                    "calibration server",
                )
                for streams in counts:
                    for tree_name, tree in trees:
                        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
                        for mode in modes:
                            level = _level(
                                args, work, url, port, shape, streams, mode, env, method, tmp, server, tree_name
                            )
                            levels.append(level)
                            print(f"{tree_name:>8} " + _row(level), file=sys.stderr, flush=True)
            finally:
                server.stop()


class ClientFailed(Exception):
    """A client under test could not drive a level (a tree it cannot run, a crash): its one-line reason."""


def profiler() -> str | None:
    """py-spy: beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def top_functions(folded: Path, count: int = 12) -> list[tuple[float, float, str]]:
    """(share of samples in the function or below it, share in it alone, function) from py-spy's folded
    stacks ("frame;frame;... samples" per line), the `count` largest by the first share."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:count]
    return [(n / total, own.get(frame, 0) / total, frame) for frame, n in ranked] if total else []


def _level(args, work, url, port, shape, streams, mode, env, method, tmp, server, tree_name) -> dict:
    """One level for one tree and mode: wait for quiet, capture, drive the client in its own interpreter."""
    from bench.calibrate import MIN_REQUESTS_PER_LEVEL, level_figures
    from bench.calibrate.wire import start_capture
    from bench.records import RequestRecord

    requests = max(MIN_REQUESTS_PER_LEVEL, streams * args.requests_per_stream)
    busy = wait_for_quiet(args.quiet_below, args.quiet_wait) if args.quiet_below else None
    load, reference = load_average(), host_reference()
    capture = start_capture(port, work, method, "wire") if method else None
    server_process = psutil.Process(server.pid)
    server_cpu, started = sum(server_process.cpu_times()[:2]), time.monotonic()
    out = work / "records.json"
    cmd = [sys.executable, __file__, "--child", "--url", url, "--streams", str(streams)]
    cmd += ["--requests", str(requests), "--tokens", str(shape.tokens), "--out", str(out), "--mode", mode]
    folded = args.profile / f"{tree_name}-{shape.name}-{streams}-{mode}.txt" if args.profile else None
    if folded:
        spy = [profiler(), "record", "--rate", "200", "--native", "--format", "raw"]
        cmd = [*spy, "--output", str(folded), "--", *cmd]
    try:
        child = subprocess.run(cmd, env=env, cwd=tmp, stderr=subprocess.PIPE, text=True)
        if child.returncode == 0:
            sys.stderr.write(child.stderr)  # py-spy's notes, with --profile
        else:
            last = (child.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
            where = env["PYTHONPATH"]
            raise ClientFailed(
                f"error: the client of tree {tree_name!r} ({where}) failed at {shape.name} {streams} streams, {mode} "
                f"(exit {child.returncode}): {last}; --tree takes a tree with this one's bench.clients and bench.load"
            )
    finally:
        server_cpu = (sum(server_process.cpu_times()[:2]) - server_cpu) / (time.monotonic() - started)
        captured = capture.stop() if capture else None
    data = json.loads(out.read_bytes())
    records = [RequestRecord.from_row(r) for r in data["records"]]
    level = level_figures(records, data["anchor"], streams, data["cpu_s"], data["wall_s"], captured, port)
    level.update(
        tree=tree_name,
        shape=shape.name,
        mode=mode,
        load_average=load,
        others_busy=busy,
        host_reference_us_per_message=reference,
        client=data["bench"],
        loop=data.get("loop"),
        # the share of the client's CPU in the kernel: its reads and, on loopback, the delivery of its ACKs into
        # the server's socket, which runs in the client's own system call
        client_system_share=data["cpu_system_s"] / data["cpu_s"] if data.get("cpu_system_s") is not None else None,
        server_cpu_percent=server_cpu * 100,
    )
    reads = (data.get("loop") or {}).get("reads")
    streamed = sum(len(r.output_times_ns) for r in records if r.status == "ok")
    level["tokens_per_read"] = streamed / reads if reads else None
    if folded:
        print(f"profile of {tree_name} {shape.name} {streams} {mode}: {folded}", file=sys.stderr)
        for inclusive, own, function in top_functions(folded):
            print(f"  {inclusive:6.1%} {own:6.1%}  {function}", file=sys.stderr)
    return level


HEADER = (
    "| shape | streams | mode | TTFT err vs wire p50 / p99 / max (ms) | p99 vs log (ms) | TPOT err p99 (ms) "
    "| CPU-s per 1M tok (kernel share) | client CPU | server CPU | tokens per read | first tokens late (with the next) "
    "| tok/s delivered | failed | load (others busy) | host (CPU-µs per loopback message) |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _late(late: dict | None) -> str:
    """First tokens over 0.5 ms late against the wire, and how many of them were read with the next token."""
    return "-" if not late else f"{late['count']} ({late['read_with_the_next_token']})"


def _share(value: float | None) -> str:
    return "" if value is None else f" ({value:.0%})"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _row(level: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v:+.3f}"

    wire = level.get("wire") or {}
    w = wire.get("ttft_error_ms") or {}
    tpot = (wire.get("tpot_error_ms") or {}).get("p99")
    if tpot is None:
        tpot = level["tpot_error_ms"]["p99"]
    cpu = level["client_cpu_s_per_million_tokens"]
    return (
        f"| {level['shape']} | {level['streams']:,} | {level['mode']} | {ms(w.get('p50'))} / {ms(w.get('p99'))} / "
        f"{ms(w.get('max'))} | {ms(level['ttft_error_ms']['p99'])} | {ms(tpot)} | "
        f"{'-' if cpu is None else f'{cpu:.1f}'}{_share(level.get('client_system_share'))} | "
        f"{level['client_cpu_percent'] or 0:.0f}% | {_percent(level.get('server_cpu_percent'))} | "
        f"{_number(level.get('tokens_per_read'), '.2f')} | {_late(wire.get('late_first_tokens'))} | "
        f"{level['output_tokens_per_s'] or 0:,.0f} | {level['failed']} | {level['load_average']:.2f}"
        + ("" if level.get("others_busy") is None else f" ({level['others_busy']:.1f})")
        + f" | {_number(level.get('host_reference_us_per_message'), '.2f')} |"
    )


if __name__ == "__main__":
    sys.exit(main())
