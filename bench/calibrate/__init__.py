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
import contextlib
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from bench.calibrate.server import TOKEN
from bench.calibrate.wire import capture_method, errors_against_wire, start_capture, tag_prompt, wire_requests
from bench.clients.base import PreparedRequest
from bench.clients.http import LATE_READ_NS, HttpClient, perf_ns
from bench.clients.openai import COMPLETIONS
from bench.clients.streaming import StreamingClient
from bench.engines.base import free_port, http_json, wait_until_ready
from bench.engines.process import ManagedProcess
from bench.hardware import inventory
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


def request_tag(record: RequestRecord) -> int | None:
    """The number a calibration request was tagged with (echoed by the server), or None."""
    prompt = (record.server_timings or {}).get("prompt")
    if isinstance(prompt, str) and prompt.startswith("calibrate #"):
        with contextlib.suppress(ValueError):
            return int(prompt.removeprefix("calibrate #"))
    return None


LATE_FIRST_TOKEN_MS = 0.5  # a first token this late against the wire is counted, with why (late_first_tokens)


def late_first_tokens(errors: list[dict[str, float]]) -> dict[str, Any]:
    """First tokens late against the wire (errors_against_wire's figures), and of them those read with the next
    token: the kernel had merged the two segments, and a merged read carries the later one's time. What a late
    group of first tokens is made of."""
    late = [e for e in errors if e["ttft_error_ms"] > LATE_FIRST_TOKEN_MS]
    return {
        "over_ms": LATE_FIRST_TOKEN_MS,
        "count": len(late),
        "read_with_the_next_token": int(sum(e["first_read_with_next"] for e in late)),
    }


def wire_figures(records: list[RequestRecord], anchor_ns: int, captured: dict[str, Any], server_port: int):
    """The measured requests' errors against the wire (see calibrate/wire.py), as p50/p99/max per figure."""
    on_wire = wire_requests(captured["segments"], server_port)
    errors, unpaired = [], 0
    for record in records:
        if not record.measured or record.status != "ok" or not record.output_times_ns:
            continue
        tag = request_tag(record)
        wire = on_wire.get(tag) if tag is not None else None
        error = (
            errors_against_wire(
                record.t_send_ns + anchor_ns,
                [t + anchor_ns for t in record.output_times_ns],
                record.output_tokens,
                wire,
                captured["offset_ns"],
                len(TOKEN),
            )
            if wire is not None
            else None
        )
        if error is None:
            unpaired += 1
        else:
            errors.append(error)
    return {
        "paired": len(errors),
        "unpaired": unpaired,
        "late_first_tokens": late_first_tokens(errors),
        "segments": len(captured["segments"]),
        "dropped_by_kernel": captured.get("dropped"),
        "clock_step_ms": captured.get("clock_step_ms"),
        **{
            name: _stats([e[name] for e in errors if name in e])
            for name in ("ttft_error_ms", "tpot_error_ms", "receive_lag_ms", "send_lead_ms")
        },
    }


def level_bound(level: dict[str, Any]) -> tuple[float | None, str]:
    """A level's p99 TTFT error and what it was measured against: the wire where captured, else the log."""
    wire = level.get("wire")
    if wire and wire.get("paired"):
        return wire["ttft_error_ms"]["p99"], "wire"
    return (level.get("ttft_error_ms") or {}).get("p99"), "server log"


def tagged_work(tokens: int, count: int):
    """Calibration requests, each with a prompt that names it on the wire and in the server's truth."""
    return (WorkItem([PreparedRequest(tag_prompt(i), tokens)]) for i in range(count))


async def _drive(
    base_url: str, shape: Shape, streams: int, requests: int, busy_poll: bool
) -> tuple[list[RequestRecord], int, dict[str, Any]]:
    hot = asyncio.create_task(keep_loop_hot()) if busy_poll else None
    anchor = perf_ns()
    client = StreamingClient(HttpClient(base_url), COMPLETIONS, "calibration", {}, 300.0, anchor)
    records: list[RequestRecord] = []
    runner = LoadRunner(client, tagged_work(shape.tokens, requests + streams), records.append)
    stage = Stage(0, f"c{streams}", ClosedLoop(streams), requests=requests, warmup_requests=streams)
    try:
        await runner.run_stage(stage)
    finally:
        if hot:
            hot.cancel()
        await client.http.close()
    return records, anchor, client.http.read_figures()


def level_figures(
    records: list[RequestRecord],
    anchor_ns: int,
    streams: int,
    client_cpu_s: float,
    wall_s: float,
    captured: dict[str, Any] | None = None,
    server_port: int | None = None,
) -> dict[str, Any]:
    """One level's figures from its records: errors against the server's log (and the wire, if captured),
    tokens/s delivered and the client's CPU per million streamed tokens."""
    measured = [r for r in records if r.measured]
    errors = [e for r in measured if (e := request_errors(r, anchor_ns))]
    summary = summarize_requests(table_of(records))
    streamed = sum(r.output_tokens or 0 for r in records)
    level: dict[str, Any] = {
        "streams": streams,
        "requests": len(measured),
        "failed": summary.requests.failed,
        "judged": len(errors),
        "ttft_error_ms": _stats([e["ttft_error_ms"] for e in errors]),
        "tpot_error_ms": _stats([e["tpot_error_ms"] for e in errors if "tpot_error_ms" in e]),
        "request_leg_ms": _stats([e["request_leg_ms"] for e in errors]),
        "wire": wire_figures(records, anchor_ns, captured, server_port) if captured is not None else None,
        "output_tokens_per_s": summary.output_throughput_tokens_per_s,
        "tokens_streamed": streamed,
        "client_cpu_s": client_cpu_s,
        "client_cpu_s_per_million_tokens": client_cpu_s / streamed * 1e6 if streamed else None,
        "client_cpu_percent": client_cpu_s / wall_s * 100 if wall_s > 0 else None,
    }
    level["truth"] = level_bound(level)[1]
    return level


def run_level(
    base_url: str,
    shape: Shape,
    streams: int,
    requests: int,
    server_pid: int,
    busy_poll: bool = False,
    capture: tuple[str, Path] | None = None,
) -> dict[str, Any]:
    """One stream count against the server; `capture` = (method, folder) also captures the wire."""
    port = urlsplit(base_url).port or 80
    wire = start_capture(port, capture[1], capture[0], f"wire-{shape.name}-{streams}") if capture else None
    me, server = psutil.Process(), psutil.Process(server_pid)
    cpu_me, cpu_server, started = sum(me.cpu_times()[:2]), sum(server.cpu_times()[:2]), time.monotonic()
    try:
        records, anchor, loop = run_event_loop(lambda: _drive(base_url, shape, streams, requests, busy_poll))
    finally:
        wall = time.monotonic() - started
        client_cpu = sum(me.cpu_times()[:2]) - cpu_me
        server_cpu = sum(server.cpu_times()[:2]) - cpu_server
        captured = wire.stop() if wire else None
    level = level_figures(records, anchor, streams, client_cpu, wall, captured, port)
    level["server_cpu_percent"] = server_cpu / wall * 100
    level["loop"] = loop
    return level


def machine() -> dict[str, Any]:
    """What identifies the machine a calibration holds for."""
    hardware = inventory()
    return {
        "hostname": platform.node(),
        "cpu_model": hardware["cpu_model"],
        "cpus_usable": hardware["cpus_usable"],
        "os": hardware["os"],
    }


def calibrate(
    shapes: list[Shape],
    requests_per_stream: int,
    log_dir: Path,
    busy_poll: bool = False,
    progress=print,
    wire: str = "off",
) -> dict[str, Any]:
    """Every shape at every stream count. `wire`: "off", "auto", "tcpdump" or "raw-socket"."""
    method, note = capture_method(wire) if wire != "off" else (None, "not asked for (--wire captures it)")
    report: dict[str, Any] = {
        "busy_poll": busy_poll,
        "mode": "busy-poll" if busy_poll else "default",
        "machine": machine(),
        "wire": {"asked": wire != "off", "method": method, "note": note},
        "shapes": [],
    }
    if wire != "off" and method is None:
        progress(f"warning: {note}")
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
                capture = None
                if method is not None:
                    capture = (method, log_dir)
                try:
                    level = run_level(url, shape, streams, requests, server.pid, busy_poll, capture)
                except OSError as exc:
                    if capture is None or "exited" not in str(exc) and "listening" not in str(exc):
                        raise
                    method, note = None, f"the packet capture failed ({exc}); errors are against the server's log"
                    report["wire"].update(method=None, note=note)
                    progress(f"warning: {note}")
                    level = run_level(url, shape, streams, requests, server.pid, busy_poll)
                levels.append(level)
                progress(format_level(shape, level))
        finally:
            server.stop()
        best = None  # the most streams such that every tested count up to it stays within the budget
        for level in sorted(levels, key=lambda lv: lv["streams"]):
            p99, _ = level_bound(level)
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


def _ms(value) -> str:
    return "-" if value is None else f"{value:+.3f}"


def format_level(shape: Shape, level: dict[str, Any]) -> str:
    t, p, w = level["ttft_error_ms"], level["tpot_error_ms"], level.get("wire")
    wire = ""
    if w and w.get("paired"):
        wt = w["ttft_error_ms"]
        late = w.get("late_first_tokens") or {}
        late_note = ""
        if late.get("count"):
            late_note = f", {late['count']} over {late['over_ms']:g} ms late, {late['read_with_the_next_token']}"
            late_note += " of them read with the next token"
        wire = (
            f"wire TTFT err p50 {_ms(wt['p50'])} p99 {_ms(wt['p99'])} max {_ms(wt['max'])} ms ({w['paired']} paired"
            f"{late_note}) | "
        )
    cpu = level.get("client_cpu_s_per_million_tokens")
    loop = level.get("loop") or {}
    reads = ""
    if loop.get("reads"):
        reads = (
            f" | reads timed by the kernel, {loop['late_reads'] / loop['reads']:.1%} read over "
            f"{LATE_READ_NS / 1e6:g} ms late "
            f"(worst {loop['max_read_lag_ms']:.1f} ms), {loop.get('first_reads_ahead', 0):,} first tokens read ahead"
        )
    return (
        f"{shape.name:9} {level['streams']:>5} streams {level['requests']:>5} req | {wire}log TTFT err p50 "
        f"{_ms(t['p50'])} p99 {_ms(t['p99'])} max {_ms(t['max'])} ms | TPOT err p50 {_ms(p['p50'])} p99 "
        f"{_ms(p['p99'])} ms | {level['output_tokens_per_s'] or 0:>9,.0f} tok/s | CPU client "
        f"{level['client_cpu_percent'] or 0:.0f}% ({cpu or 0:.1f} CPU-s/1M tok) "
        f"server {level['server_cpu_percent']:.0f}%{reads}"
    )


# -- the bound a run carries -------------------------------------------------------------------------

HEADLINE_SHAPE = "latency"  # the shape whose error a run's bound quotes (the capacity shape is reported beside it)


def _same_machine(calibrated: dict[str, Any], here: dict[str, Any]) -> bool:
    if calibrated.get("hostname") and calibrated.get("hostname") != here.get("hostname"):
        return False
    if calibrated.get("cpus_usable") and calibrated.get("cpus_usable") != here.get("cpus_usable"):
        return False
    return calibrated.get("cpu_model") == here.get("cpu_model")


def _calibrated_machine(report: dict[str, Any]) -> dict[str, Any]:
    """The machine a calibration report was made on (reports before issue 15 name only the CPU model)."""
    return report.get("machine") or {"cpu_model": (report.get("hardware") or {}).get("cpu_model")}


def find_calibration(results_dir: Path, busy_poll: bool, streams: int = 1) -> Path | None:
    """The calibration.json under results_dir made on this machine that fits a run best: in its waiting mode
    if there is one (else the other, which the run's bound then warns about), covering its stream count if
    one does, the newest of those; or None."""
    here, candidates = machine(), []
    for path in results_dir.glob("*/calibration.json"):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict) or not isinstance(report.get("shapes"), list):
            continue
        if not _same_machine(_calibrated_machine(report), here):
            continue
        same_mode = bool(report.get("busy_poll")) == busy_poll
        most = max((lv.get("streams", 0) for sh in report["shapes"] for lv in sh.get("levels") or []), default=0)
        candidates.append((same_mode, most >= streams, str(report.get("created_at") or ""), path))
    return max(candidates)[-1] if candidates else None


def _level_bound_figures(shape: dict[str, Any], level: dict[str, Any]) -> dict[str, Any]:
    p99, truth = level_bound(level)
    source = level["wire"] if truth == "wire" else level
    return {
        "shape": shape.get("name"),
        "at_streams": level.get("streams"),
        "truth": truth,
        "ttft_error_ms_p50": (source.get("ttft_error_ms") or {}).get("p50"),
        "ttft_error_ms_p99": p99,
        "ttft_error_ms_max": (source.get("ttft_error_ms") or {}).get("max"),
        "tpot_error_ms_p99": (source.get("tpot_error_ms") or {}).get("p99"),
    }


def calibration_cover(
    report: dict[str, Any], path: Path | None, streams: int, busy_poll: bool, how: str
) -> dict[str, Any]:
    """What a run's manifest says about the calibration that covers it: which one (file, machine, mode,
    streams, date), the client's error bound at the run's stream count, and warnings where it falls short."""
    calibrated_mode = "busy-poll" if report.get("busy_poll") else "default"
    run_mode = "busy-poll" if busy_poll else "default"
    calibrated_machine = _calibrated_machine(report)
    shapes = report.get("shapes") or []
    most = max((lv.get("streams", 0) for s in shapes for lv in s.get("levels", [])), default=0)
    warnings = []
    bounds = []
    for shape in shapes:
        levels = sorted(shape.get("levels") or [], key=lambda lv: lv.get("streams", 0))
        if not levels:
            continue
        covering = next((lv for lv in levels if lv.get("streams", 0) >= streams), None)
        bounds.append(_level_bound_figures(shape, covering or levels[-1]) | {"covers_run": covering is not None})
    headline = next((b for b in bounds if b["shape"] == HEADLINE_SHAPE), bounds[0] if bounds else None)
    covered = bool(headline and headline["covers_run"])
    if not covered:
        warnings.append(f"this run used {streams} streams; its calibration covered up to {most}")
    if calibrated_mode != run_mode:
        warnings.append(f"calibrated in the {calibrated_mode} waiting mode; this run used the {run_mode} mode")
    if not _same_machine(calibrated_machine, machine()):
        warnings.append(
            f"calibrated on another machine ({calibrated_machine.get('hostname') or 'unknown host'}, "
            f"{calibrated_machine.get('cpu_model')})"
        )
    wire = report.get("wire") or {}
    if headline and headline["truth"] != "wire":
        warnings.append("the bound is against the calibration server's log, not the wire (bench calibrate --wire)")
    return {
        "file": str(path) if path else None,
        "found": how,  # "given" (--calibration) or "automatic" (the newest of this machine under --results-dir)
        "created_at": report.get("created_at"),
        "machine": calibrated_machine,
        "mode": calibrated_mode,
        "busy_poll": bool(report.get("busy_poll")),
        "wire_method": wire.get("method"),
        "streams_calibrated": most,
        "run_streams": streams,
        "run_mode": run_mode,
        "covered": covered,
        "bound": headline,
        "bounds_by_shape": bounds,
        "warnings": warnings,
        "shapes": [
            {k: v for k, v in shape.items() if k != "levels"}
            | {
                "levels": [
                    {
                        k: lv.get(k)
                        for k in (
                            "streams",
                            "truth",
                            "ttft_error_ms",
                            "tpot_error_ms",
                            "wire",
                            "output_tokens_per_s",
                            "client_cpu_s_per_million_tokens",
                        )
                    }
                    for lv in shape.get("levels") or []
                ]
            }
            for shape in shapes
        ],
    }


def no_calibration(streams: int, busy_poll: bool, results_dir: Path | None) -> dict[str, Any]:
    where = f" under {results_dir}" if results_dir else ""
    return {
        "file": None,
        "found": None,
        "covered": False,
        "run_streams": streams,
        "run_mode": "busy-poll" if busy_poll else "default",
        "bound": None,
        "warnings": [
            f"no calibration of this machine{where}: the client's own timing error is unknown "
            "(bench calibrate --wire measures it; --calibration FILE attaches one)"
        ],
    }
