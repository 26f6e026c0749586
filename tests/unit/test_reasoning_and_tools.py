"""Reasoning and tool calls, from a server that streams them as OpenAI-compatible engines do (vLLM's and
llama.cpp's reasoning_content deltas with usage.completion_tokens_details.reasoning_tokens; tool_calls deltas
with arguments in pieces)."""

import asyncio
import json
import threading
import time

import pytest

from bench.run import execute
from bench.spec import EndpointEngine, Length, LoadSpec, RunSpec, WorkloadSpec

THINK, ANSWER, GAP_S = 3, 2, 0.01
THOUGHT_S = 0.1  # the pause after each reasoning chunk: far above the client's scheduling delays


class ReasoningServer:
    """Odd requests: 3 reasoning chunks 100 ms apart, then 2 answer chunks (the first 100 ms after the last
    reasoning chunk), 10 ms apart. Even requests: a tool call (the fourth one's arguments are not JSON)."""

    def __init__(self):
        self.count = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self.loop.run_until_complete, args=(self.main(),), daemon=True).start()
        assert self.ready.wait(10)

    async def main(self):
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        await asyncio.sleep(3600)

    async def handle(self, reader, writer):
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                length = next(
                    (int(h.split(": ")[1]) for h in head.split("\r\n") if h.lower().startswith("content-length")), 0
                )
                await reader.readexactly(length)
                if head.startswith("GET"):
                    body = json.dumps({"data": [{"id": "m"}]}).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body)
                    )
                    continue
                self.count += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for i, event in enumerate(self.events(self.count)):
                    payload = f"data: {event}\n\n".encode()
                    writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                    await writer.drain()
                    await asyncio.sleep(THOUGHT_S if self.count % 2 and i < THINK else GAP_S)
                writer.write(b"0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @staticmethod
    def events(n):
        def delta(**d):
            return json.dumps({"choices": [{"index": 0, "delta": d, "finish_reason": None}]})

        if n % 2:
            out = [delta(reasoning_content=f"thought {i} ") for i in range(THINK)]
            out += [delta(content=f"answer {i} ") for i in range(ANSWER)]
            details = {"reasoning_tokens": 2 * THINK}
        else:
            arguments = '{"city": "Oslo"}' if n != 4 else '{"city": Oslo'
            out = [
                delta(
                    tool_calls=[
                        {
                            "index": 0,
                            "id": f"c{n}",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                ),
                delta(tool_calls=[{"index": 0, "function": {"arguments": arguments}}]),
            ]
            details = {}
        out.append(json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        out.append(
            json.dumps(
                {
                    "choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 10, "completion_tokens_details": details},
                }
            )
        )
        return [*out, "[DONE]"]


def test_reasoning_and_answer_are_kept_apart_and_tool_calls_judged(tmp_path):
    server = ReasoningServer()
    spec = RunSpec(
        engine=EndpointEngine(url=f"http://127.0.0.1:{server.port}"),
        model="m",
        api="chat",
        workload=WorkloadSpec(input_tokens=Length(a=4), output_tokens=Length(a=10)),
        load=LoadSpec(concurrency=[1], requests=6, warmup="0"),
        output={"results_dir": tmp_path, "run_id": "r"},
    )
    started = time.monotonic()
    result = execute(spec)
    assert result.exit_code == 0 and time.monotonic() - started < 30
    records = [json.loads(line) for line in (result.path / "requests.jsonl").read_text().splitlines()]
    thinking = [r for r in records if r["reasoning_text"]]
    assert len(thinking) == 3 and all(
        r["reasoning_tokens"] == 6 and r["output_text"] == "answer 0 answer 1 " for r in thinking
    )
    # each is stamped when its own first chunk came: the answer 3 pauses after the first reasoning chunk (1
    # after the last one). A first read a whole pause late merges the first two reasoning chunks, stamped with
    # the second one's arrival (2 pauses: it fails, as stamping the last reasoning chunk would); 2.5 pauses
    # leave a read up to half a pause (50 ms) late
    for r in thinking:
        assert r["t_first_answer_ns"] - r["t_first_reasoning_ns"] >= 2.5 * THOUGHT_S * 1e9, r
    calls = [r for r in records if r["tool_calls"]]
    assert [c["tool_calls"][0]["name"] for c in calls] == ["get_weather"] * 3
    summary = result.summary
    assert summary.reasoning_tokens.mean == 6 and summary.reasoning_token_share == pytest.approx(18 / 60)
    assert summary.time_to_first_answer_ms.n == 6 and summary.time_to_first_answer_ms.mean > summary.ttft_ms.mean
    assert (summary.tool_calls.calls, summary.tool_calls.well_formed) == (3, 2)  # the fourth request's was broken
