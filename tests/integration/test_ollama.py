"""Ollama: the driver and clients against an emulation of Ollama v0.32.15's API (ollama_emulator.py,
written from Ollama's source; no traffic was recorded), and real-engine tests that run only where
Ollama is installed.

The emulator runs in-process for the clients, and as a stand-in `ollama` executable (`--ollama-binary`)
for the driver, so `bench run --engine ollama` goes through its whole path: serve, blob upload and
create, load, /api/ps, the timed streams, unload, delete. On a machine with Ollama, `bash
scripts/test.sh tests/integration/test_ollama.py` also runs the real ones: they launch `ollama
serve` on a private port, import the bundled Gemma 3 270M GGUF and load it.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest

from bench.engines.ollama import loaded_models, short_name, unload, version

from . import ollama_emulator
from .conftest import RUN_GEMMA, engine_processes, only_run_dir, read_records, run_bench
from .ollama_emulator import VERSION, WORDS, Ollama0_32_15Emulator

pytestmark = pytest.mark.integration
EMULATOR = Path(__file__).with_name("ollama_emulator.py")
RUN_OLLAMA = [*RUN_GEMMA[:2], "ollama", *RUN_GEMMA[3:]]


def _blob_model(server: Ollama0_32_15Emulator, name: str) -> None:
    """A model in the emulator's store made the way Ollama makes one: upload a blob, create with files."""
    import ollama

    blob = server.store / "tiny.gguf"
    blob.write_bytes(b"GGUF" + bytes(1000))
    client = ollama.Client(host=server.url)
    digest = client.create_blob(blob)
    assert client.create(model=name, files={"tiny.gguf": digest}, stream=False).status == "success"


@pytest.fixture
def emulator():
    with Ollama0_32_15Emulator() as server:
        _blob_model(server, "gemma3:270m")
        yield server


@pytest.fixture
def fake_ollama(tmp_path, monkeypatch):
    """An `ollama` executable that serves the emulator; its model store and the rig's import cache in tmp_path."""
    binary = tmp_path / "bin" / "ollama"
    binary.parent.mkdir()
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{EMULATOR}" "$@"\n')
    binary.chmod(0o755)
    monkeypatch.setenv("BENCH_OLLAMA_MODELS", str(tmp_path / "bench-ollama-models"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama-store"))
    return binary


def run_ollama(binary: Path, *args: str, results: Path, timeout: float = 300):
    plan = ["--concurrency", "2", "--requests", "4", "--input-tokens", "16", "--output-tokens", "16"]
    return run_bench(*RUN_OLLAMA, "--ollama-binary", str(binary), *plan, *args, results=results, timeout=timeout)


@pytest.mark.parametrize("api", ["ollama-generate", "ollama-chat"])
def test_the_count_is_ollamas_own_not_the_requested_maximum(emulator, tmp_path, api, monkeypatch):
    """The model ends its answer after 8 tokens of the 16 asked for: a client that reported max_tokens, or
    that counted anything but Ollama's eval_count, would say 16."""
    gap_ns = 0.025e9  # this test's token gap (the emulator's default is 5 ms): a read merges only 25 ms late
    monkeypatch.setattr(ollama_emulator, "TOKEN_GAP_S", gap_ns / 1e9)
    emulator.stop_after_tokens = 8
    done = run_bench(
        "run",
        "--endpoint",
        emulator.url,
        "--api",
        api,
        "--model",
        "gemma3:270m",
        "--concurrency",
        "1",
        "--requests",
        "2",
        "--warmup",
        "0",
        "--input-tokens",
        "16",
        "--output-tokens",
        "16",
        "--no-ignore-eos",
        results=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for r in read_records(only_run_dir(tmp_path)):
        assert r["output_tokens"] == 8 and r["finish_reason"] == "stop" and r["max_tokens"] == 16
        # each token is stamped as it arrives, not at the end: the emulator writes them a gap apart, so the
        # first to the last spans 7 gaps. A client that reads late gets merged segments, which carry the last
        # one's arrival (a gap can be 0): the span allows the first token's read to be 2 gaps late
        times = r["output_times_ns"]
        assert len(times) == 8 and times == sorted(times), times
        assert times[-1] - times[0] >= 5 * gap_ns, [b - a for a, b in zip(times, times[1:], strict=False)]


@pytest.mark.parametrize("api", ["ollama-generate", "ollama-chat"])
def test_native_stream_is_read_with_ollamas_own_counts_and_timings(emulator, tmp_path, api):
    done = run_bench(
        "run",
        "--endpoint",
        emulator.url,
        "--api",
        api,
        "--model",
        "gemma3:270m",
        "--concurrency",
        "2",
        "--requests",
        "4",
        "--input-tokens",
        "16",
        "--output-tokens",
        "16",
        results=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    records = read_records(only_run_dir(tmp_path))
    assert len([r for r in records if r["phase"] == "measured"]) == 4
    for r in records:
        assert r["status"] == "ok" and r["tokens_source"] == "usage"
        assert r["output_tokens"] == 16 and r["prompt_tokens"] > 16  # eval_count, prompt_eval_count (denser)
        assert r["output_text"] == "".join(" " + WORDS[i % len(WORDS)] for i in range(16))
        assert len(r["output_times_ns"]) == 16
        assert r["server_timings"]["eval_duration"] > 0 and "load_duration" in r["server_timings"]
    _, path, body = emulator.requests[-1]
    assert path == ("/api/chat" if api == "ollama-chat" else "/api/generate")
    assert body["stream"] is True and body["options"]["num_predict"] == 16 and body["model"] == "gemma3:270m"
    assert ("messages" in body) == (api == "ollama-chat")
    assert emulator.loads == 1  # the requests carried no option that makes Ollama reload the model


def test_v1_completions_count_the_final_usage_not_the_zeros_on_every_chunk(emulator, tmp_path):
    """Ollama's /v1/completions puts `usage: {0, 0, 0}` on every chunk; the real counts come last."""
    done = run_bench(
        "run",
        "--endpoint",
        emulator.url,
        "--api",
        "completions",
        "--model",
        "gemma3:270m",
        "--concurrency",
        "1",
        "--requests",
        "2",
        "--input-tokens",
        "16",
        "--output-tokens",
        "16",
        results=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for r in read_records(only_run_dir(tmp_path)):
        assert r["status"] == "ok" and r["tokens_source"] == "usage" and r["finish_reason"] == "length"
        assert r["output_tokens"] == 16 and r["prompt_tokens"] > 0


def _cut_completions(emulator, tmp_path, events: int) -> list[dict]:
    emulator.cut_after_events = events
    done = run_bench(
        "run",
        "--endpoint",
        emulator.url,
        "--api",
        "completions",
        "--model",
        "gemma3:270m",
        "--concurrency",
        "1",
        "--requests",
        "1",
        "--warmup",
        "0",
        "--input-tokens",
        "16",
        "--output-tokens",
        "16",
        results=tmp_path,
    )
    assert done.returncode == 4, done.stderr  # every stream is cut: no measured request succeeded
    return read_records(only_run_dir(tmp_path))


def test_a_v1_stream_cut_mid_way_does_not_take_the_zero_usage_as_its_count(emulator, tmp_path):
    (record,) = _cut_completions(emulator, tmp_path, 5)  # five token chunks, each with usage {0, 0, 0}
    assert record["status"] == "error" and record["cut"] is True
    assert len(record["output_times_ns"]) == 5
    assert record["tokens_source"] == "tokenizer" and record["output_tokens"] > 0  # counted, not usage's 0


def test_a_v1_stream_cut_after_its_finish_reason_does_not_count_zero_tokens(emulator, tmp_path):
    """The finish-reason chunk carries usage {0, 0, 0}; the real usage follows in a chunk of its own, which the
    cut never delivers: the count must come from the tokenizer, not from the zero."""
    (record,) = _cut_completions(emulator, tmp_path, 17)  # 16 tokens and the finish chunk, not the usage chunk
    assert record["cut"] is True and record["tokens_source"] == "tokenizer" and record["output_tokens"] >= 16


def test_management_calls_match_ollamas_api(emulator):
    assert version(emulator.url) == VERSION
    import ollama

    client = ollama.Client(host=emulator.url)
    assert client.generate(model="gemma3:270m").done_reason == "load"  # one object, not a stream
    loaded = loaded_models(emulator.url)
    assert list(loaded) == ["gemma3:270m"]
    row = loaded["gemma3:270m"]
    assert row["size"] > 1000 and row["size_vram"] == 0 and row["context_length"] == 4096 and row["digest"]
    assert unload(emulator.url, "gemma3:270m") == "unload" and loaded_models(emulator.url) == {}


def test_names_are_compared_as_ollama_lists_them():
    assert short_name("bench-gemma-abc") == "bench-gemma-abc:latest"
    assert short_name("library/llama3.2:1b") == "llama3.2:1b"
    assert short_name("registry.ollama.ai/library/qwen3") == "qwen3:latest"
    assert short_name("hf.co/org/repo:Q4_K_M") == "hf.co/org/repo:Q4_K_M"
    assert short_name("me/model") == "me/model:latest"


def test_the_driver_imports_loads_finds_and_unloads_the_model(fake_ollama, tmp_path):
    """The whole driver path against the emulator run as `ollama serve`."""
    done = run_ollama(fake_ollama, "--parallel", "2", "--telemetry-interval", "0.05", results=tmp_path / "results")
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "results")
    engine = json.loads((run_dir / "manifest.json").read_text())["engine"]
    assert engine["version"] == VERSION and engine["model"].endswith(":latest")
    # found in /api/ps by its short name with the tag
    assert engine["loaded"]["size"] > 250_000_000 and engine["loaded"]["size_vram"] == 0
    assert engine["load_done_reason"] == "load" and engine["unloaded"] is True
    # the GGUF went up as a blob and the model was created from it with `files`
    assert engine["import"]["blob_uploaded"] is True and list(engine["import"]["files"].values())[0].startswith(
        "sha256:"
    )
    # num_ctx per request: the default total context (512 per slot for 16+16 tokens) over 2 slots
    assert engine["parameters"]["num_ctx"] == 512 and engine["context_length"] == 512
    assert "-c 1024 -np 2" in (run_dir / "engine.log").read_text()
    assert engine["truncated_prompts"] == 0
    gauges = [json.loads(line).get("engine_gauges") for line in (run_dir / "telemetry.jsonl").read_text().splitlines()]
    assert any(g and g["ollama_size_bytes"] == engine["loaded"]["size"] for g in gauges)  # /api/ps over time
    records = read_records(run_dir)
    assert len(records) == 6 and all(r["status"] == "ok" and r["tokens_source"] == "usage" for r in records)
    assert not engine_processes(run_dir)

    again = run_ollama(fake_ollama, "--parallel", "2", results=tmp_path / "again")
    assert again.returncode == 0, again.stderr[-3000:]
    engine = json.loads((only_run_dir(tmp_path / "again") / "manifest.json").read_text())["engine"]
    assert engine["import"]["blob_uploaded"] is False  # the blob was already in the store


def test_ctx_size_is_the_total_over_the_slots_and_must_fit_a_request(fake_ollama, tmp_path):
    done = run_ollama(fake_ollama, "--parallel", "4", "--ctx-size", "64", results=tmp_path / "results")
    assert done.returncode == 2 and "gives 16 tokens per request" in done.stderr
    assert not (tmp_path / "results").exists()


def test_a_tag_gets_a_derived_model_that_carries_the_settings(fake_ollama, tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_EMULATOR_VRAM_BYTES", str(8 * 2**30))  # the emulator with a GPU, for --gpu-layers
    store = Path(str(tmp_path / "ollama-store"))
    with Ollama0_32_15Emulator(models_dir=store) as server:
        _blob_model(server, "gemma3:270m")  # a model "pulled" into Ollama's own store
    done = run_ollama(
        fake_ollama,
        "--ollama-tag",
        "gemma3:270m",
        "--ctx-size",
        "2048",
        "--parallel",
        "2",
        "--threads",
        "1",
        "--gpu-layers",
        "12",
        results=tmp_path / "results",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "results")
    engine = json.loads((run_dir / "manifest.json").read_text())["engine"]
    assert engine["import"] == {
        "from": "gemma3:270m",
        "parameters": {"num_ctx": 1024, "num_gpu": 12, "num_thread": 1},
        "status": "success",
    }
    assert engine["context_length"] == 1024 and engine["loaded"]["name"] == engine["model"]
    # /api/ps's details of the loaded model, as the store holds them for the tag it derives from
    details = engine["loaded"]["details"]
    assert (details["format"], details["family"], details["quantization_level"]) == ("gguf", "gemma3", "Q4_K_M")
    assert "-c 2048 -np 2" in (run_dir / "engine.log").read_text()
    assert engine["derived_model_deleted"] is True
    with Ollama0_32_15Emulator(models_dir=store) as server:
        assert [m["name"] for m in server.tags()] == ["gemma3:270m"]  # the derived model is gone, the tag kept

    missing = run_ollama(fake_ollama, "--ollama-tag", "nosuch:1b", results=tmp_path / "missing")
    assert missing.returncode == 3 and "`ollama pull nosuch:1b`" in missing.stderr


def test_gpu_layers_with_nothing_in_vram_fails_loudly(fake_ollama, tmp_path, monkeypatch):
    done = run_ollama(fake_ollama, "--gpu-layers", "99", results=tmp_path / "cpu")
    assert done.returncode == 3 and "size_vram 0" in done.stderr and "--gpu-layers 99" in done.stderr
    monkeypatch.setenv("OLLAMA_EMULATOR_VRAM_BYTES", str(8 * 2**30))  # the emulator with a GPU
    done = run_ollama(fake_ollama, "--gpu-layers", "99", results=tmp_path / "gpu")
    assert done.returncode == 0, done.stderr[-3000:]
    engine = json.loads((only_run_dir(tmp_path / "gpu") / "manifest.json").read_text())["engine"]
    assert engine["loaded"]["size_vram"] > 0 and engine["parameters"]["num_gpu"] == 99


def test_prompts_ollama_cut_are_said_in_the_record(fake_ollama, tmp_path):
    """The rig sizes prompts at 4 characters a token; a denser tokenizer makes them overflow num_ctx, and
    Ollama then cuts them without an error (its log says so)."""
    done = run_bench(
        *RUN_OLLAMA,
        "--ollama-binary",
        str(fake_ollama),
        "--concurrency",
        "1",
        "--requests",
        "2",
        "--input-tokens",
        "1024",
        "--output-tokens",
        "8",
        results=tmp_path / "results",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "results")
    engine = json.loads((run_dir / "manifest.json").read_text())["engine"]
    assert engine["parameters"]["num_ctx"] == 1280 and engine["truncated_prompts"] == 3  # warmup + 2 measured
    assert any("truncated 3 prompt(s)" in note for note in engine["notes"])
    limit = 1280 - (1280 - 5) // 2
    assert all(r["prompt_tokens"] == limit for r in read_records(run_dir))


def test_missing_ollama_is_one_clear_line(tmp_path):
    done = run_bench(*RUN_OLLAMA, "--ollama-binary", "no-such-ollama", results=tmp_path)
    assert done.returncode == 2 and "`no-such-ollama` is not on PATH" in done.stderr
    assert "Traceback" not in done.stderr and not any(Path(tmp_path).glob("*"))


NO_OLLAMA = (
    "Ollama is not installed here (its server cannot be installed on these machines); where `ollama` is on PATH \
this test runs for real"
)


@pytest.mark.skipif(shutil.which("ollama") is None, reason=NO_OLLAMA)
def test_real_ollama_serves_the_bundled_model(tmp_path):
    done = run_bench(
        *RUN_OLLAMA,
        "--concurrency",
        "2",
        "--requests",
        "4",
        "--input-tokens",
        "32",
        "--output-tokens",
        "16",
        results=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    engine = json.loads((run_dir / "manifest.json").read_text())["engine"]
    assert engine["version"] and engine["unloaded"] is True and engine["loaded"]["size"] > 0
    assert engine["context_length"] == engine["parameters"]["num_ctx"] and engine["load_done_reason"] == "load"
    assert all(r["status"] == "ok" and r["tokens_source"] == "usage" for r in read_records(run_dir))
    assert not engine_processes(run_dir)
