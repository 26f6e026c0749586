"""A lean HTTP/1.1 client for streamed responses, built for timing fidelity.

Every read is timestamped with ``perf_counter_ns()`` inside ``data_received``, the first moment the
event loop hands us the bytes, before any parsing. Server-sent events are split out and kept as raw
payload bytes with the arrival time of the read that completed them; JSON decoding happens after
the stream ends, so it never delays a timestamp of the stream it belongs to.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    t_send_ns: int
    t_headers_ns: int
    t_end_ns: int
    # (arrival time in ns, payload of one server-sent event's data lines, or one NDJSON line), in order
    events: list[tuple[int, bytes]] = field(default_factory=list)
    body: bytes = b""  # the raw body when the response is not an event stream
    connect_ns: int | None = None  # time spent opening a new connection for this request, if any


# Parser states.
_IDLE, _HEADERS, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _BODY_LEN, _BODY_EOF, _DONE = range(9)


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self._state = _IDLE
        self._future: asyncio.Future[Response] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = perf_ns()
        if self._state in (_IDLE, _DONE):
            self.reusable = False  # bytes nobody asked for: never reuse this connection
            return
        self._pending += data
        self.bytes_received += len(data)
        try:
            self._advance(now)
        except (HttpProtocolError, ValueError) as exc:
            self._fail(HttpProtocolError(f"malformed HTTP response: {exc}"))

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
        self._pending = bytearray()
        self._state = _HEADERS
        self._status = 0
        self._headers: dict[str, str] = {}
        self._is_sse = self._is_ndjson = False
        self._sse_buf = b""
        self._events: list[tuple[int, bytes]] = []
        self._body = bytearray()
        self._remaining = 0
        self._t_headers = 0
        self.bytes_received = 0
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
            raise ConnectionError(f"the connection closed as the request was written: {exc}") from None
        return await self._future

    def usable(self) -> bool:
        return self.reusable and not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    # -- parsing ---------------------------------------------------------------------------------
    def _advance(self, now: int) -> None:
        pending = self._pending
        while True:
            state = self._state
            if state == _HEADERS:
                end = pending.find(b"\r\n\r\n")
                if end < 0:
                    if len(pending) > MAX_HEADER_BYTES:
                        raise HttpProtocolError("response headers exceed 64 KiB")
                    return
                head = bytes(pending[:end]).decode("latin-1")
                del pending[: end + 4]
                self._parse_head(head, now)
            elif state == _CHUNK_SIZE:
                end = pending.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(pending[:end]).split(b";", 1)[0].strip(), 16)
                del pending[: end + 2]
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._remaining = size
                    self._state = _CHUNK_DATA
            elif state in (_CHUNK_DATA, _BODY_LEN):
                if not pending:
                    return
                take = min(self._remaining, len(pending))
                self._on_body(bytes(pending[:take]), now)
                del pending[:take]
                self._remaining -= take
                if self._remaining == 0:
                    if state == _BODY_LEN:
                        self._finish(now)
                        return
                    self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(pending) < 2:
                    return
                if pending[:2] != b"\r\n":
                    raise HttpProtocolError("chunk not followed by CRLF")
                del pending[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = pending.find(b"\r\n")
                if end < 0:
                    return
                line = pending[:end]
                del pending[: end + 2]
                if not line:
                    self._finish(now)
                    return
            elif state == _BODY_EOF:
                if pending:
                    self._on_body(bytes(pending), now)
                    pending.clear()
                return
            else:
                return

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
        self._is_sse = content_type.startswith("text/event-stream")
        self._is_ndjson = content_type.startswith(("application/x-ndjson", "application/jsonl"))
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

    def _on_body(self, data: bytes, now: int) -> None:
        if self._is_ndjson:  # one JSON object per line (Ollama): each line is an event
            buf = self._sse_buf + data
            *lines, self._sse_buf = buf.split(b"\n")
            self._events.extend((now, line) for line in lines if line.strip())
            return
        if not self._is_sse:
            self._body += data
            return
        buf = self._sse_buf + data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            block, buf = buf[:end], buf[end + 2 :]
            payload = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if payload:
                self._events.append((now, b"\n".join(payload)))
        self._sse_buf = buf

    def _finish(self, now: int) -> None:
        if self._state == _DONE:
            return
        if (self._is_sse or self._is_ndjson) and self._sse_buf.strip():
            self._on_body(b"\n\n", now)  # a final event without its blank line
        self._state = _DONE
        if self._future is not None and not self._future.done():
            self._future.set_result(
                Response(
                    self._status, self._headers, self._t_send, self._t_headers, now, self._events, bytes(self._body)
                )
            )

    def partial(self, now: int) -> Response | None:
        """What has arrived of the response in progress, or None before its headers."""
        if self._state in (_IDLE, _HEADERS, _DONE) or not self._status:
            return None
        return Response(
            self._status, self._headers, self._t_send, self._t_headers, now, list(self._events), bytes(self._body)
        )

    def _fail(self, exc: Exception) -> None:
        self._state = _DONE
        self.reusable = False
        if self._future is not None and not self._future.done():
            self._future.set_exception(exc)
        self.close()


class HttpClient:
    """A pool of keep-alive connections to one origin (http or https)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
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

    async def _acquire(self) -> tuple[_Connection, int | None]:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn, None
            conn.close()
            self._open.discard(conn)
        loop = asyncio.get_running_loop()
        start = perf_ns()
        _, conn = await loop.create_connection(
            _Connection, self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None
        )
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
        deadline = perf_ns() + int(timeout_s * 1e9)
        # A kept-alive connection can be closed by the server just as it is reused (many servers close
        # after each streamed response). If nothing came back on a reused connection, the server never
        # read the request, so it is sent once more on a new connection; t_send is the new send.
        for attempt in (1, 2):
            remaining_s = max(0.0, (deadline - perf_ns()) / 1e9)
            try:
                conn, connect_ns = await asyncio.wait_for(self._acquire(), remaining_s)
            except TimeoutError:
                raise RequestTimeout(
                    f"the request timeout ({timeout_s:g} s) ended it before a connection opened"
                ) from None
            ok = False
            try:
                response = await asyncio.wait_for(conn.request(raw), max(0.0, (deadline - perf_ns()) / 1e9))
                ok = True
            except TimeoutError:
                timeout = RequestTimeout(f"the request timeout ({timeout_s:g} s) ended it before the response did")
                timeout.partial = conn.partial(perf_ns())
                raise timeout from None
            except ConnectionError:
                if attempt == 1 and connect_ns is None and conn.bytes_received == 0:
                    continue
                raise
            finally:
                if not ok:
                    conn.close()
                self._release(conn)
            response.connect_ns = connect_ns
            return response
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
