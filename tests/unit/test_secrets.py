"""An API key never reaches results, logs or output, even from a server that echoes it back: in an error body,
in a response header and inside the streamed text."""

import asyncio
import dataclasses
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


def test_a_secret_in_the_engines_environment_or_command_line_is_recorded_by_name_only():
    """HF_TOKEN exported on a GPU box, or passed with --engine-env, reaches the engine but not the manifest:
    the recorded environment, the spec's engine env and the command line keep the name, not the value."""
    from bench.redact import NOT_RECORDED, recorded_command, recorded_env
    from bench.run import _recorded_spec
    from bench.spec import VllmEngine

    env = {"HF_TOKEN": KEY, "HF_HUB_OFFLINE": "1", "VLLM_API_KEY": KEY, "OLLAMA_HOST": "127.0.0.1", "PATH": "/bin"}
    assert recorded_env(env, ("VLLM_", "HF_")) == {
        "HF_TOKEN": NOT_RECORDED,
        "HF_HUB_OFFLINE": "1",
        "VLLM_API_KEY": NOT_RECORDED,
    }
    argv = ["bench", "run", "--engine-env", f"HF_TOKEN={KEY}", f"--engine-env=MY_SECRET={KEY}", "--engine-env", "A=1"]
    assert recorded_command(argv) == [
        "bench", "run", "--engine-env", f"HF_TOKEN={NOT_RECORDED}", f"--engine-env=MY_SECRET={NOT_RECORDED}",
        "--engine-env", "A=1",
    ]  # fmt: skip
    spec = RunSpec(
        engine=VllmEngine(env={"HF_TOKEN": KEY, "VLLM_LOGGING_LEVEL": "DEBUG"}),
        model="m",
        workload=WorkloadSpec(input_tokens=Length(a=4), output_tokens=Length(a=4)),
    )
    kept = _recorded_spec(spec)
    assert kept.engine.env == {"HF_TOKEN": NOT_RECORDED, "VLLM_LOGGING_LEVEL": "DEBUG"}
    assert spec.engine.env["HF_TOKEN"] == KEY  # the engine itself still gets it
    assert KEY not in json.dumps(kept.model_dump(mode="json"))


def test_a_secret_an_engine_argument_carries_is_recorded_by_its_flag_only():
    """vLLM's and llama-server's --api-key, --hf-token, xllamacpp's api_keys=: given with --engine-arg, they reach
    the engine but not the recorded command, the spec, the engine's argv or a plan's state file. Arguments that
    merely contain a word of a secret's name (add_bos_token, --max-num-batched-tokens, --api-key-file) stay."""
    from bench.redact import NOT_RECORDED, recorded_argv, recorded_command, redacted_env_fields
    from bench.run import _engine_record, _recorded_spec
    from bench.spec import VllmEngine

    argv = [
        f"api_keys={KEY}", "--api-key", KEY, KEY, f"--hf-token={KEY}", "-hft", KEY, "--max-num-batched-tokens",
        "512", "--override-kv", "tokenizer.ggml.add_bos_token=bool:false", "--api-key-file", "/etc/keys", "--no-x",
    ]  # fmt: skip
    assert recorded_argv(argv) == [
        f"api_keys={NOT_RECORDED}", "--api-key", NOT_RECORDED, NOT_RECORDED, f"--hf-token={NOT_RECORDED}", "-hft",
        NOT_RECORDED, "--max-num-batched-tokens", "512", "--override-kv",
        "tokenizer.ggml.add_bos_token=bool:false", "--api-key-file", "/etc/keys", "--no-x",
    ]  # fmt: skip
    command = ["bench", "run", "--engine-arg", f"api_key={KEY}", "--engine-arg=--api-key", f"--engine-arg={KEY}",
               "--api-key-env", "MY_KEY"]  # fmt: skip
    assert recorded_command(command) == [
        "bench", "run", "--engine-arg", f"api_key={NOT_RECORDED}", "--engine-arg=--api-key",
        f"--engine-arg={NOT_RECORDED}", "--api-key-env", "MY_KEY",
    ]  # fmt: skip
    spec = RunSpec(
        engine=VllmEngine(extra_args=["--api-key", KEY, "--enforce-eager"]),
        model="m",
        workload=WorkloadSpec(input_tokens=Length(a=4), output_tokens=Length(a=4)),
    )
    assert _recorded_spec(spec).engine.extra_args == ["--api-key", NOT_RECORDED, "--enforce-eager"]
    assert spec.engine.extra_args[1] == KEY  # the engine itself still gets it
    assert KEY not in json.dumps(redacted_env_fields(spec.model_dump(mode="json")))

    class Driver:
        def record(self):
            return {"engine": "vllm", "argv": ["vllm", "serve", "m", "--api-key", KEY]}

    assert _engine_record(Driver()).argv == ["vllm", "serve", "m", "--api-key", NOT_RECORDED]


def test_a_key_given_in_place_of_its_variables_name_is_not_echoed(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--endpoint", "http://127.0.0.1:9", "--model", "m",
         "--api-key-env", KEY, "--results-dir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "give the name of the environment variable" in done.stderr
    assert KEY not in done.stdout + done.stderr and not list(tmp_path.iterdir())


def test_every_text_a_record_keeps_is_masked_on_every_path():
    """The key echoed into reasoning and a tool call's arguments is masked as in the answer and the error; so is a
    record of a request that never got a response, and one whose decode failed on an exception quoting it."""
    import asyncio

    from bench.clients.base import PreparedRequest
    from bench.clients.dialects import DIALECTS
    from bench.clients.http import HttpClient, perf_ns
    from bench.clients.streaming import Sent, StreamingClient
    from bench.load.runner import LoadRunner
    from bench.records import RequestRecord

    client = StreamingClient(HttpClient("http://127.0.0.1:9"), DIALECTS["chat"], "m", {}, 5.0, perf_ns(), secrets=[KEY])
    record = RequestRecord(
        request_id=1,
        output_text=f"a {KEY}",
        reasoning_text=f"think {KEY}",
        tool_calls=[{"id": "c1", "name": "f", "arguments": json.dumps({"key": KEY})}],
        error=f"HTTP 401: {KEY}",
    )
    assert KEY not in json.dumps(dataclasses.asdict(client.mask(record)))
    request = PreparedRequest(prompt="p", max_tokens=4)
    gone = client.unfinished(request, 2, 0, perf_ns(), "error", f"ConnectionError: {KEY}")
    assert gone.error == "ConnectionError: ***"

    class Broken(Exception):
        pass

    async def complete(sent):
        raise Broken(f"bad event carrying {KEY}")

    client.complete = complete
    runner = LoadRunner(client, iter(()), lambda r: None, lambda: None)
    decoded = asyncio.run(runner._decode(Sent(RequestRecord(request_id=3), request, None, None)))
    assert decoded.status == "error" and KEY not in decoded.error and "***" in decoded.error
