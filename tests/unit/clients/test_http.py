"""The HTTP/1.1 + SSE reader, fed raw response bytes cut at every possible boundary; reads timed by the kernel's
receive time; 1,024 streams at once and the limits that can stop them."""

import asyncio
import errno
import os
import subprocess
import sys
import time

import pytest

from bench.clients.http import ClientLimitError, HttpClient, HttpProtocolError, _Connection, perf_ns
from bench.errors import BenchError


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


def run_response(raw: bytes, cut_every: int | None = None, close_after: bool = False, head_apart: bool = False):
    """Send a request on a connection and deliver `raw` in pieces (head_apart: its first SSE_HEAD bytes in a read
    of their own, so the body's first read starts at a chunk); return the response (or raise)."""

    async def go():
        conn = _Connection()
        conn.connection_made(RecordingTransport())
        task = asyncio.create_task(conn.request(b"POST / HTTP/1.1\r\n\r\n"))
        await asyncio.sleep(0)
        rest = raw
        if head_apart:
            conn.data_received(raw[: len(SSE_HEAD)])
            rest = raw[len(SSE_HEAD) :]
        step = cut_every or len(rest)
        for i in range(0, len(rest), step):
            conn.data_received(rest[i : i + step])
        if close_after:
            conn.connection_lost(None)
        return await asyncio.wait_for(task, 1), conn

    return asyncio.run(go())


@pytest.mark.parametrize("cut", [None, 1, 2, 3, 7, 16])
def test_chunked_event_stream_survives_any_split(cut):
    response, conn = run_response(SSE_HEAD + chunked(*EVENTS), cut_every=cut)
    assert response.status == 200
    assert [payload for _, payload in response.events] == [b'{"n": 1}', b'{"n": 2}', b"[DONE]"]
    assert conn.usable()  # complete chunked response, transport open: the connection may be reused
    times = [t for t, _ in response.events]
    assert times == sorted(times) and response.t_send_ns <= times[0] <= response.t_end_ns


def test_reads_of_several_whole_chunks_or_a_chunk_cut_anywhere_keep_every_event_and_its_reads_time():
    """After the head, the body in two reads cut at each byte: whole chunks in a read take the quick path,
    the rest the general one; each event carries the time of the read that completed it."""
    body = chunked(*EVENTS)
    for cut in range(len(body) + 1):
        conn = _Connection()
        conn.connection_made(RecordingTransport())

        async def go(conn=conn, cut=cut):
            task = asyncio.create_task(conn.request(b"POST / HTTP/1.1\r\n\r\n"))
            await asyncio.sleep(0)
            conn.feed(SSE_HEAD, 1)
            for data, now in ((body[:cut], 2), (body[cut:], 3)):
                if data:  # a socket read is never empty (that is the end of the stream)
                    conn.feed(data, now)
            return await asyncio.wait_for(task, 1)

        response = asyncio.run(go())
        ends = [body.index(event) + len(event) for event in EVENTS]  # where each event's last byte lies
        assert response.events == [
            (2 if end <= cut else 3, event[6:-2]) for end, event in zip(ends, EVENTS, strict=True)
        ], cut
        assert conn.usable(), cut


@pytest.mark.parametrize("size_line", [b"-2", b"+", b"1 x"])
def test_a_bad_chunk_size_after_whole_chunks_is_a_protocol_error(size_line):
    with pytest.raises(HttpProtocolError):  # the body's first read starts at the bad size
        run_response(SSE_HEAD + b"%s\r\n\r\nab\r\n" % size_line, head_apart=True)
    with pytest.raises(HttpProtocolError):  # behind a whole chunk in the same read
        run_response(SSE_HEAD + chunked(EVENTS[0])[:-5] + b"%s\r\n\r\nab\r\n" % size_line, head_apart=True)


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


def test_chunk_extensions_and_a_chunk_longer_than_a_read():
    event = b'data: {"n": 1}\n\n'
    long_event = b"data: " + b"x" * 5000 + b"\n\n"
    raw = SSE_HEAD + b"%x;name=value\r\n%s\r\n" % (len(event), event) + chunked(long_event)
    response, _ = run_response(raw, cut_every=1000)
    assert [p for _, p in response.events] == [b'{"n": 1}', b"x" * 5000]
    assert b"".join(p for _, p in response.pieces) == event + long_event  # the body, chunk framing removed


def test_a_partial_response_keeps_finished_events_only():
    async def go():
        conn = _Connection()
        conn.connection_made(RecordingTransport())
        task = asyncio.create_task(conn.request(b"x"))
        await asyncio.sleep(0)
        conn.data_received(SSE_HEAD + b"20\r\n" + b'data: {"n": 1}\n\ndata: {"n"')
        conn.connection_lost(None)
        with pytest.raises(ConnectionError) as cut:
            await task
        return cut.value.partial

    partial = asyncio.run(go())
    assert not partial.complete and [p for _, p in partial.events] == [b'{"n": 1}']


def test_events_are_split_only_when_asked_for():
    response, _ = run_response(SSE_HEAD + chunked(*EVENTS))
    assert response._events is None and len(response.pieces) == 3  # the timed path kept the reads alone
    assert len(response.events) == 3 and response.body == b""


def _stamped_client(url, **kwargs):
    client = HttpClient(url, **kwargs)
    if client.clock is None:
        pytest.skip("kernel receive times need Linux and plain http")
    return client


def _token_server(gaps_s, pause_before_end_s=0.0):
    """A loopback server thread that answers one request with SSE headers, then one token after each gap,
    then the end of the chunked body; returns (listener, written: perf_ns after each token's write, thread)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    written = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.recv(4096)
            conn.sendall(SSE_HEAD)
            for gap in gaps_s:
                time.sleep(gap)
                conn.sendall(chunked(b'data: {"n": %d}\n\n' % len(written))[: -len(b"0\r\n\r\n")])
                written.append(perf_ns())
            time.sleep(pause_before_end_s)
            conn.sendall(b"0\r\n\r\n")
            time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, written, thread


def test_reads_carry_the_kernels_receive_time_however_late_the_loop_reads(read_path):
    """The loop stalls from 30 to 150 ms while a server thread writes the first token at about 80 ms, then one
    every 250 ms: the first token, read some 70 ms late, still carries the time it arrived. (Tokens that queue
    up behind each other, when the loop is later than their gap, are merged by the kernel and carry the last
    one's time: with 250 ms gaps, only a loop scheduled 180 ms after its stall would see that.)"""
    listener, written, thread = _token_server((0.08, 0.25, 0.25), pause_before_end_s=0.05)

    async def go():
        client = _stamped_client(f"http://127.0.0.1:{listener.getsockname()[1]}")
        stalled = []

        def stall():  # the loop is busy from 30 to 150 ms
            time.sleep(0.12)
            stalled.append(perf_ns())

        asyncio.get_running_loop().call_later(0.03, stall)
        try:
            return await client.post("/", b"{}", 5.0), client, stalled[0]
        finally:
            await client.close()

    try:
        response, client, stall_end = asyncio.run(go())
    finally:
        thread.join(5)
        listener.close()
    times = [t for t, _ in response.events]
    assert [p for _, p in response.events] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert client.stamps == "kernel receive time" and client.clock.reads >= 2
    # each token's time lies between the end of the write before it and just after its own write
    for i, (t, w) in enumerate(zip(times, written, strict=True)):
        assert (written[i - 1] if i else 0) < t <= w + 2_000_000
    if written[0] < stall_end:  # the first token came while the loop was busy: read late, timed when it came
        assert times[0] < stall_end and client.clock.late_reads >= 1


@pytest.mark.parametrize("read_ahead", [True, False], ids=["read-ahead", "loop-only"])
def test_a_first_token_is_read_ahead_of_a_busy_loop_and_keeps_its_own_time(read_ahead, monkeypatch, read_path):
    """The loop is busy from 30 to 150 ms (as with a turn of hundreds of ready sockets, or a run of decodes),
    looking for first tokens every millisecond between pieces of its work, while a server thread writes the
    first token at about 80 ms and the second 10 ms later. Read ahead (FirstReads), the first token is read
    before the second arrives and carries its own time. Without it (the control: what every earlier tree
    did), both wait in the kernel until the loop's turn, are read together and carry the second's time: the
    TTFT error of a saturated client, a token's gap late."""
    from bench.clients.http import FirstReads

    if not read_ahead:
        monkeypatch.setattr(FirstReads, "look", lambda self: None)
    listener, written, thread = _token_server((0.08, 0.01, 0.25))

    async def go():
        client = _stamped_client(f"http://127.0.0.1:{listener.getsockname()[1]}")
        busy_until = []

        def busy():  # 120 ms of work in 1 ms pieces, a look for first tokens between two
            end = perf_ns() + 120_000_000
            while perf_ns() < end:
                time.sleep(0.001)
                client.look_for_first_reads()
            busy_until.append(perf_ns())

        asyncio.get_running_loop().call_later(0.03, busy)
        try:
            response = await client.post("/", b"{}", 5.0)
            return response, client, busy_until[0], dict(client.first_reads._readers)
        finally:
            await client.close()

    try:
        response, client, busy_end, watched_after = asyncio.run(go())
    finally:
        thread.join(5)
        listener.close()
    times = [t for t, _ in response.events]
    assert len(times) == 3 and watched_after == {}  # a socket is watched only until its first body byte
    if written[1] >= busy_end:
        pytest.skip("the server thread was not scheduled in time: both tokens came after the busy stretch")
    if read_ahead:
        assert client.first_reads.early >= 1
        assert written[0] - 50_000_000 < times[0] < written[1], "the first token took a later token's time"
    else:
        assert client.first_reads.early == 0
        assert times[0] >= written[1] - 1_000_000, "the control read the first token alone: the test proves nothing"


def test_the_first_read_watch_forgets_closed_sockets_and_closes_with_its_client():
    responses, opened, client = asyncio.run(_fake_engine_streams(64, 4, keep_client=True))
    assert opened == 64 and all(len(r.events) == 6 for r in responses)
    watch = client.first_reads
    assert watch._readers == {} and watch._epoll.closed  # every socket unwatched; the set closed with the client


def test_a_closed_client_can_send_again(read_path):
    """close() empties the pool; a later request opens a new connection (and a new watch set) as before."""

    async def go():
        from bench.calibrate.server import running

        async with running(1.0, 1.0) as url:
            client = _stamped_client(url)
            body = b'{"prompt":"x","max_tokens":2,"stream":true}'
            first = await client.post("/v1/completions", body, 10.0)
            await client.close()
            again = await client.post("/v1/completions", body, 10.0)
            await client.close()
        return first, again

    first, again = asyncio.run(go())
    assert first.status == again.status == 200 and len(again.events) == 4


def test_https_and_kernel_stamps_off_use_the_loops_read_time():
    assert HttpClient("https://example.invalid").clock is None
    plain = HttpClient("http://127.0.0.1:9", kernel_stamps=False)
    assert plain.clock is None and plain.stamps == "event-loop read time"


def test_a_clock_step_is_counted_and_the_offset_follows():
    from bench.clients.http import KernelClock

    clock = KernelClock()
    clock.offset_ns += 10_000_000  # as if the realtime clock had been stepped by 10 ms since
    clock._read_at -= 2_000_000_000
    clock.refresh()
    assert clock.steps == 1 and abs(clock.offset_ns - KernelClock._measure()) < 1_000_000


async def _fake_engine_streams(streams: int, tokens: int, kernel_stamps=None, keep_client=False):
    from bench.calibrate.server import running

    async with running(1.0, 1.0) as url:
        client = _stamped_client(url) if keep_client else HttpClient(url, kernel_stamps=kernel_stamps)
        body = b'{"prompt":"x","max_tokens":%d,"stream":true}' % tokens
        client.reserve(streams)
        try:
            responses = await asyncio.gather(*(client.post("/v1/completions", body, 60.0) for _ in range(streams)))
            opened = len(client._open)
        finally:
            await client.close()
    return (responses, opened, client) if keep_client else (responses, opened)


@pytest.mark.parametrize("kernel_stamps", [None, False], ids=["kernel-stamped", "transports"])
def test_1024_streams_at_once(kernel_stamps):
    responses, opened = asyncio.run(_fake_engine_streams(1024, 4, kernel_stamps))
    assert opened == 1024 and all(r.status == 200 for r in responses)
    assert all(len(r.events) == 6 for r in responses)  # 4 tokens, the final chunk and [DONE]


def test_a_file_descriptor_limit_that_cannot_fit_the_streams_is_a_clear_error():
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))\n"
        "from bench.clients.http import ClientLimitError, reserve_connections\n"
        "print(reserve_connections(100)['fd_soft_limit'])\n"
        "try:\n"
        "    reserve_connections(1024)\n"
        "except ClientLimitError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    fit, message = done.stdout.strip().split("\n", 1)
    assert int(fit) == 200
    assert "1024 streams need 1024 connections" in message and "ulimit -n" in message and "hard limit 200" in message


def test_the_soft_file_descriptor_limit_is_raised_toward_the_hard_one():
    script = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from bench.clients.http import reserve_connections\n"
        "found = reserve_connections(1024)\n"
        "print(found['fd_soft_limit_before'], resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 1024 + 64)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    if "ClientLimitError" in done.stderr:
        pytest.skip("this machine's hard limit is below 1,024 descriptors")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["256", "True"]


@pytest.mark.parametrize("kernel_stamps", [None, False], ids=["kernel-stamped", "transports"])
@pytest.mark.parametrize(
    "code, expected",
    [
        (errno.EADDRNOTAVAIL, "no local port left to connect to 127.0.0.1:9"),
        (errno.EMFILE, "cannot open connection 1 to 127.0.0.1:9"),
    ],
)
def test_running_out_of_ports_or_descriptors_while_connecting_names_the_limit(
    monkeypatch, code, expected, kernel_stamps
):
    async def go():
        loop = asyncio.get_running_loop()

        async def refuse(*args, **kwargs):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(loop, "create_connection", refuse)
        monkeypatch.setattr(loop, "sock_connect", refuse)
        client = HttpClient("http://127.0.0.1:9", kernel_stamps=kernel_stamps)
        try:
            await client.post("/v1/completions", b"{}", 5.0)
        finally:
            await client.close()

    with pytest.raises(ClientLimitError, match=expected) as raised:
        asyncio.run(go())
    assert isinstance(raised.value, BenchError)  # the run ends with this message, not a traceback
    if code == errno.EADDRNOTAVAIL:
        assert "ip_local_port_range" in str(raised.value) and "TIME_WAIT" in str(raised.value)
