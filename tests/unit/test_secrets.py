"""An API key never reaches results, logs or output, even from a server that echoes it back: in an error body,
in a response header and inside the streamed text."""

import asyncio
import json
import threading

from bench.run import execute
from bench.spec import EndpointEngine, Length, LoadSpec, RunSpec, WorkloadSpec

KEY = "sk-test-3f9a7c1e"


class EchoingServer:
    """Answers /v1/models, then alternates: a 401 whose body and X-Echo header carry the caller's bearer key,
    and a stream whose text carries it."""

    def __init__(self):
        self.count = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self.loop.run_until_complete, args=(self.main(),), daemon=True).start()
        assert self.ready.wait(10)

    async def main(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        await asyncio.sleep(3600)

    async def handle(self, reader, writer):
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                headers = dict(h.split(": ", 1) for h in head.split("\r\n")[1:] if ": " in h)
                length = int(headers.get("Content-Length", headers.get("content-length", "0")))
                await reader.readexactly(length)
                key = headers.get("Authorization", "").removeprefix("Bearer ")
                if head.startswith("GET /v1/models"):
                    body, kind, status = json.dumps({"data": [{"id": "m"}]}).encode(), "application/json", 200
                else:
                    self.count += 1
                    if self.count % 2:
                        body, kind, status = f'{{"error": "invalid key {key}"}}'.encode(), "application/json", 401
                    else:
                        chunk = json.dumps(
                            {
                                "choices": [{"text": f"my key is {key}", "finish_reason": "stop"}],
                                "usage": {"completion_tokens": 4, "prompt_tokens": 2},
                            }
                        )
                        body, kind, status = f"data: {chunk}\n\ndata: [DONE]\n\n".encode(), "text/event-stream", 200
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nX-Echo: {key}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def test_an_echoed_key_is_masked_everywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_TEST_KEY", KEY)
    server = EchoingServer()
    spec = RunSpec(
        engine=EndpointEngine(url=f"http://127.0.0.1:{server.port}", api_key_env="BENCH_TEST_KEY"),
        model="m",
        api="completions",
        workload=WorkloadSpec(input_tokens=Length(a=4), output_tokens=Length(a=4)),
        load=LoadSpec(concurrency=[1], requests=6, warmup="0"),
        output={"results_dir": tmp_path, "run_id": "r"},
    )
    result = execute(spec)
    records = [json.loads(line) for line in (result.path / "requests.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["status"] for r in records} == {"ok", "error"}  # both echoes happened
    assert any("***" in (r["error"] or "") for r in records) and any("***" in (r["output_text"] or "") for r in records)
    for path in result.path.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    out = capsys.readouterr()
    assert KEY not in out.out + out.err
    assert result.manifest.engine.model_dump()["api_key"] == "from $BENCH_TEST_KEY"
