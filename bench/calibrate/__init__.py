"""`bench calibrate`: measure the load generator's own timing error against the calibration server.

For each shape (the server's TTFT, inter-token gap and tokens per request) and each stream count,
the rig's real client and closed-loop runner drive the instrument in calibrate/server.py, which
records when it actually wrote each token. Per request (clocks are shared: CLOCK_MONOTONIC):

    TTFT error  = t_1 (client saw the first token) - t_first_write (server wrote it)
                = measured TTFT - true TTFT, with true TTFT = t_first_write - t_send
    TPOT error  = (t_k - t_1) / (n - 1) - (t_last_write - t_first_write) / (n - 1)
    request leg = t_received (server had read the request) - t_send   (reported, not an error)

A positive error means the client saw the token late. The report gives p50, p99 and max of each
per stream count, the output tokens/s delivered, and the client's and server's CPU use, plus the
highest stream count (and its tokens/s) such that p99 TTFT error stays within 1 ms at every tested
count up to it. With --busy-poll the client's event loop never sleeps, which removes the kernel's
(and a virtual machine's) wake-up latency from the timestamps at the cost of one core.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.clients.base import PreparedRequest
from bench.clients.http import HttpClient, perf_ns
from bench.clients.openai import COMPLETIONS
from bench.clients.streaming import StreamingClient
from bench.engines.base import free_port, http_json, wait_until_ready
from bench.engines.process import ManagedProcess
from bench.load.plan import Stage
from bench.load.runner import LoadRunner, keep_loop_hot, run_event_loop
from bench.load.schedules import ClosedLoop
from bench.load.workload import WorkItem
from bench.metrics.requests import summarize_requests, table_of
from bench.metrics.stats import describe
from bench.records import RequestRecord

SERVER_SCRIPT = Path(__file__).with_name("server.py")
WITHIN_MS = 1.0  # the error budget that defines the client's sustained capacity
MIN_REQUESTS_PER_LEVEL = 64  # so that p99 is not simply the worst request


@dataclass(frozen=True)
class Shape:
    name: str
    ttft_ms: float
    gap_ms: float
    tokens: int
    streams: tuple[int, ...]


SHAPES = {
    "latency": Shape("latency", 50.0, 10.0, 64, (1, 16, 64, 128, 256)),
    "capacity": Shape("capacity", 5.0, 1.0, 256, (64, 256)),
}


def request_errors(record: RequestRecord, anchor_ns: int) -> dict[str, float] | None:
    """TTFT and TPOT error (ms) of one record against the server's truth, or None if it cannot be judged."""
    truth = record.server_timings or {}
    times = record.output_times_ns
    if record.status != "ok" or not times or "t_first_write_ns" not in truth:
        return None
    t_1, t_k = times[0] + anchor_ns, times[-1] + anchor_ns
    out = {
        "ttft_error_ms": (t_1 - truth["t_first_write_ns"]) / 1e6,
        "request_leg_ms": (truth["t_received_ns"] - (record.t_send_ns + anchor_ns)) / 1e6,
    }
    n = truth["tokens"]
    if n >= 2 and record.output_tokens == n:
        measured = (t_k - t_1) / (n - 1)
        true = (truth["t_last_write_ns"] - truth["t_first_write_ns"]) / (n - 1)
        out["tpot_error_ms"] = (measured - true) / 1e6
    return out


def _stats(values: list[float]) -> dict[str, float | int | None]:
    stats = describe(values)
    return {k: stats.at(k) if k != "n" else stats.n for k in ("n", "mean", "p50", "p99", "max")}


async def _drive(
    base_url: str, shape: Shape, streams: int, requests: int, busy_poll: bool
) -> tuple[list[RequestRecord], int]:
    hot = asyncio.create_task(keep_loop_hot()) if busy_poll else None
    anchor = perf_ns()
    client = StreamingClient(HttpClient(base_url), COMPLETIONS, "calibration", {}, 300.0, anchor)
    records: list[RequestRecord] = []
    work = (WorkItem([PreparedRequest("calibrate", shape.tokens)]) for _ in range(requests + streams))
    runner = LoadRunner(client, work, records.append)
    stage = Stage(0, f"c{streams}", ClosedLoop(streams), requests=requests, warmup_requests=streams)
    try:
        await runner.run_stage(stage)
    finally:
        if hot:
            hot.cancel()
        await client.http.close()
    return records, anchor


def run_level(
    base_url: str, shape: Shape, streams: int, requests: int, server_pid: int, busy_poll: bool = False
) -> dict[str, Any]:
    me, server = psutil.Process(), psutil.Process(server_pid)
    cpu_me, cpu_server, started = sum(me.cpu_times()[:2]), sum(server.cpu_times()[:2]), time.monotonic()
    records, anchor = run_event_loop(lambda: _drive(base_url, shape, streams, requests, busy_poll))
    wall = time.monotonic() - started
    client_cpu = (sum(me.cpu_times()[:2]) - cpu_me) / wall * 100
    server_cpu = (sum(server.cpu_times()[:2]) - cpu_server) / wall * 100
    measured = [r for r in records if r.measured]
    errors = [e for r in measured if (e := request_errors(r, anchor))]
    summary = summarize_requests(table_of(records))
    return {
        "streams": streams,
        "requests": len(measured),
        "failed": summary.requests.failed,
        "judged": len(errors),
        "ttft_error_ms": _stats([e["ttft_error_ms"] for e in errors]),
        "tpot_error_ms": _stats([e["tpot_error_ms"] for e in errors if "tpot_error_ms" in e]),
        "request_leg_ms": _stats([e["request_leg_ms"] for e in errors]),
        "output_tokens_per_s": summary.output_throughput_tokens_per_s,
        "client_cpu_percent": client_cpu,
        "server_cpu_percent": server_cpu,
    }


def calibrate(
    shapes: list[Shape], requests_per_stream: int, log_dir: Path, busy_poll: bool = False, progress=print
) -> dict[str, Any]:
    report: dict[str, Any] = {"busy_poll": busy_poll, "shapes": []}
    for shape in shapes:
        port = free_port("127.0.0.1")
        argv = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--port",
            str(port),
            "--ttft-ms",
            str(shape.ttft_ms),
            "--gap-ms",
            str(shape.gap_ms),
        ]
        server = ManagedProcess(argv, log_dir / f"server-{shape.name}.log")
        server.start()
        levels = []
        try:
            url = f"http://127.0.0.1:{port}"

            def probe(health: str = f"{url}/health") -> str | None:
                return None if http_json("GET", health, timeout_s=2)[0] == 200 else "not ready"

            wait_until_ready(server, probe, 30, "calibration server")
            for streams in shape.streams:
                requests = max(MIN_REQUESTS_PER_LEVEL, streams * requests_per_stream)
                level = run_level(url, shape, streams, requests, server.pid, busy_poll)
                levels.append(level)
                progress(format_level(shape, level))
        finally:
            server.stop()
        best = None  # the most streams such that every tested count up to it stays within the budget
        for level in sorted(levels, key=lambda lv: lv["streams"]):
            p99 = level["ttft_error_ms"]["p99"]
            if p99 is None or p99 > WITHIN_MS:
                break
            best = level
        report["shapes"].append(
            {
                **asdict(shape),
                "levels": levels,
                f"max_streams_p99_ttft_error_within_{WITHIN_MS:g}ms": best["streams"] if best else None,
                "output_tokens_per_s_at_that_level": best["output_tokens_per_s"] if best else None,
                "max_output_tokens_per_s": max((lv["output_tokens_per_s"] or 0 for lv in levels), default=None),
            }
        )
    return report


def format_level(shape: Shape, level: dict[str, Any]) -> str:
    t, p = level["ttft_error_ms"], level["tpot_error_ms"]

    def ms(value):
        return "-" if value is None else f"{value:+.3f}"

    return (
        f"{shape.name:9} {level['streams']:>5} streams {level['requests']:>5} req | TTFT err p50 {ms(t['p50'])} "
        f"p99 {ms(t['p99'])} max {ms(t['max'])} ms | TPOT err p50 {ms(p['p50'])} p99 {ms(p['p99'])} ms | "
        f"{level['output_tokens_per_s'] or 0:>9,.0f} tok/s | CPU client {level['client_cpu_percent']:.0f}% "
        f"server {level['server_cpu_percent']:.0f}%"
    )
