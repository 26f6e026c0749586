"""A chat request's prompt tokens include its chat template's (GuideLLM's issue #75), counted as the served
engine renders them, where the stream carries no usage (llama-cpp-python's server never sends one in a stream).

The truth each count is held to is the engine's own: the usage of a non-streamed request with the same body.
llama-cpp-python (Gemma 3 270M's GGUF has no chat template, so it formats with its llama-2 fallback) is counted
by its own chat code on the model's vocabulary; llama.cpp's native server by /apply-template and /tokenize.
"""

import json
from pathlib import Path

import pytest

from bench.catalog import load_catalog, resolve_model_path
from bench.engines.base import http_json
from bench.engines.llamacpp import LlamaCppDriver, LlamaCppSettings

from .conftest import LLAMA_SERVER, RUN_GEMMA, installed, only_run_dir, read_records, run_bench

pytestmark = [pytest.mark.integration]
CONVERSATIONS = [
    [{"role": "user", "content": "The capital of France is"}],
    [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Name three rivers in Europe."}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a story about a cat."},
    ],
]
LAUNCHERS = {
    "llama-cpp-python": (installed("llama_cpp"), "llama-cpp-python not installed: bash scripts/build_llama_cpp.sh"),
    "llama-server": (
        bool(LLAMA_SERVER),
        "no llama-server binary: BENCH_LLAMA_SERVER=$(bash scripts/build_llama_cpp.sh)",
    ),
}


def gemma() -> Path:
    catalog, path = load_catalog()
    return resolve_model_path("gemma3-270m", catalog.models["gemma3-270m"], path)


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_chat_prompt_count_equals_the_engines_own_usage(tmp_path, launcher):
    present, why = LAUNCHERS[launcher]
    if not present:
        pytest.skip(why)
    settings = LlamaCppSettings(
        model_path=gemma(),
        launcher=launcher,
        server_binary=LLAMA_SERVER if launcher == "llama-server" else None,
        threads=1,
        tokens_per_request=512,
    )
    driver = LlamaCppDriver(settings, "chat")
    try:
        endpoint = driver.start(tmp_path)
        for messages in CONVERSATIONS:
            body = {"model": endpoint.model, "messages": messages, "max_tokens": 2, "temperature": 0.0, "seed": 0}
            counted = endpoint.count_chat_tokens({**body, "stream": True, "stream_options": {"include_usage": True}})
            status, answer = http_json("POST", f"{endpoint.base_url}/v1/chat/completions", body, timeout_s=120)
            assert status == 200, answer
            assert counted == answer["usage"]["prompt_tokens"]
            # the text alone (what was counted before) misses the template's tokens
            assert endpoint.count_tokens(messages[-1]["content"], True) < counted
    finally:
        driver.stop()
    how = driver.record()["chat_prompt_tokens"]
    if launcher == "llama-cpp-python":
        assert how["chat_format"] == "llama-2"  # Gemma 3 270M's GGUF carries no tokenizer.chat_template
        assert driver._prompt_counter is None  # the counter process ended with the engine


@pytest.mark.skipif(
    not installed("llama_cpp"), reason="llama-cpp-python not installed: bash scripts/build_llama_cpp.sh"
)
def test_llama_cpp_python_chat_records_say_their_counts_include_the_template(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"messages": CONVERSATIONS[1], "max_tokens": 8}) + "\n")
    done = run_bench(
        *RUN_GEMMA, "--launcher", "llama-cpp-python", "--api", "chat", "--prompts", str(prompts),
        "--concurrency", "1", "--requests", "2", results=tmp_path / "runs",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    for r in read_records(run_dir):
        assert r["status"] == "ok", r["error"]
        # 26: llama-cpp-python's own usage for this body, non-streamed (the test above); the user text alone is 7
        assert r["tokens_source"] == "tokenizer+template" and r["prompt_tokens"] == 26
        assert r["output_tokens"] == len(r["output_times_ns"]) == 8
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["engine"]["chat_prompt_tokens"]["chat_format"] == "llama-2"
    assert "tokenizer+template 2" in done.stdout
