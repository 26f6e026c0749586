"""The HTTP/1.1 + SSE reader, fed raw response bytes cut at every possible boundary."""

import asyncio

import pytest

from bench.clients.http import HttpProtocolError, _Connection


class RecordingTransport:
    def __init__(self):
        self.written = b""
        self.closed = False

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed


def chunked(*pieces: bytes) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENTS = [b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b"data: [DONE]\n\n"]


def run_response(raw: bytes, cut_every: int | None = None, close_after: bool = False):
    """Send a request on a connection and deliver `raw` in pieces; return the response (or raise)."""

    async def go():
        conn = _Connection()
        conn.connection_made(RecordingTransport())
        task = asyncio.create_task(conn.request(b"POST / HTTP/1.1\r\n\r\n"))
        await asyncio.sleep(0)
        step = cut_every or len(raw)
        for i in range(0, len(raw), step):
            conn.data_received(raw[i : i + step])
        if close_after:
            conn.connection_lost(None)
        return await asyncio.wait_for(task, 1), conn

    return asyncio.run(go())


@pytest.mark.parametrize("cut", [None, 1, 2, 3, 7, 16])
def test_chunked_event_stream_survives_any_split(cut):
    response, conn = run_response(SSE_HEAD + chunked(*EVENTS), cut_every=cut)
    assert response.status == 200
    assert [payload for _, payload in response.events] == [b'{"n": 1}', b'{"n": 2}', b"[DONE]"]
    assert conn.usable() or conn.reusable  # complete chunked response: the connection may be reused
    times = [t for t, _ in response.events]
    assert times == sorted(times) and response.t_send_ns <= times[0] <= response.t_end_ns


def test_events_split_across_chunks_and_crlf_line_endings():
    body = b'data: {"a":\r\n\r\ndata: 1}\r\n\r\n'
    stream = SSE_HEAD + chunked(body[:9], body[9:20], body[20:])
    response, _ = run_response(stream)
    assert [p for _, p in response.events] == [b'{"a":', b"1}"]


def test_multi_line_data_and_comments():
    body = b": keep-alive\n\ndata: line one\ndata: line two\nid: 7\n\n"
    response, _ = run_response(SSE_HEAD + chunked(body))
    assert [p for _, p in response.events] == [b"line one\nline two"]


def test_event_time_is_arrival_of_its_last_byte():
    async def go():
        conn = _Connection()
        conn.connection_made(RecordingTransport())
        task = asyncio.create_task(conn.request(b"x"))
        await asyncio.sleep(0)
        conn.data_received(SSE_HEAD + b"20\r\n" + b'data: {"n": 1}\n\ndata: {"n"')
        await asyncio.sleep(0.02)
        conn.data_received(b": 2}\n\n\r\n0\r\n\r\n")
        return await task

    response = asyncio.run(go())
    (t1, _), (t2, _) = response.events
    assert t2 - t1 >= 15_000_000  # the second event completed 20 ms later, in the second read


def test_content_length_body():
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
    raw = head + b'{"error":"bad"}'
    response, _ = run_response(raw, cut_every=4)
    assert response.status == 500 and response.body == b'{"error":"bad"}' and response.events == []


def test_body_until_close():
    raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\ndata: [DONE]"
    response, conn = run_response(raw, close_after=True)
    assert [p for _, p in response.events] == [b"x", b"[DONE]"]  # the last event had no blank line
    assert not conn.reusable


def test_server_closing_mid_stream_is_an_error():
    with pytest.raises(ConnectionError, match="mid-response"):
        run_response(SSE_HEAD + b"10\r\ndata: x\n\n", close_after=True)


@pytest.mark.parametrize(
    "raw",
    [b"SPDY/9 200 OK\r\n\r\n", SSE_HEAD + b"zz\r\n", SSE_HEAD + b"3\r\nabcXY"],
    ids=["bad status line", "bad chunk size", "missing chunk CRLF"],
)
def test_malformed_responses_raise_protocol_errors(raw):
    with pytest.raises(HttpProtocolError):
        run_response(raw)


def test_connection_close_header_stops_reuse():
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    _, conn = run_response(raw)
    assert not conn.usable()


def test_ndjson_lines_are_events_whatever_the_split():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b'{"response":"a","done":false}\n{"response":"b","done":false}\n{"done":true,"eval_count":2}\n'
    for cut in (None, 1, 5):
        response, _ = run_response(head + chunked(body[:20], body[20:]), cut_every=cut)
        assert [p for _, p in response.events] == body.strip().split(b"\n")


class ClosedUnderfootTransport(RecordingTransport):
    """uvloop's transport after the peer closed it but before connection_lost ran: write raises."""

    def write(self, data):
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True reading=False>")


@pytest.mark.parametrize("transport", [ClosedUnderfootTransport, RecordingTransport])
def test_a_connection_closed_before_the_write_is_a_retryable_connection_error(transport):
    async def go():
        conn = _Connection()
        conn.connection_made(transport())
        if transport is RecordingTransport:
            conn.eof_received()  # the server's FIN arrived first
        await conn.request(b"POST / HTTP/1.1\r\n\r\n")

    with pytest.raises(ConnectionError, match="before the request was sent|as the request was written"):
        asyncio.run(go())
