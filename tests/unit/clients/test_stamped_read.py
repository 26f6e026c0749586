"""The timed read's two paths: bench.clients._stamped (compiled from bench/clients/_stamped.c at install) and
_StampedSocket._read_in_python, where it was not built. Each reads a real loopback TCP socket; whatever it does
not take as whole chunks goes to _Connection.feed. Checked against feed alone, given the same bytes at the same
time, over random chunked bodies cut at random places."""

import asyncio
import fcntl
import random
import select
import socket
import struct
import termios

import pytest

from bench.clients import http
from bench.clients.http import (
    READ_BYTES,
    SO_TIMESTAMPNS,
    FirstReads,
    KernelClock,
    _Connection,
    _StampedSocket,
    perf_ns,
)

pytestmark = pytest.mark.skipif(not http.KERNEL_STAMPS, reason="kernel receive times need Linux")

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(autouse=True)
def timestamping_on():
    """Keeps the kernel's receive timestamps on for the test. The first socket to ask for them turns them on
    from a work queue, a moment later (net_enable_timestamp): bytes that come before carry no time, and their
    reads take the read's own. A socket kept open with SO_TIMESTAMPNS, probed until its reads carry one."""
    listener = socket.create_server(("127.0.0.1", 0))
    keeper = socket.create_connection(listener.getsockname())
    peer, _ = listener.accept()
    keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    for _ in range(1000):
        peer.sendall(b"x")
        if keeper.recvmsg(16, 64)[1]:
            break
        select.select([], [], [], 0.001)
    else:
        pytest.fail("the kernel gave no receive time within a second")
    yield
    for sock in (keeper, peer, listener):
        sock.close()


class _NoLoop:
    """Stands in for the event loop: these tests call _readable themselves, one read per send."""

    def add_reader(self, fd, callback):
        pass

    def remove_reader(self, fd):
        pass

    def call_soon(self, callback, *args):
        callback(*args)


# Size lines the parser reads (int(x, 16)) besides plain hex digits; the compiled read leaves each to it
_SIZE_SPELLINGS = (
    lambda h: h.upper(),
    lambda h: "0" * 5 + h,  # leading zeros
    lambda h: h.rjust(16, "0"),  # 16 digits: beyond the quick paths, for the general one
    lambda h: " " + h,
    lambda h: h + " ",
    lambda h: "+" + h,
    lambda h: "0x" + h,
    lambda h: h[0] + "_" + h[1:] if len(h) > 1 else h,
    lambda h: h + ";ext=1",  # a chunk extension
)


def _random_body(rng: random.Random) -> tuple[bytes, list[bytes], list[int], list[int]]:
    """A chunked body of SSE events (sometimes several to a chunk, one cut across two, a size spelt as only the
    parser reads it), the events' payloads, and where each chunk and each size line ends."""
    events = [b'data: {"n": %d, "t": "%s"}\n\n' % (i, b"x" * rng.randrange(0, 40)) for i in range(12)]
    stream = b"".join(events)
    body, pos, chunk_ends, size_ends = b"", 0, [], []
    while pos < len(stream):
        take = min(len(stream) - pos, rng.choice((len(events[0]), rng.randrange(1, 90))))
        size = f"{take:x}"
        if rng.random() < 0.25:
            size = rng.choice(_SIZE_SPELLINGS)(size)
        body += size.encode() + b"\r\n"
        size_ends.append(len(body))
        body += stream[pos : pos + take] + b"\r\n"
        pos += take
        chunk_ends.append(len(body))
    return body + b"0\r\n\r\n", [e[6:-2] for e in events], chunk_ends, size_ends


def _stamped_pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    """A loopback connection: the client's end non-blocking with the kernel's receive times on, and the server's."""
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    client.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    client.setblocking(False)
    return client, server


@pytest.fixture
def pair():
    listener = socket.create_server(("127.0.0.1", 0))
    client, server = _stamped_pair(listener)
    yield client, server
    for sock in (client, server, listener):
        sock.close()


def _queued(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def test_reads_take_whole_chunks_as_the_parser_would_and_keep_each_reads_time(read_path):
    rng = random.Random(15)
    listener = socket.create_server(("127.0.0.1", 0))
    all_taken = []  # reads the read itself took whole (it returned no rest for feed)
    for _ in range(60):
        client, server = _stamped_pair(listener)
        body, payloads, chunk_ends, size_ends = _random_body(rng)

        async def go(client=client, server=server, body=body, chunk_ends=chunk_ends, size_ends=size_ends):
            conn, reference = _Connection(), _Connection()
            clock = KernelClock()
            stamped = _StampedSocket(_NoLoop(), client, conn, clock, FirstReads(), memoryview(bytearray(READ_BYTES)))
            read = stamped._read

            def counted(*args):
                rest = read(*args)
                all_taken.append(rest is None)
                return rest

            stamped._read = counted
            reference.connection_made(_Sink())
            tasks = [asyncio.create_task(c.request(b"POST / HTTP/1.1\r\n\r\n")) for c in (conn, reference)]
            await asyncio.sleep(0)
            sent, pos, cuts = HEAD + body, 0, 0
            # a server writes a chunk at a time (or a few), or its size line apart
            chunk_ends = [len(HEAD)] + [len(HEAD) + end for end in chunk_ends] + [len(sent)]
            size_ends = [len(HEAD) + end for end in size_ends]
            while pos < len(sent):
                chunk_end = [b for b in chunk_ends if b > pos][: rng.randrange(1, 4)][-1]
                size_end = next((b for b in size_ends if b > pos), chunk_end)
                end = rng.choice((chunk_end, chunk_end, chunk_end, size_end, chunk_end + rng.randrange(-3, 4)))
                end = end if rng.random() < 0.8 else pos + rng.randrange(1, 400)  # or a cut anywhere
                piece = sent[pos : max(pos + 1, end)]
                sent_at = perf_ns()
                server.sendall(piece)
                pos += len(piece)
                select.select([client], [], [], 1.0)
                while _queued(client) < len(piece):  # loopback delivers within the send; this is a safety net
                    select.select([], [], [], 0.001)
                before = len(conn._times)
                read_at = perf_ns()
                stamped._readable()
                cuts += 1
                now = conn._times[-1] if len(conn._times) > before else 0  # a read of framing alone keeps no time
                # the kernel's time: after the send began and before the read (mapped with an offset good to µs)
                assert now == 0 or sent_at - 50_000 < now < read_at, (now - sent_at, read_at - now)
                assert all(t == now for t in conn._times[before:])  # every piece of a read: that read's time
                reference.feed(piece, now)
                for name in ("_times", "_datas", "_state", "_pending", "_remaining"):
                    assert getattr(conn, name) == getattr(reference, name), (name, cuts)
            responses = await asyncio.gather(*(asyncio.wait_for(t, 1) for t in tasks))
            return responses, clock, cuts

        (response, expected), clock, cuts = asyncio.run(go())
        client.close()
        server.close()
        assert [p for _, p in response.events] == payloads == [p for _, p in expected.events]
        assert response.complete and clock.reads == cuts and clock.unbelieved == 0
    listener.close()
    # the compiled read took the whole chunks of many reads itself; the Python one leaves every read to feed
    assert (sum(all_taken) > 30) if read_path == "compiled" else not any(all_taken), (sum(all_taken), len(all_taken))


class _Sink:
    def write(self, data):
        pass

    def close(self):
        pass

    def is_closing(self):
        return False


async def _request_on(client: socket.socket, clock: KernelClock | None = None):
    """A request in flight on a connection read through _StampedSocket: (connection, its socket, the request)."""
    conn = _Connection()
    stamped = _StampedSocket(
        _NoLoop(), client, conn, clock or KernelClock(), FirstReads(), memoryview(bytearray(READ_BYTES))
    )
    task = asyncio.create_task(conn.request(b"POST / HTTP/1.1\r\n\r\n"))
    await asyncio.sleep(0)
    return conn, stamped, task


def _deliver(server: socket.socket, client: socket.socket, stamped: _StampedSocket, data: bytes) -> None:
    """Send data and read it as the loop would: while the socket has bytes queued."""
    server.sendall(data)
    select.select([client], [], [], 1.0)
    while stamped._fd >= 0 and _queued(client):
        stamped._readable()


def test_end_of_file_and_an_empty_socket(read_path, pair):
    """Nothing to read is BlockingIOError (the loop's readiness was for bytes read ahead); the peer's close is
    the end of the stream, mid-response a cut."""
    client, server = pair

    async def go():
        conn, stamped, task = await _request_on(client)
        stamped._readable()  # nothing there yet: no error, no state change
        assert conn._state == http._HEADERS and not conn.closed
        _deliver(server, client, stamped, HEAD + b"5\r\nhello\r\n")
        server.close()
        select.select([client], [], [], 1.0)
        stamped._readable()
        with pytest.raises(http.StreamCut) as cut:
            await asyncio.wait_for(task, 1)
        return conn, cut.value.partial

    conn, partial = asyncio.run(go())
    assert conn.closed and partial.datas == [b"hello"]


def test_the_compiled_read_checks_its_arguments(compiled_read):
    with pytest.raises(TypeError, match="lists"):
        compiled_read.read(0, bytearray(8), None, (), [], True)
    with pytest.raises(ValueError, match="file descriptor"):
        compiled_read.read(-1, bytearray(8), None, [], [], True)
    with pytest.raises(TypeError, match="6 arguments"):
        compiled_read.read(0, bytearray(8))
    with pytest.raises(ValueError, match="durations"):
        compiled_read.configure(-1, 1, 1)


@pytest.mark.parametrize("body", [b"5\r\nhelloXX", b"3\r\nabc\r\n5\r\nhello\n\r"], ids=["alone", "behind-a-chunk"])
def test_a_chunk_not_followed_by_its_crlf_is_a_protocol_error(read_path, body, pair):
    """The read leaves a chunk it cannot take to the parser, which says what is wrong with it."""
    client, server = pair

    async def go():
        conn, stamped, task = await _request_on(client)
        for piece in (HEAD, body):
            _deliver(server, client, stamped, piece)
        with pytest.raises(http.HttpProtocolError, match="CRLF"):
            await asyncio.wait_for(task, 1)

    asyncio.run(go())


ROOMY_LATE_READ_NS = 200_000_000  # "late" for this test: beyond any scheduling delay of a loaded test machine


@pytest.fixture
def roomy_late_read(monkeypatch):
    """The late-read bar raised from 1 ms to 200 ms on both paths, so that a read the test makes on time is on
    time even when a busy machine runs the test a few ms after its bytes arrived."""
    usual = http.LATE_READ_NS
    monkeypatch.setattr(http, "LATE_READ_NS", ROOMY_LATE_READ_NS)
    if http._stamped is not None:
        http._stamped.configure(ROOMY_LATE_READ_NS, http.MAX_STAMP_AGE_NS, http.UNBELIEVED_AHEAD_NS)
    yield
    if http._stamped is not None:
        http._stamped.configure(usual, http.MAX_STAMP_AGE_NS, http.UNBELIEVED_AHEAD_NS)


@pytest.mark.parametrize(
    "shift_ns, late, unbelieved",
    [(0, False, False), (250_000_000, True, False), (-1_000_000_000, False, True), (61_000_000_000, False, True)],
    ids=["on-time", "250-ms-late", "1-s-ahead", "61-s-old"],
)
def test_a_reads_time_is_the_kernels_less_the_offset_and_its_lateness_is_counted(
    read_path, roomy_late_read, pair, shift_ns, late, unbelieved
):
    """The kernel's time for the queued bytes (peeked) less the clock's offset is the read's time to the ns; with
    the offset shifted the read looks 250 ms late (counted, and the longest lag kept) or ahead of the read itself
    (not believed: counted, and the read's own time taken). The shifts and the late bar (raised to 200 ms) are far
    beyond the delay a loaded machine puts between a packet's arrival and the test's read of it."""
    client, server = pair

    async def go():
        clock = KernelClock()
        clock.offset_ns += shift_ns
        conn, stamped, task = await _request_on(client, clock)
        _deliver(server, client, stamped, HEAD)
        server.sendall(b"5\r\nhello\r\n")
        select.select([client], [], [], 1.0)
        _, ancillary, _, _ = client.recvmsg(64, socket.CMSG_SPACE(16), socket.MSG_PEEK)
        sec, nsec = struct.unpack("ll", ancillary[0][2])
        read_at = perf_ns()
        stamped._readable()
        after = perf_ns()
        _deliver(server, client, stamped, b"0\r\n\r\n")
        await asyncio.wait_for(task, 1)
        return conn, clock, sec * 1_000_000_000 + nsec, read_at, after

    conn, clock, kernel_ns, read_at, after = asyncio.run(go())
    (now,) = conn._times[:1]
    if unbelieved:
        assert read_at <= now <= after and clock.unbelieved >= 1
    else:
        assert now == kernel_ns - clock.offset_ns and clock.unbelieved == 0
    assert (clock.late_reads >= 1) == late
    if late:
        assert shift_ns <= clock.max_read_lag_ns < shift_ns + ROOMY_LATE_READ_NS
    assert clock.reads == 3
