"""The calibration instrument: a loopback streaming server whose timing is set exactly and recorded.

Not an engine stand-in: it exists to measure the load generator. It speaks the OpenAI completions
stream (chunked HTTP/1.1, server-sent events). Each request gets its first token TTFT after the
request was read, then one token every GAP, max_tokens in all. One scheduler drives every stream
from a heap of due times, and every write is timestamped right after the bytes were handed to
the kernel. The final chunk carries the truth in `timings`:

    t_received_ns     when the whole request had been read
    t_first_write_ns  when the first token was written
    t_last_write_ns   when the last token was written
    tokens            how many tokens were written
    prompt            the request's prompt, when short (calibration tags each request: calibrate/wire.py)

All times are time.perf_counter_ns(), which on Linux is CLOCK_MONOTONIC and so shared by every
process on the machine: the client's timestamps and these compare directly.

The same server runs in-process as the fake engine of the load path's unit tests (`running`): there a
`faults` function may give a request another fate than a clean stream, by its arrival number:
"http-500" (an error status), "cut:K" (close the connection after K tokens), "chat-as-text" (chat
chunks that carry `text` instead of `delta.content`), "no-usage" (a final chunk without a usage, so the
client counts the tokens itself) or "silent" (headers, then nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import signal
import sys
import time
from collections.abc import Callable
from itertools import count

perf_ns = time.perf_counter_ns
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


TOKEN = chunk(b'data: {"choices":[{"text":" tok","index":0,"finish_reason":null}],"object":"text_completion"}\n\n')
END = chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
MAX_TAG_CHARS = 64  # a short prompt is echoed in the truth: it pairs the request with its wire segments
JSON_HEAD = b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


CHAT_TOKEN = chunk(b'data: {"choices":[{"delta":{"content":" tok"},"index":0,"finish_reason":null}]}\n\n')
CHAT_AS_TEXT = chunk(b'data: {"choices":[{"text":" tok","index":0,"finish_reason":null}]}\n\n')


class Stream:
    __slots__ = (
        "conn",
        "tokens",
        "written",
        "t_received",
        "t_first",
        "t_last",
        "gap_ns",
        "token",
        "cut_after",
        "tag",
        "usage",
    )

    def __init__(
        self,
        conn,
        tokens: int,
        t_received: int,
        gap_ns: int,
        token: bytes = TOKEN,
        cut_after: int | None = None,
        tag: str | None = None,
        usage: bool = True,
    ) -> None:
        self.conn, self.tokens, self.written, self.gap_ns = conn, tokens, 0, gap_ns
        self.t_received, self.t_first, self.t_last = t_received, 0, 0
        self.token, self.cut_after, self.tag, self.usage = token, cut_after, tag, usage


class Scheduler:
    """Writes every due token of every stream; sleeps until the next one is due."""

    def __init__(self, ttft_ns: int, gap_ns: int) -> None:
        self.ttft_ns, self.gap_ns = ttft_ns, gap_ns
        self.heap: list[tuple[int, int, Stream]] = []
        self.seq = count()
        self.wake = asyncio.Event()

    def add(self, stream: Stream) -> None:
        heapq.heappush(self.heap, (stream.t_received + self.ttft_ns, next(self.seq), stream))
        self.wake.set()

    async def run(self) -> None:
        heap = self.heap
        while True:
            if not heap:
                self.wake.clear()
                await self.wake.wait()
                continue
            delay = heap[0][0] - perf_ns()
            if delay > 0:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), delay / 1e9)
                except TimeoutError:
                    pass
                continue
            now = perf_ns()
            while heap and heap[0][0] <= now:
                due, _, stream = heapq.heappop(heap)
                transport = stream.conn.transport
                if transport is None or transport.is_closing():
                    continue
                transport.write(stream.token)
                written = perf_ns()
                stream.written += 1
                if stream.written == 1:
                    stream.t_first = written
                stream.t_last = written
                if stream.cut_after is not None and stream.written >= stream.cut_after:
                    transport.close()  # a fault: the connection drops mid-stream
                elif stream.written < stream.tokens:
                    heapq.heappush(heap, (due + stream.gap_ns, next(self.seq), stream))
                else:
                    stream.conn.finish(stream)


class Connection(asyncio.Protocol):
    scheduler: Scheduler
    faults: Callable[[int, dict], str | None] | None = None  # (request number, body) -> a fault, or None
    received = 0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        now = perf_ns()
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.handle(head[0].split(" ")[:2], body, now)

    def handle(self, request_line: list[str], body: bytes, now: int) -> None:
        method, path = (request_line + ["", ""])[:2]
        if method == "GET" and path in ("/health", "/v1/models"):
            answer = json.dumps({"status": "ok", "data": [{"id": "calibration", "object": "model"}]}).encode()
            self.transport.write(JSON_HEAD % (200, len(answer)) + answer)
            return
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            answer = json.dumps({"error": {"message": f"{method} {path}: not served here"}}).encode()
            self.transport.write(JSON_HEAD % (404, len(answer)) + answer)
            return
        request = json.loads(body or b"{}")
        tokens = max(1, int(request.get("max_tokens") or 16))
        number = type(self).received
        type(self).received += 1
        fault = self.faults(number, request) if self.faults else None
        if fault == "http-500":
            answer = json.dumps({"error": {"message": "injected failure"}}).encode()
            self.transport.write(JSON_HEAD.replace(b"OK", b"Internal Server Error") % (500, len(answer)) + answer)
            return
        self.transport.write(HEAD)
        if fault == "silent":
            return
        chat = path.endswith("chat/completions")
        token = CHAT_AS_TEXT if fault == "chat-as-text" else CHAT_TOKEN if chat else TOKEN
        cut = int(fault.split(":")[1]) if fault and fault.startswith("cut:") else None
        prompt = request.get("prompt")
        tag = prompt if isinstance(prompt, str) and len(prompt) <= MAX_TAG_CHARS else None
        usage = fault != "no-usage"
        self.scheduler.add(Stream(self, tokens, now, self.scheduler.gap_ns, token, cut, tag, usage))

    def finish(self, stream: Stream) -> None:
        truth = {
            "t_received_ns": stream.t_received,
            "t_first_write_ns": stream.t_first,
            "t_last_write_ns": stream.t_last,
            "tokens": stream.written,
        }
        if stream.tag is not None:
            truth["prompt"] = stream.tag  # names the request, as its wire segment does (calibrate/wire.py)
        final = {
            "choices": [{"text": "", "index": 0, "finish_reason": "length"}],
            "object": "text_completion",
            "usage": {"prompt_tokens": 1, "completion_tokens": stream.written, "total_tokens": stream.written + 1},
            "timings": truth,
        }
        if not stream.usage:
            del final["usage"]
        self.transport.write(chunk(b"data: " + json.dumps(final).encode() + b"\n\n") + END)


@contextlib.asynccontextmanager
async def running(ttft_ms: float, gap_ms: float, faults: Callable[[int, dict], str | None] | None = None):
    """The server on a free loopback port inside the running event loop; yields its base URL."""
    scheduler = Scheduler(int(ttft_ms * 1e6), int(gap_ms * 1e6))
    handler = type(
        "FakeEngineConnection",
        (Connection,),
        {"scheduler": scheduler, "faults": staticmethod(faults) if faults else None, "received": 0},
    )
    server = await asyncio.get_running_loop().create_server(handler, "127.0.0.1", 0, backlog=4096)
    task = asyncio.create_task(scheduler.run())
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        task.cancel()
        server.close()
        await asyncio.gather(task, return_exceptions=True)


async def serve(host: str, port: int, ttft_ms: float, gap_ms: float) -> None:
    scheduler = Scheduler(int(ttft_ms * 1e6), int(gap_ms * 1e6))
    Connection.scheduler = scheduler
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, host, port, backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    runner = asyncio.create_task(scheduler.run())
    print(f"calibration server on {host}:{port}: ttft {ttft_ms} ms, gap {gap_ms} ms", flush=True)
    await stop.wait()
    runner.cancel()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, required=True)
    parser.add_argument("--gap-ms", type=float, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, args.ttft_ms, args.gap_ms))
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.ttft_ms, args.gap_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
