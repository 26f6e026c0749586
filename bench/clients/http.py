"""A lean HTTP/1.1 client for streamed responses, built for timing fidelity.

Every read carries the time its bytes arrived, taken before any parsing. On Linux, for plain http,
that time is the kernel's: each connection is a socket with SO_TIMESTAMPNS, read by the event loop
with recvmsg, and every read brings the moment the kernel queued its last segment for the socket
(the same instant a packet capture on the interface records). So how long the event loop took to
wake up, or what else it was doing (decoding, collecting garbage, waiting for a core), never
enters a timestamp: the loop can sleep in the kernel between tokens and cost nothing, and still
time every token as a busy-polling loop would. A read that gathered several segments (the loop
fell behind by more than a token's gap) carries the time of the last one; so that this never happens
to a first token, the sockets awaiting one are read ahead of the loop's turn (FirstReads). Elsewhere (https, other
systems) the time is ``perf_counter_ns()`` at the top of ``data_received``, the first moment the
event loop hands the bytes over.

The kernel's clock for these times is CLOCK_REALTIME; records use perf_counter_ns (CLOCK_MONOTONIC).
The two differ by an offset that only a clock step changes: it is read with the tightest of several
bracketed reads, re-read at most once a second, and any time that would fall after the read itself
or absurdly before it is replaced by the read's own time (and counted).

Server-sent events are split out and kept as raw payload bytes with the arrival time of the read
that completed them; that and JSON decoding happen after the stream ends, so they never delay a
timestamp of any stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import platform
import select
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.errors import BenchError

try:  # split_sse's quick path compiled (bench/clients/_sse.c), where the install could build it
    from bench.clients import _sse
except ImportError:
    _sse = None

perf_ns = time.perf_counter_ns

MAX_HEADER_BYTES = 64 * 1024


class HttpProtocolError(Exception):
    """The server sent bytes that are not valid HTTP/1.1."""


class PartialResponse(Exception):
    """A response that did not reach its end; `partial` holds what had arrived (None before the headers)."""

    partial: Response | None = None


class RequestTimeout(PartialResponse):
    """The whole request took longer than its timeout."""


class StreamCut(PartialResponse, ConnectionError):
    """The server closed the connection mid-response."""


_SSE, _NDJSON, _PLAIN = "sse", "ndjson", "plain"


@dataclass(slots=True, eq=False)
class Response:
    status: int
    headers: dict[str, str]
    t_send_ns: int
    t_headers_ns: int
    t_end_ns: int
    # the body as it arrived, chunk framing removed: each piece's bytes and the arrival time (ns) of the
    # read that brought it, in two lists (ints and bytes are no work for the garbage collector). That is
    # all the timed path keeps; events and body are cut out of them only when asked for, after the stream.
    times: list[int] = field(default_factory=list)
    datas: list[bytes] = field(default_factory=list)
    kind: str = _PLAIN  # "sse", "ndjson" or "plain": how the body splits into events
    complete: bool = True  # the body reached its end (a partial response keeps no unfinished last event)
    connect_ns: int | None = None  # time spent opening a new connection for this request, if any
    _events: list[tuple[int, bytes]] | None = None

    @property
    def events(self) -> list[tuple[int, bytes]]:
        """(arrival time in ns, payload of one server-sent event's data lines, or one NDJSON line), in order.
        An event's time is the arrival of the read that completed it."""
        if self._events is None:
            if self.kind == _SSE:
                self._events = split_sse(self.times, self.datas, self._t_last_event)
            elif self.kind == _NDJSON:
                self._events = split_ndjson(self.times, self.datas, self._t_last_event)
            else:
                self._events = []
        return self._events

    def events_after(self, pieces: int) -> list[tuple[int, bytes]]:
        """A server-sent event stream's events after its first `pieces` pieces, each of which holds one whole
        event and nothing else (bench.clients._sse.openai_pieces read them): events[k:] for those k pieces."""
        return split_sse(self.times[pieces:], self.datas[pieces:], self._t_last_event)

    @property
    def _t_last_event(self) -> int | None:
        """The time of a last event without its terminator: the end, where the body reached it (else dropped)."""
        return self.t_end_ns if self.complete else None

    @property
    def pieces(self) -> list[tuple[int, bytes]]:
        """(arrival time, bytes) of each piece of the body."""
        return list(zip(self.times, self.datas, strict=True))

    @property
    def body(self) -> bytes:
        """The raw body when the response is not an event stream."""
        return b"".join(self.datas) if self.kind == _PLAIN else b""


_SSE_PAYLOAD = itemgetter(slice(6, -2))  # "data: X\n\n" -> X


def split_sse(times: list[int], datas: list[bytes], t_end: int | None) -> list[tuple[int, bytes]]:
    """Server-sent events out of timed body pieces; a last event without its blank line counts at t_end
    (None: it is dropped, the stream having been cut before it ended)."""
    if _sse is not None:  # the usual stream (every piece one whole event of one "data: " line), in C
        events = _sse.split(times, datas)
        if events is not None:
            return events
    elif datas:  # the same, checked and cut by builtins
        joined = b"".join(datas)
        if (
            joined.count(b"\n") == 2 * len(datas)
            and b"\r" not in joined
            and all(map(bytes.startswith, datas, repeat(b"data: ")))
            and all(map(bytes.endswith, datas, repeat(b"\n\n")))
        ):
            return list(zip(times, map(_SSE_PAYLOAD, datas), strict=True))
    events: list[tuple[int, bytes]] = []
    append = events.append
    buf = b""
    for now, data in zip(times, datas, strict=True):
        # The usual read: one whole event of one data line ("data: ...\n\n"), nothing carried over.
        if not buf and data[:6] == b"data: " and data[-2:] == b"\n\n" and data.count(b"\n") == 2:
            if b"\r" not in data:
                append((now, data[6:-2]))
                continue
        buf += data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            block, buf = buf[:end], buf[end + 2 :]
            payload = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if payload:
                append((now, b"\n".join(payload)))
    if t_end is not None and buf.strip():  # a final event without its blank line
        payload = [line[5:].removeprefix(b" ") for line in buf.split(b"\n") if line.startswith(b"data:")]
        if payload:
            append((t_end, b"\n".join(payload)))
    return events


def split_ndjson(times: list[int], datas: list[bytes], t_end: int | None) -> list[tuple[int, bytes]]:
    """One event per non-blank line (Ollama's stream); a last line without its newline counts at t_end."""
    events: list[tuple[int, bytes]] = []
    buf = b""
    for now, data in zip(times, datas, strict=True):
        *lines, buf = (buf + data).split(b"\n")
        events.extend((now, line) for line in lines if line.strip())
    if t_end is not None and buf.strip():
        events.append((t_end, buf))
    return events


# Parser states.
_IDLE, _HEADERS, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _BODY_LEN, _BODY_EOF, _DONE = range(9)
MAX_LINE_BYTES = 8 * 1024  # a chunk-size or trailer line longer than this is not HTTP


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time.

    The timed path is `feed` (from _StampedSocket with the kernel's time, or from `data_received` with
    the clock read first): it removes the chunk framing (one search and one int() per chunk, no copies
    of what is pending) and keeps each body piece with the time of the read that brought it. Events are
    split out only after the stream (Response.events)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self._state = _IDLE
        self._future: asyncio.Future[Response] | None = None
        self._pending = b""
        self._times: list[int] = []
        self._datas: list[bytes] = []
        self.received = False  # any byte of the response came back (reads of whole chunks skip feed: after the head)

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.feed(data, perf_ns())

    def feed(self, data: bytes, now: int) -> None:
        """Bytes that arrived at `now` (perf_counter_ns)."""
        state = self._state
        self.received = True
        if state == _CHUNK_DATA and len(data) < self._remaining:  # the middle of a long chunk
            self._times.append(now)
            self._datas.append(data)
            self._remaining -= len(data)
            return
        if state in (_IDLE, _DONE):
            self.reusable = False  # bytes nobody asked for: never reuse this connection
            return
        if state == _CHUNK_SIZE and not self._pending:  # the usual read: one whole chunk, nothing pending
            end = data.find(b"\r\n")
            if 0 < end < 16:
                try:
                    stop = end + 2 + int(data[:end], 16)
                except ValueError:  # a chunk extension, or not a size: the general path says which
                    stop = -1
                if stop > end + 2 and len(data) == stop + 2 and data.endswith(b"\r\n"):
                    self._times.append(now)
                    self._datas.append(data[end + 2 : stop])
                    return
                if stop > end + 2 and data.startswith(b"\r\n", stop):  # more: a loop behind by a token or two
                    self._times.append(now)
                    self._datas.append(data[end + 2 : stop])
                    pos = self._whole_chunks(data, stop + 2, now)
                    if pos == len(data):
                        return
                    data = data[pos:]
        if self._pending:
            data = self._pending + data
            self._pending = b""
        try:
            self._advance(data, now)
        except (HttpProtocolError, ValueError) as exc:
            self._fail(HttpProtocolError(f"malformed HTTP response: {exc}"))

    def _whole_chunks(self, data: bytes, pos: int, now: int) -> int:
        """Take the whole chunks from data[pos:] (a read that brought several); return where they end. The
        last chunk, one cut short and anything unusual are left to the general path (_advance)."""
        while True:
            end = data.find(b"\r\n", pos)
            if not 0 < end - pos < 16:
                return pos
            try:
                stop = end + 2 + int(data[pos:end], 16)
            except ValueError:
                return pos
            if stop <= end + 2 or not data.startswith(b"\r\n", stop):
                return pos
            self._times.append(now)
            self._datas.append(data[end + 2 : stop])
            pos = stop + 2

    def eof_received(self) -> bool:
        self.closed = True  # the server will send nothing more: never hand this connection out again
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _BODY_EOF:
            self._finish(perf_ns())
        elif self._state not in (_IDLE, _DONE):
            cut = StreamCut(f"server closed the connection mid-response{f' ({exc})' if exc else ''}")
            cut.partial = self.partial(perf_ns())
            self._fail(cut)

    # -- request ---------------------------------------------------------------------------------
    async def request(self, raw_request: bytes) -> Response:
        loop = asyncio.get_running_loop()
        self._future = loop.create_future()
        self._pending = b""
        self._state = _HEADERS
        self._status = 0
        self._headers: dict[str, str] = {}
        self._kind = _PLAIN
        self._times: list[int] = []
        self._datas: list[bytes] = []
        self._remaining = 0
        self._t_headers = 0
        self.received = False
        assert self.transport is not None
        # The server may close a kept-alive connection between its hand-out and this write (the loop ran
        # in between); that is a connection error the caller retries, not a client defect.
        if self.closed or self.transport.is_closing():
            raise ConnectionError("the server closed the kept-alive connection before the request was sent")
        self._t_send = perf_ns()
        try:
            self.transport.write(raw_request)
        except RuntimeError as exc:  # uvloop: "unable to perform operation on <TCPTransport closed=True>"
            self.closed = True
            if self._future.done() and not self._future.cancelled():
                self._future.exception()  # the loss already failed it: said here instead
            raise ConnectionError(f"the connection closed as the request was written: {exc}") from None
        try:
            return await self._future
        finally:  # a failed future holds its exception, whose traceback holds this frame and so this connection:
            self._future = None  # a cycle, kept for good while a run keeps the collector to the young (runner.py)

    def awaiting_body(self) -> bool:
        """A request is in flight and no byte of its body has arrived."""
        return self._state not in (_IDLE, _DONE) and not self._times

    def usable(self) -> bool:
        return self.reusable and not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    # -- parsing ---------------------------------------------------------------------------------
    def _advance(self, buf: bytes, now: int) -> None:
        """Consume `buf` (what was pending plus this read) from the current state; keep what is left."""
        pos, n = 0, len(buf)
        times, datas = self._times, self._datas
        while True:
            state = self._state
            if state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if n - pos > MAX_LINE_BYTES:
                        raise HttpProtocolError("chunk-size line too long")
                    break
                line = buf[pos:end]
                if b";" in line:
                    line = line.split(b";", 1)[0]
                size = int(line, 16)
                if size < 0:
                    raise HttpProtocolError("negative chunk size")
                pos = end + 2
                if size == 0:
                    self._state = _TRAILERS
                    continue
                stop = pos + size
                if stop + 2 <= n:  # the usual read: the whole chunk and its CRLF
                    if buf[stop : stop + 2] != b"\r\n":
                        raise HttpProtocolError("chunk not followed by CRLF")
                    times.append(now)
                    datas.append(buf[pos:stop])
                    pos = stop + 2
                    continue
                if pos < n:
                    times.append(now)
                    datas.append(buf[pos:stop])
                if stop <= n:
                    pos, self._state = stop, _CHUNK_CRLF
                else:
                    pos, self._remaining, self._state = n, stop - n, _CHUNK_DATA
                    break
            elif state == _CHUNK_DATA:
                if pos >= n:
                    break
                stop = pos + self._remaining
                times.append(now)
                datas.append(buf[pos:stop])
                if stop > n:
                    self._remaining, pos = stop - n, n
                    break
                pos, self._remaining, self._state = stop, 0, _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise HttpProtocolError("chunk not followed by CRLF")
                pos += 2
                self._state = _CHUNK_SIZE
            elif state == _HEADERS:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if n - pos > MAX_HEADER_BYTES:
                        raise HttpProtocolError("response headers exceed 64 KiB")
                    break
                head = buf[pos:end].decode("latin-1")
                pos = end + 4
                self._parse_head(head, now)
            elif state == _BODY_LEN:
                if pos >= n:
                    break
                take = min(self._remaining, n - pos)
                times.append(now)
                datas.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._finish(now)
                    return
            elif state == _TRAILERS:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if n - pos > MAX_HEADER_BYTES:
                        raise HttpProtocolError("trailers exceed 64 KiB")
                    break
                empty = end == pos
                pos = end + 2
                if empty:
                    self._finish(now)
                    return
            elif state == _BODY_EOF:
                if pos < n:
                    times.append(now)
                    datas.append(buf[pos:])
                return
            else:
                return
        if pos < n:
            self._pending = buf[pos:]

    def _parse_head(self, head: str, now: int) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise HttpProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # interim response: the real one follows
            return
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpProtocolError(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        self._status, self._headers, self._t_headers = status, headers, now
        content_type = headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            self._kind = _SSE
        elif content_type.startswith(("application/x-ndjson", "application/jsonl")):
            self._kind = _NDJSON
        if "close" in headers.get("connection", "").lower():
            self.reusable = False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = _CHUNK_SIZE
        elif "content-length" in headers:
            self._remaining = int(headers["content-length"])
            self._state = _BODY_LEN
            if self._remaining == 0:
                self._finish(now)
        else:
            self.reusable = False
            self._state = _BODY_EOF

    def _response(self, now: int, complete: bool) -> Response:
        times, datas = (self._times, self._datas) if complete else (list(self._times), list(self._datas))
        return Response(
            self._status, self._headers, self._t_send, self._t_headers, now, times, datas, self._kind, complete
        )

    def _finish(self, now: int) -> None:
        if self._state == _DONE:
            return
        self._state = _DONE
        if self._future is not None and not self._future.done():
            self._future.set_result(self._response(now, True))

    def partial(self, now: int) -> Response | None:
        """What has arrived of the response in progress, or None before its headers."""
        if self._state in (_IDLE, _HEADERS, _DONE) or not self._status:
            return None
        return self._response(now, False)

    def _fail(self, exc: Exception) -> None:
        self._state = _DONE
        self.reusable = False
        if self._future is not None and not self._future.done():
            self._future.set_exception(exc)
        self.close()


class ClientLimitError(BenchError):
    """This machine cannot open the connections the load needs (file descriptors, ephemeral ports)."""


FD_MARGIN = 64  # descriptors kept for everything else the process opens (logs, pipes, the engine's)
LIMIT_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL)


def ephemeral_ports() -> tuple[int, int] | None:
    """The kernel's range of local ports for outgoing connections (Linux), or None where unknown."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def _time_wait_sockets() -> int | None:
    try:
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reserve_connections(connections: int) -> dict[str, int | None]:
    """Make room for `connections` open at once: raise the soft file-descriptor limit toward the hard one
    where allowed, check the ephemeral ports, and raise ClientLimitError naming the limit when they cannot
    fit. Returns what it found (the limits before and after)."""
    found: dict[str, int | None] = {"connections": connections}
    try:
        import resource
    except ImportError:  # not POSIX: nothing to check
        return found
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    found["fd_soft_limit_before"], found["fd_hard_limit"] = soft, hard
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 32
    needed = connections + open_now + FD_MARGIN
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, max(needed, min(hard, 65536)))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
        if soft < needed:
            raise ClientLimitError(
                f"{connections} streams need {connections} connections, but this process may open at most {soft} "
                f"files (ulimit -n {soft}, hard limit {hard}, {open_now} open now): raise the limit (ulimit -n "
                f"{needed}, or LimitNOFILE= for a service) or run fewer streams"
            )
    found["fd_soft_limit"] = soft
    ports = ephemeral_ports()
    if ports is not None:
        available = ports[1] - ports[0] + 1
        found["ephemeral_ports"] = available
        if connections > available:
            raise ClientLimitError(
                f"{connections} streams need {connections} connections to one address, but the kernel's ephemeral "
                f"port range ({ports[0]}-{ports[1]}, net.ipv4.ip_local_port_range) holds {available}: widen it "
                f"or run fewer streams"
            )
    return found


def _limit_error(exc: OSError, host: str, port: int, open_connections: int) -> ClientLimitError:
    if exc.errno == errno.EADDRNOTAVAIL:
        ports, waiting = ephemeral_ports(), _time_wait_sockets()
        span = f"{ports[0]}-{ports[1]}" if ports else "unknown"
        return ClientLimitError(
            f"no local port left to connect to {host}:{port} ({exc.strerror}): {open_connections} connections "
            f"open, ephemeral range {span} (net.ipv4.ip_local_port_range), {waiting if waiting is not None else '?'}"
            " sockets in TIME_WAIT. Connections are kept alive and reused; a server that closes each one after "
            "its response makes every request take a new port. Widen the range, enable net.ipv4.tcp_tw_reuse, "
            "or run fewer streams"
        )
    soft = None
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    what = "the system's open-file table is full" if exc.errno == errno.ENFILE else f"ulimit -n is {soft}"
    return ClientLimitError(
        f"cannot open connection {open_connections + 1} to {host}:{port}: {exc.strerror} ({what}); raise the "
        "file-descriptor limit or run fewer streams"
    )


SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD in Linux's generic socket options (x86, Arm, RISC-V, ...)
KERNEL_STAMPS = sys.platform.startswith("linux") and platform.machine() in (
    "x86_64",
    "amd64",
    "aarch64",
    "arm64",
    "riscv64",
    "ppc64le",
    "s390x",
)
READ_BYTES = 64 * 1024  # the read buffer: a backlog of 64 KiB in one read
LATE_READ_NS = 1_000_000  # a read this long after its bytes arrived is counted as late
MAX_STAMP_AGE_NS = 60 * 1_000_000_000  # a kernel time older than this is not believed
UNBELIEVED_AHEAD_NS = 50_000  # a kernel time this far after the read is beyond the offset's own error
try:  # the read's hot path compiled (bench/clients/_stamped.c), where the install could build it
    from bench.clients import _stamped

    _stamped.configure(LATE_READ_NS, MAX_STAMP_AGE_NS, UNBELIEVED_AHEAD_NS)
except (ImportError, AttributeError):  # not built (no compiler or Python headers), or built from another tree
    _stamped = None
_TIMESPEC = struct.Struct("ll")
_unpack_timespec = _TIMESPEC.unpack_from


class KernelClock:
    """Maps the kernel's receive times (CLOCK_REALTIME) onto perf_counter_ns (CLOCK_MONOTONIC)."""

    __slots__ = ("offset_ns", "_read_at", "steps", "unbelieved", "reads", "late_reads", "max_read_lag_ns")

    def __init__(self) -> None:
        self.offset_ns = self._measure()
        self._read_at = perf_ns()
        self.steps = 0  # times the offset moved by more than 50 µs (a clock step)
        self.unbelieved = 0  # kernel times replaced by the read's own (outside [read - 60 s, read])
        self.reads = 0  # reads that carried the kernel's time
        self.late_reads = 0  # reads more than LATE_READ_NS after their bytes arrived
        self.max_read_lag_ns = 0

    @staticmethod
    def _measure(samples: int = 8) -> int:
        best = None
        for _ in range(samples):
            a = perf_ns()
            real = time.time_ns()
            b = perf_ns()
            if best is None or b - a < best[0]:
                best = (b - a, real - (a + b) // 2)
        assert best is not None
        return best[1]

    def refresh(self) -> None:
        """Re-read the offset if a second has passed (called as requests start: never on a read)."""
        now = perf_ns()
        if now - self._read_at > 1_000_000_000:
            offset = self._measure()
            if abs(offset - self.offset_ns) > 50_000:
                self.steps += 1
            self.offset_ns, self._read_at = offset, now


FIRST_READ_EVERY = 16  # reads of other sockets between two looks for a first token (each look one epoll_wait)


class FirstReads:
    """Reads the first bytes of each response ahead of the event loop's turn.

    A kernel time is exact while each read gathers one segment. When the loop falls behind (a turn of
    hundreds of ready sockets, a burst of decoding), a socket's first token can wait in the kernel until
    the next token arrives and the two are read, and timed, together: TTFT late by a token's gap. So each
    socket between its request and the first bytes of the body is also in an epoll set of its own, which is
    looked at (without waiting) every FIRST_READ_EVERY reads of other sockets, as each request starts, and
    after each response is decoded: a first token waits for at most a few reads, never for a whole turn.
    The loop still owns the socket; its own readiness for bytes read here finds none, which costs one
    recvmsg."""

    __slots__ = ("_epoll", "_readers", "reads_to_look", "_looking", "early")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Callable[[], None]] = {}
        self.reads_to_look = FIRST_READ_EVERY  # counted down by each read of any socket (_StampedSocket)
        self._looking = False
        self.early = 0  # reads made here, ahead of the loop

    def watch(self, fd: int, reader: Callable[[], None]) -> None:
        if fd not in self._readers:
            if self._epoll.closed:  # the client was closed and is used again, as its pool allows
                self._epoll = select.epoll()
            self._epoll.register(fd, select.EPOLLIN)
            self._readers[fd] = reader

    def unwatch(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def look(self) -> None:
        """Read each watched socket that has bytes now (no waiting)."""
        self.reads_to_look = FIRST_READ_EVERY
        if not self._readers or self._looking:
            return
        self._looking = True
        try:
            for fd, _ in self._epoll.poll(0):
                reader = self._readers.get(fd)
                if reader is not None:
                    self.early += 1
                    reader()
        finally:
            self._looking = False

    def close(self) -> None:
        self._readers.clear()
        self._epoll.close()


class _StampedSocket:
    """A plain TCP connection read with recvmsg, each read with the kernel's receive time (Linux).

    Stands in for an asyncio transport under a _Connection: write, close, is_closing. Reads are
    level-triggered (one recvmsg per readiness); writes go straight to send(), any rest when the
    socket is writable again."""

    __slots__ = (
        "_loop",
        "_sock",
        "_fd",
        "_protocol",
        "_clock",
        "_out",
        "_closing",
        "_view",
        "_views",
        "_space",
        "_recv",
        "_read",
        "_feed",
        "_first_reads",
        "_awaiting_first",
    )

    def __init__(
        self,
        loop,
        sock: socket.socket,
        protocol: _Connection,
        clock: KernelClock,
        first_reads: FirstReads,
        buffer: memoryview,
    ) -> None:
        self._loop, self._sock, self._fd, self._protocol, self._clock = loop, sock, sock.fileno(), protocol, clock
        self._first_reads = first_reads
        self._awaiting_first = False  # a request was written and no body byte has come back yet
        self._out = b""
        self._closing = False
        self._view = buffer  # the client's one read buffer (HttpClient)
        self._views = (buffer,)
        self._space = socket.CMSG_SPACE(_TIMESPEC.size)
        self._recv = sock.recvmsg_into
        self._read = _stamped.read if _stamped is not None else self._read_in_python
        self._feed = protocol.feed
        protocol.connection_made(self)  # type: ignore[arg-type]
        loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        protocol = self._protocol
        try:
            rest = self._read(
                self._fd,
                self._view,
                self._clock,
                protocol._times,
                protocol._datas,
                protocol._state == _CHUNK_SIZE and not protocol._pending,
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if rest is not None:  # what the read did not take as whole chunks, for the parser
            data, now = rest
            if not data:
                protocol.eof_received()
                self._lost(None)
                return
            self._feed(data, now)
        first_reads = self._first_reads
        if self._awaiting_first and self._protocol is not None and not self._protocol.awaiting_body():
            self._awaiting_first = False
            first_reads.unwatch(self._fd)
        first_reads.reads_to_look -= 1
        if first_reads.reads_to_look <= 0:
            first_reads.look()

    def _read_in_python(self, fd, view, clock, times, datas, at_chunk) -> tuple[bytes, int]:
        """One read and its arrival time, as bench.clients._stamped.read makes them (where it was not built):
        the whole read is left to _Connection.feed, whose quick path takes the whole chunks."""
        n, ancillary, _, _ = self._recv(self._views, self._space)
        read = perf_ns()
        now = read
        if n and ancillary:
            level, kind, value = ancillary[0]
            if kind == SO_TIMESTAMPNS:
                clock.reads += 1
                sec, nsec = _unpack_timespec(value)
                lag = read + clock.offset_ns - sec * 1_000_000_000 - nsec
                if 0 < lag < MAX_STAMP_AGE_NS:
                    now = read - lag
                    if lag > LATE_READ_NS:
                        clock.late_reads += 1
                        if lag > clock.max_read_lag_ns:
                            clock.max_read_lag_ns = lag
                elif lag < -UNBELIEVED_AHEAD_NS or lag >= MAX_STAMP_AGE_NS:  # beyond the offset's own error
                    clock.unbelieved += 1
        return view[:n].tobytes(), now

    def write(self, data: bytes) -> None:
        if self._closing:
            raise RuntimeError("unable to perform operation on a closed connection")
        if not self._awaiting_first:  # a request: its first bytes back are read ahead of the loop (FirstReads)
            self._awaiting_first = True
            self._first_reads.watch(self._fd, self._readable)
        if not self._out:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lost(exc)
                raise RuntimeError(f"the connection failed as the request was written: {exc}") from None
            if sent == len(data):
                return
            data = data[sent:]
            self._loop.add_writer(self._fd, self._writable)
        self._out += data

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        self._out = self._out[sent:]
        if not self._out:
            self._loop.remove_writer(self._fd)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._loop.call_soon(self._lost, None)
            self._closing = True

    def _lost(self, exc: Exception | None) -> None:
        if self._fd < 0:
            return
        self._closing = True
        self._first_reads.unwatch(self._fd)
        self._loop.remove_reader(self._fd)
        if self._out:
            self._loop.remove_writer(self._fd)
        self._sock.close()
        self._fd = -1
        protocol, self._protocol, self._feed = self._protocol, None, None  # no cycle left for the collector,
        protocol.connection_lost(exc)  # which a run keeps from the older generations (run_event_loop)


async def _open_stamped(
    loop, host: str, port: int, clock: KernelClock, first_reads: FirstReads, buffer: memoryview
) -> _Connection:
    """A connection whose reads carry the kernel's receive time (see the module's docstring)."""
    try:  # an address needs no lookup (the lookup runs in a thread: milliseconds)
        ip = ipaddress.ip_address(host)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        infos = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)  # EMFILE here: the caller names the limit
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            if exc.errno in LIMIT_ERRNOS:
                raise
            continue
        except BaseException:
            sock.close()
            raise
        conn = _Connection()
        _StampedSocket(loop, sock, conn, clock, first_reads, buffer)
        return conn
    raise error or OSError(f"no address for {host}:{port}")


class HttpClient:
    """A pool of keep-alive connections to one origin (http or https).

    `kernel_stamps`: time reads by the kernel's receive time where it can (Linux, plain http; see the
    module's docstring), else (False, or where it cannot) by the event loop's read time. `stamps` says
    which this client uses; `clock` counts its reads, the late ones and any clock steps."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, kernel_stamps: bool | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base URL must be http:// or https:// with a host, got {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.path_prefix = url.path.rstrip("/")
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        host_header = self.host if url.port is None else f"{self.host}:{self.port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed_headers = f"Host: {host_header}\r\nUser-Agent: selfhost-bench\r\n{extra}"
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        stamped = KERNEL_STAMPS and self._ssl is None and kernel_stamps is not False
        self.clock: KernelClock | None = KernelClock() if stamped else None
        self.first_reads: FirstReads | None = FirstReads() if stamped else None
        # one buffer for every connection's reads (one loop reads them one at a time, and each read's bytes are
        # copied out of it at once): 64 KiB per client, not per connection (64 MiB at 1,024 streams)
        self._read_buffer = memoryview(bytearray(READ_BYTES))
        self.stamps = "kernel receive time" if stamped else "event-loop read time"
        # which code reads the sockets: bench.clients._stamped (compiled at install), its Python twin, or asyncio's
        self.read_path = ("compiled" if _stamped is not None else "python") if stamped else "asyncio transport"

    def read_figures(self) -> dict[str, Any]:
        """How this client read and timed its sockets, and how late its event loop read them (kernel-stamped reads
        only): for a calibration's levels and a run's manifest (client_reads)."""
        figures: dict[str, Any] = {"timestamps": self.stamps, "read_path": self.read_path}
        figures["decode_path"] = "compiled" if _sse is not None else "python"  # bench.clients._sse, or its Python twin
        clock, first_reads = self.clock, self.first_reads
        if clock is None or first_reads is None:
            return figures
        return figures | {
            "reads": clock.reads,
            "late_reads": clock.late_reads,  # read more than 1 ms after their bytes arrived
            "max_read_lag_ms": clock.max_read_lag_ns / 1e6,
            "clock_steps": clock.steps,
            "unbelieved_stamps": clock.unbelieved,
            "first_reads_ahead": first_reads.early,  # read ahead of the loop's turn
        }

    def reserve(self, connections: int) -> dict[str, int | None]:
        """Make room for this many connections at once (see reserve_connections)."""
        return reserve_connections(connections)

    async def _acquire(self) -> tuple[_Connection, int | None]:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn, None
            conn.close()
            self._open.discard(conn)
        loop = asyncio.get_running_loop()
        start = perf_ns()
        try:
            if self.clock is not None:
                assert self.first_reads is not None
                conn = await _open_stamped(loop, self.host, self.port, self.clock, self.first_reads, self._read_buffer)
            else:
                _, conn = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None
                )
        except OSError as exc:
            if exc.errno in LIMIT_ERRNOS:
                raise _limit_error(exc, self.host, self.port, len(self._open)) from exc
            raise
        self._open.add(conn)
        return conn, perf_ns() - start

    def _release(self, conn: _Connection) -> None:
        if conn.usable():
            self._idle.append(conn)
        else:
            conn.close()
            self._open.discard(conn)

    async def post(self, path: str, body: bytes, timeout_s: float, accept: str = "text/event-stream") -> Response:
        """POST a JSON body; return the whole response with per-event arrival times."""
        raw = (
            f"POST {self.path_prefix}{path} HTTP/1.1\r\n{self._fixed_headers}"
            f"Content-Type: application/json\r\nAccept: {accept}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        if self.clock is not None:
            self.clock.refresh()
        self.look_for_first_reads()
        return await self._post(raw, timeout_s)

    def look_for_first_reads(self) -> None:
        """Read now any first token that has arrived (FirstReads); callers with long untimed work call it between
        pieces of that work."""
        if self.first_reads is not None:
            self.first_reads.look()

    async def _post(self, raw: bytes, timeout_s: float) -> Response:
        # One timer for the whole request (connecting included): cheaper than a wait_for per step.
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(timeout_s):
                # A kept-alive connection can be closed by the server just as it is reused (many servers close
                # after each streamed response). If nothing came back on a reused connection, the server never
                # read the request, so it is sent once more on a new connection; t_send is the new send.
                for attempt in (1, 2):
                    conn = None
                    conn, connect_ns = await self._acquire()
                    ok = False
                    try:
                        response = await conn.request(raw)
                        ok = True
                    except ConnectionError:
                        if attempt == 1 and connect_ns is None and not conn.received:
                            continue
                        raise
                    finally:
                        if not ok:
                            conn.close()
                        self._release(conn)
                    response.connect_ns = connect_ns
                    return response
        except TimeoutError:
            if conn is None:
                raise RequestTimeout(
                    f"the request timeout ({timeout_s:g} s) ended it before a connection opened"
                ) from None
            timeout = RequestTimeout(f"the request timeout ({timeout_s:g} s) ended it before the response did")
            timeout.partial = conn.partial(perf_ns())
            raise timeout from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        if self.first_reads is not None:
            self.first_reads.close()
