"""Ollama: contract tests against recorded wire traffic (ReplayOllamaServer), and real-engine tests
that run only where Ollama is installed.

On a machine with Ollama: `bash scripts/test.sh tests/integration/test_ollama.py` runs them all; the
real ones launch `ollama serve` on a private port, import the bundled Gemma 3 270M GGUF and load it.
"""

import json
import shutil
from pathlib import Path

import pytest

from bench.engines.ollama import OllamaSettings, loaded_models, model_name, modelfile, unload, version

from .conftest import RUN_GEMMA, engine_processes, only_run_dir, read_records, run_bench
from .ollama_replay import MODEL, ReplayOllamaServer

pytestmark = pytest.mark.integration
WORDS = " The capital of France is Paris. It is known for the Eiffel Tower and art"


@pytest.fixture
def replay():
    with ReplayOllamaServer() as server:
        yield server


@pytest.mark.parametrize("api", ["ollama-generate", "ollama-chat"])
def test_native_stream_is_read_with_ollamas_own_counts_and_timings(replay, tmp_path, api):
    done = run_bench(
        "run",
        "--endpoint",
        replay.url,
        "--api",
        api,
        "--model",
        MODEL,
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
        assert (r["output_tokens"], r["prompt_tokens"]) == (16, 26)  # eval_count, prompt_eval_count
        assert r["output_text"] == WORDS and len(r["output_times_ns"]) == 16
        assert r["server_timings"]["eval_duration"] == 654_321_000 and r["server_timings"]["load_duration"]
    path, body = replay.requests[-1]
    assert path == ("/api/chat" if api == "ollama-chat" else "/api/generate")
    assert body["stream"] is True and body["options"]["num_predict"] == 16 and body["model"] == MODEL
    assert ("messages" in body) == (api == "ollama-chat")


def test_driver_reads_version_memory_and_unloads(replay):
    assert version(replay.url) == "0.12.6"
    loaded = loaded_models(replay.url)[MODEL]
    assert loaded["size"] == 412_000_000 and loaded["size_vram"] == 0
    unload(replay.url, MODEL)
    assert replay.requests[-1] == ("/api/generate", {"model": MODEL, "keep_alive": 0})


def test_modelfile_and_model_name(tmp_path):
    gguf = tmp_path / "Gemma_3.gguf"
    settings = OllamaSettings(model_path=gguf, num_ctx=4096, num_thread=1)
    assert modelfile(settings) == f"FROM {gguf}\nPARAMETER num_ctx 4096\nPARAMETER num_thread 1\n"
    assert model_name(settings).startswith("bench-gemma-3-") and model_name(settings) == model_name(settings)
    assert model_name(OllamaSettings(tag="llama3.2:1b")) == "llama3.2:1b"


def test_missing_ollama_is_one_clear_line(tmp_path):
    done = run_bench(*RUN_GEMMA[:2], "ollama", *RUN_GEMMA[3:], "--ollama-binary", "no-such-ollama", results=tmp_path)
    assert done.returncode == 2 and "`no-such-ollama` is not on PATH" in done.stderr
    assert "Traceback" not in done.stderr and not any(Path(tmp_path).glob("*"))


NO_OLLAMA = (
    "Ollama is not installed here (its server cannot be installed on these machines); where `ollama` is on PATH \
this test runs for real"
)


@pytest.mark.skipif(shutil.which("ollama") is None, reason=NO_OLLAMA)
def test_real_ollama_serves_the_bundled_model(tmp_path):
    done = run_bench(
        *RUN_GEMMA[:2],
        "ollama",
        *RUN_GEMMA[3:],
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
    assert all(r["status"] == "ok" and r["tokens_source"] == "usage" for r in read_records(run_dir))
    assert not engine_processes(run_dir)
