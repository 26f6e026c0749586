"""Traces: timestamped requests replayed as they arrived. Three formats, told apart by their content:

    mooncake  JSONL: {"timestamp": ms, "input_length": N, "output_length": M, "hash_ids": [int, ...]}
              (Mooncake's FAST'25 trace; each hash id names one block of `block_tokens` prompt tokens, so
              requests sharing leading hash ids share a prompt prefix and prefix caching behaves as traced)
    azure     CSV with a header TIMESTAMP,ContextTokens,GeneratedTokens (Azure LLM inference trace 2023;
              TIMESTAMP a date-time such as 2023-11-16 18:15:46.6805900)
    bench     JSONL of this rig's own: {"t_s": seconds, "input_tokens": N, "output_tokens": M} with an
              optional "prompt" (text sent as it is; its length then comes from the server's usage)

Arrivals are the trace's times relative to its first request, divided by `speed` (2 = twice as fast), and
a `window` START:END (seconds of the original trace) takes a slice. Lengths are capped so prompt plus
output fit the per-request context; how many were capped is counted.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.errors import UsageError

FORMATS = ("mooncake", "azure", "bench")


@dataclass(frozen=True)
class TraceRow:
    t_s: float  # from the trace's first request (before speed and window)
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()
    prompt: str | None = None


@dataclass(frozen=True)
class Trace:
    path: Path
    format: str
    rows: list[TraceRow]
    capped: int = 0  # rows whose lengths were cut to fit the context

    @property
    def offsets_s(self) -> tuple[float, ...]:
        return tuple(r.t_s for r in self.rows)

    def describe(self) -> dict:
        span = self.rows[-1].t_s if self.rows else 0.0
        return {
            "path": str(self.path),
            "format": self.format,
            "requests": len(self.rows),
            "span_s": span,
            "capped": self.capped,
        }


_FIRST_LINE = re.compile(r"\s*([^\n]*)")  # past blank lines: the first line with anything on it


def detect_format(text: str) -> str:
    """The trace's format, from its first line that is not blank (a prompt there may be any length)."""
    first = _FIRST_LINE.match(text).group(1)  # without splitting the whole file (JSONL lines end in \n only)
    if first.strip().upper().startswith("TIMESTAMP"):
        return "azure"
    try:
        row = orjson.loads(first)
    except orjson.JSONDecodeError:
        raise UsageError("not a trace: neither JSONL nor a CSV with a TIMESTAMP header") from None
    if isinstance(row, dict) and "input_length" in row and "timestamp" in row:
        return "mooncake"
    if isinstance(row, dict) and "t_s" in row:
        return "bench"
    raise UsageError(
        "not a known trace: JSONL lines need timestamp/input_length/output_length (Mooncake) or "
        "t_s/input_tokens/output_tokens (bench); a CSV needs TIMESTAMP,ContextTokens,GeneratedTokens"
    )


def _seconds(value, where: str, name: str) -> float:
    """A time stamp: a finite number (NaN would scramble the trace's order when sorted)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise UsageError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


def _positive(value, where: str, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{where}: {name} must be a positive integer, got {value!r}")
    return value


def _hash_ids(value, where: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in value):
        raise UsageError(f"{where}: hash_ids must be a list of integers, got {value!r}")
    return tuple(value)


def _jsonl_rows(data: str, name: str, fmt: str) -> list[TraceRow]:
    rows = []
    for number, line in enumerate(data.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name}, line {number}"
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{where}: expected a JSON object")
        try:
            if fmt == "mooncake":
                rows.append(
                    TraceRow(
                        _seconds(row["timestamp"], where, "timestamp") / 1000,
                        _positive(row["input_length"], where, "input_length"),
                        _positive(row["output_length"], where, "output_length"),
                        _hash_ids(row.get("hash_ids"), where),
                    )
                )
            else:
                prompt = row.get("prompt")
                if prompt is not None and not isinstance(prompt, str):
                    raise UsageError(f"{where}: prompt must be a string")
                tokens = row.get("input_tokens", 1 if prompt else None)
                rows.append(
                    TraceRow(
                        _seconds(row["t_s"], where, "t_s"),
                        _positive(tokens, where, "input_tokens"),
                        _positive(row["output_tokens"], where, "output_tokens"),
                        prompt=prompt,
                    )
                )
        except KeyError as exc:
            raise UsageError(f"{where}: missing {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{where}: {exc}") from None
    return rows


def _azure_rows(data: str, name: str) -> list[TraceRow]:
    rows, first = [], None
    reader = csv.DictReader(io.StringIO(data))
    for number, row in enumerate(reader, start=2):
        where = f"{name}, line {number}"
        try:
            stamp = dt.datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])  # the trace has 7 decimals
            first = first or stamp
            rows.append(
                TraceRow(
                    (stamp - first).total_seconds(),
                    _positive(int(row["ContextTokens"]), where, "ContextTokens"),
                    _positive(int(row["GeneratedTokens"]), where, "GeneratedTokens"),
                )
            )
        except KeyError as exc:
            raise UsageError(f"{where}: missing column {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{where}: {exc}") from None
    return rows


def _cap(input_tokens: int, output_tokens: int, limit: int) -> tuple[int, int]:
    """A request over the context cut to fit: a prompt that fits keeps its length and the output takes the
    rest; a longer prompt is cut, leaving the output up to a quarter of the context."""
    quarter = max(1, limit // 4)
    if input_tokens <= limit - quarter:
        return input_tokens, limit - input_tokens
    output = min(output_tokens, quarter)
    return max(1, limit - output), output


def parse_window(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        start, end = (float(part) if part else None for part in text.split(":"))
    except ValueError:
        raise UsageError(f"--trace-window {text!r}: give START:END in seconds of the trace, e.g. 60:180") from None
    start, end = start or 0.0, end if end is not None else float("inf")
    if end <= start:
        raise UsageError(f"--trace-window {text!r}: END must come after START")
    return start, end


def load_trace(
    path: Path,
    speed: float = 1.0,
    window: str | None = None,
    max_tokens_per_request: int | None = None,
    name: str | None = None,
) -> Trace:
    """A trace file, its times shifted to start at 0, windowed, sped up, and capped to the context."""
    name = name or f"--trace {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{name}: is a folder, not a file") from None
    except OSError as exc:  # no permission, a path through a file, ...
        raise UsageError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if not data or data.isspace():  # isspace: no copy of a large trace
        raise UsageError(f"{name}: the file is empty")
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: not UTF-8 text (byte {exc.start}); save the trace as UTF-8") from None
    try:
        fmt = detect_format(text)
    except UsageError as exc:
        raise UsageError(f"{name}: {exc}") from None
    rows = _azure_rows(text, name) if fmt == "azure" else _jsonl_rows(text, name, fmt)
    if not rows:
        raise UsageError(f"{name}: no requests in the trace")
    rows.sort(key=lambda r: r.t_s)
    origin = rows[0].t_s
    rows = [TraceRow(r.t_s - origin, r.input_tokens, r.output_tokens, r.hash_ids, r.prompt) for r in rows]
    bounds = parse_window(window)
    if bounds:
        rows = [r for r in rows if bounds[0] <= r.t_s < bounds[1]]
        if not rows:
            raise UsageError(f"--trace-window {window}: no request of {name} falls in it")
        start = rows[0].t_s
        rows = [TraceRow(r.t_s - start, r.input_tokens, r.output_tokens, r.hash_ids, r.prompt) for r in rows]
    rows = [TraceRow(r.t_s / speed, r.input_tokens, r.output_tokens, r.hash_ids, r.prompt) for r in rows]
    capped = 0
    if max_tokens_per_request:
        fitted = []
        for r in rows:
            if r.input_tokens + r.output_tokens <= max_tokens_per_request:
                fitted.append(r)
                continue
            capped += 1
            input_tokens, output_tokens = _cap(r.input_tokens, r.output_tokens, max_tokens_per_request)
            fitted.append(TraceRow(r.t_s, input_tokens, output_tokens, r.hash_ids, r.prompt))
        rows = fitted
    return Trace(path, fmt, rows, capped)
