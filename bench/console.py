"""What a person sees: live progress on stderr, and the summary table."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

from bench.metrics import PERCENTILES, percentile_key

STAT_COLUMNS = ("mean", "std", *(percentile_key(q) for q in PERCENTILES), "n")
LATENCY_ROWS = (
    ("ttft_ms", "TTFT (ms)"),
    ("tpot_ms", "TPOT (ms)"),
    ("itl_ms", "ITL (ms)"),
    ("e2e_ms", "E2E latency (ms)"),
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """Counts records as they land; redraws one line on a terminal, prints a line now and then otherwise."""

    def __init__(self, planned: dict[str, int], stream: TextIO = sys.stderr) -> None:
        self.planned = planned
        self.stream = stream
        self.tty = stream.isatty()
        self.counts = {phase: {"ok": 0, "error": 0, "cancelled": 0} for phase in planned}
        self.output_tokens = 0
        self.phase = next(iter(planned))
        self.phase_started = time.monotonic()

    def add(self, record: dict[str, Any]) -> None:
        phase = record.get("phase", "measured")
        if phase != self.phase:
            self.phase, self.phase_started, self.output_tokens = phase, time.monotonic(), 0
        self.counts.setdefault(phase, {"ok": 0, "error": 0, "cancelled": 0})[record.get("status", "error")] += 1
        if record.get("status") == "ok":
            self.output_tokens += record.get("output_tokens") or 0

    def line(self) -> str:
        c = self.counts[self.phase]
        done = sum(c.values())
        elapsed = time.monotonic() - self.phase_started
        rates = (
            f" | {c['ok'] / elapsed:5.2f} req/s | {self.output_tokens / elapsed:7.1f} out tok/s" if elapsed > 0 else ""
        )
        return (
            f"{self.phase:>8} {done:>5}/{self.planned.get(self.phase, 0):<5} ok {c['ok']:<5} "
            f"failed {c['error']:<4} | {elapsed:6.1f} s{rates}"
        )

    async def ticker(self) -> None:
        interval = 0.25 if self.tty else 5.0
        try:
            while True:
                await asyncio.sleep(interval)
                self.draw()
        finally:
            self.draw(final=True)

    def draw(self, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


def _fmt(value: Any, width: int = 9) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, int):
        return f"{value:>{width}d}"
    return f"{value:>{width}.2f}" if abs(value) < 1e6 else f"{value:>{width}.3g}"


def _rate(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:,.2f} {unit}"


def summary_table(summary: dict[str, Any], heading: str, run_dir: str | None = None) -> str:
    header = f"{'':18}" + "".join(f"{col:>9}" for col in STAT_COLUMNS)
    lines = [heading, "", header]
    for key, label in LATENCY_ROWS:
        stats = summary.get(key) or {}
        lines.append(f"{label:18}" + "".join(_fmt(stats.get(col)) for col in STAT_COLUMNS))
    req = summary["requests"]
    lines += [
        "",
        f"Requests     {req['successful']} ok, {req['failed']} failed, {req['cancelled']} cancelled "
        f"(measured; {req['warmup']} warmup excluded) over {summary['window_s']:.2f} s",
        f"Throughput   {_rate(summary['request_throughput_per_s'], 'req/s')}, "
        f"{_rate(summary['output_throughput_tokens_per_s'], 'output tok/s')}, "
        f"{_rate(summary['total_token_throughput_tokens_per_s'], 'total tok/s')}",
        f"Per request  {_rate((summary['output_tokens_per_s_per_request'] or {}).get('mean'), 'output tok/s')} (mean)",
    ]
    prompt, output = summary.get("prompt_tokens") or {}, summary.get("output_tokens") or {}
    if prompt.get("n") or output.get("n"):
        sources = ", ".join(f"{k} {v}" for k, v in summary.get("tokens_source", {}).items())
        lines.append(
            f"Tokens       input mean {_fmt(prompt.get('mean'), 0)}, output mean {_fmt(output.get('mean'), 0)}; "
            f"counted from: {sources}"
        )
    if summary.get("output_length_differs_from_max_tokens"):
        lines.append(
            f"Note         {summary['output_length_differs_from_max_tokens']} request(s) produced a "
            "different number of tokens than max_tokens"
        )
    for error in summary.get("errors", [])[:5]:
        lines.append(f"Error        {error['count']} x {error['error']}")
    tel = summary.get("telemetry") or {}
    if tel.get("samples"):
        rss = tel.get("engine_peak_rss_bytes")
        lines.append(
            f"Processes    engine peak RSS {'-' if rss is None else f'{rss / 2**20:,.0f} MiB'}, "
            f"engine CPU {_fmt(tel.get('engine_cpu_percent_mean'), 0)} %, "
            f"client CPU {_fmt(tel.get('client_cpu_percent_mean'), 0)} % "
            f"(mean of {tel['samples']} samples; 100 % = one core)"
        )
    if run_dir:
        lines.append(f"Run dir      {run_dir}")
    return "\n".join(lines)
