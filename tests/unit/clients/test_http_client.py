"""HttpClient against real sockets on loopback: keep-alive reuse, the one retry on a reused connection that got
no bytes, the request timeout, path prefixes, and https with a certificate made here."""

import asyncio
import gc
import ssl
import subprocess

import pytest

from bench.clients.http import HttpClient, RequestTimeout, _Connection

BODY = b'data: {"n": 1}\n\ndata: [DONE]\n\n'


class Origin:
    """A tiny HTTP/1.1 origin: answers each request with one SSE body, counts connections, records paths.
    close_after_response: it closes every connection after answering (while advertising keep-alive, as
    some servers do), so a reused connection gets no bytes. silent: it reads and never answers.
    drop_second: it reads the second request on a connection and closes without a byte (the race of a
    keep-alive timeout firing as the request arrives)."""

    def __init__(self, close_after_response=False, silent=False, drop_second=False):
        self.connections = 0
        self.paths: list[str] = []
        self.close_after_response, self.silent, self.drop_second = close_after_response, silent, drop_second

    async def handle(self, reader, writer):
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                self.paths.append(lines[0].split(" ")[1])
                length = next(
                    int(v) for k, _, v in (h.partition(": ") for h in lines[1:]) if k.lower() == "content-length"
                )
                await reader.readexactly(length)
                if self.silent:
                    await asyncio.sleep(3600)
                served += 1
                if self.drop_second and served == 2:
                    writer.close()
                    return
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(BODY), BODY)
                )
                await writer.drain()
                if self.close_after_response:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def serve(origin, ssl_context=None):
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


def test_keep_alive_reuses_one_connection():
    async def go():
        origin = Origin()
        server, port = await serve(origin)
        client = HttpClient(f"http://127.0.0.1:{port}")
        responses = [await client.post("/v1/completions", b"{}", 5.0) for _ in range(3)]
        await client.close()
        server.close()
        return origin, responses

    origin, responses = asyncio.run(go())
    assert origin.connections == 1 and all(r.status == 200 for r in responses)
    assert responses[0].connect_ns is not None and responses[1].connect_ns is None  # only the first one connected


def test_a_reused_connection_the_server_closed_is_retried_once_on_a_new_one():
    async def go():
        origin = Origin(close_after_response=True)
        server, port = await serve(origin)
        client = HttpClient(f"http://127.0.0.1:{port}")
        first = await client.post("/a", b"{}", 5.0)
        await asyncio.sleep(0.05)  # the server's close reaches the client's idle connection
        second = await client.post("/b", b"{}", 5.0)
        await client.close()
        server.close()
        return origin, first, second

    origin, first, second = asyncio.run(go())
    assert first.status == second.status == 200 and origin.connections == 2 and origin.paths == ["/a", "/b"]
    assert [p for _, p in second.events] == [b'{"n": 1}', b"[DONE]"]


def test_a_request_a_reused_connection_lost_without_a_byte_is_sent_again_on_a_new_one():
    """The connection was open when handed out and the request was written; the server closed it unanswered.
    Nothing came back, so the server never served it: the client sends it once more on a fresh connection."""

    async def go():
        origin = Origin(drop_second=True)
        server, port = await serve(origin)
        client = HttpClient(f"http://127.0.0.1:{port}")
        first = await client.post("/a", b"{}", 5.0)
        second = await client.post("/b", b"{}", 5.0)  # on the kept-alive connection, which the server drops
        await client.close()
        server.close()
        return origin, first, second

    origin, first, second = asyncio.run(go())
    assert first.status == second.status == 200 and [p for _, p in second.events] == [b'{"n": 1}', b"[DONE]"]
    assert origin.connections == 2 and origin.paths == ["/a", "/b", "/b"]  # /b read, dropped, then served
    assert second.connect_ns is not None  # the answer came on the new connection


def test_a_connection_lost_under_a_request_is_freed_without_the_collector():
    """During a run the collector only sweeps the young generation (bench.load.runner.run_event_loop), so a
    connection must be freed by reference counting alone. A request failed by a lost connection used to keep
    its exception in the connection's future, and the exception's traceback held the connection: a cycle per
    lost connection, which grew a 30-minute llama.cpp soak by some 70 KiB a request."""

    async def go():
        origin = Origin(drop_second=True)
        server, port = await serve(origin)
        client = HttpClient(f"http://127.0.0.1:{port}")
        for _ in range(3):  # each second request on a connection is dropped, then sent again on a new one
            await client.post("/a", b"{}", 5.0)
        await client.close()
        server.close()
        await server.wait_closed()
        return origin.connections

    gc.collect()
    gc.disable()
    try:
        connections = asyncio.run(go())
        left = [o for o in gc.get_objects() if isinstance(o, _Connection)]
    finally:
        gc.enable()
    assert connections == 3 and left == []  # two lost, each request answered


def test_the_request_timeout_ends_a_request_that_gets_no_answer():
    async def go():
        server, port = await serve(Origin(silent=True))
        client = HttpClient(f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(RequestTimeout, match=r"the request timeout \(0.2 s\) ended it"):
                await client.post("/v1/completions", b"{}", 0.2)
        finally:
            await client.close()
            server.close()

    asyncio.run(go())


def test_a_base_url_path_prefixes_every_request():
    async def go():
        origin = Origin()
        server, port = await serve(origin)
        client = HttpClient(f"http://127.0.0.1:{port}/proxy/v2/")
        await client.post("/v1/chat/completions", b"{}", 5.0)
        await client.close()
        server.close()
        return origin

    assert asyncio.run(go()).paths == ["/proxy/v2/v1/chat/completions"]


def test_https_with_a_certificate_the_system_trusts(tmp_path, monkeypatch):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip("openssl could not make a certificate here")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what ssl.create_default_context() trusts

    async def go():
        origin = Origin()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server, port = await serve(origin, context)
        client = HttpClient(f"https://localhost:{port}")
        response = await client.post("/v1/completions", b"{}", 5.0)
        await client.close()
        server.close()
        return response

    response = asyncio.run(go())
    assert response.status == 200 and [p for _, p in response.events] == [b'{"n": 1}', b"[DONE]"]
