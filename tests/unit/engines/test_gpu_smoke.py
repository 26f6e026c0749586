"""scripts/gpu_smoke.sh and its checks, on a machine without a GPU: the script's plan (--dry-run), the
checks (scripts/gpu_smoke_check.py) on synthetic run directories (written here in the shape bench run
writes, with GPU readings invented for the test, not recorded), and the tiny GGUF it falls back to,
served for real by llama.cpp on the CPU. The script itself has not run on a GPU in these tests."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SMOKE = REPO / "scripts" / "gpu_smoke.sh"
spec = importlib.util.spec_from_file_location("gpu_smoke_check", REPO / "scripts" / "gpu_smoke_check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def dry_run(*args: str) -> str:
    done = subprocess.run(["bash", str(SMOKE), "--dry-run", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_the_plan_builds_cuda_for_one_architecture_and_runs_both_concurrencies():
    plan = dry_run("--arch", "90")
    assert "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90" in plan
    assert "vendor/llama.cpp" in plan and "--target llama-server" in plan
    assert "pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36" in plan
    bench_line = next(line for line in plan.splitlines() if "/bin/bench run" in line)
    assert "--gpu-layers 99" in bench_line and "--concurrency 1\\,8" in bench_line
    assert "--model gemma3-270m" in bench_line
    assert "gpu_smoke_check.py" in plan and "--stages 2" in plan and "nothing was run" in plan


def test_offline_everything_comes_from_the_folder_and_a_gguf_gets_its_own_catalog(tmp_path):
    plan = dry_run("--offline", str(tmp_path), "--gguf", str(tmp_path / "tiny.gguf"))
    assert f"--no-index --find-links {tmp_path} {REPO}" in plan
    assert f"tar -xzf {tmp_path}/llama_cpp_python-0.3.36.tar.gz" in plan
    assert "pip download" not in plan  # nothing from a registry
    assert "make_tiny_llama.py --catalog" in plan and "--model tiny-llama-gguf" in plan


def test_a_given_llama_server_is_not_rebuilt():
    plan = dry_run("--llama-server", "/opt/llama-server")
    assert "cmake" not in plan and "--llama-server /opt/llama-server" in plan


MIB = 2**20


def gpu_run(tmp_path: Path, **changes) -> Path:
    """A run directory of two stages in the files bench run writes, with GPU readings made up for the test."""
    run = tmp_path / "gpu-smoke-run"
    run.mkdir()
    offload = {
        "offloaded": True,
        "layers_offloaded": 19,
        "layers_total": 19,
        "model_buffers_mib": {"CPU_Mapped": 85.2, "CUDA0": 235.2},
        "kv_buffers_mib": {"CUDA0": 9.0},
        "devices": [],
    }
    manifest = {
        "status": "complete",
        "engine": {"engine": "llamacpp", "launcher": "llama-server", "gpu_offload": offload},
        "hardware": {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * 2**30}]},
    }
    rows = [
        {
            "t_ns": i * 250_000_000,
            "gpus": [
                {
                    "index": 0,
                    "memory_used_bytes": 2 * 2**30,
                    "utilization_percent": 60.0,
                    "power_w": 250.0,
                    "energy_mj": 1_000_000 + i * 62_500,
                    "engine_memory_bytes": 900 * MIB,
                    "engine_memory_source": "device delta since engine start",
                }
            ],
        }
        for i in range(8)
    ]
    stage = {
        "stage": 0,
        "label": "concurrency 1",
        "requests": {"successful": 40},
        "output_throughput_tokens_per_s": 420.0,
        "ttft_ms": {"p50": 8.0},
        "tpot_ms": {"p50": 2.3},
        "telemetry": {
            "gpus": [{"index": 0, "memory_peak_bytes": 2 * 2**30, "energy_method": "energy counter"}],
            "gpu_energy_j": 437.5,
            "gpu_energy_j_per_output_token": 0.17,
        },
    }
    summary = {"stages": [stage, {**stage, "stage": 1, "label": "concurrency 8"}]}
    for key, value in changes.items():
        target, _, field = key.partition("__")
        {"manifest": manifest, "summary": summary}[target][field] = value
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "telemetry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_a_gpu_run_with_every_reading_passes_and_prints_its_figures(tmp_path):
    figures, failures = check.check_run(gpu_run(tmp_path), stages=2)
    assert failures == []
    assert figures["offload"]["layers"] == "19/19" and figures["offload"]["gpu_model_buffers_mib"] == {"CUDA0": 235.2}
    assert [s["energy_j_per_output_token"] for s in figures["stages"]] == [0.17, 0.17]
    assert figures["engine_vram_source"] == ["device delta since engine start"]
    text = check.report(figures, failures)
    assert "NVIDIA H100" in text and "energy_j_per_output_token" in text and text.endswith("PASS")


def test_a_run_that_stayed_on_the_cpu_fails_each_check_by_name(tmp_path):
    run = gpu_run(
        tmp_path,
        manifest__engine={"engine": "llamacpp", "launcher": "xllamacpp"},
        manifest__hardware={"gpus": [], "gpu_note": "no NVIDIA GPU found"},
        summary__stages=[{"stage": 0, "telemetry": {}}],
    )
    (run / "telemetry.jsonl").write_text(json.dumps({"t_ns": 0, "gpus": None}) + "\n")
    _, failures = check.check_run(run, stages=2)
    text = "\n".join(failures)
    for expected in (
        "launcher 'xllamacpp'",
        "no GPU in the manifest",
        "did not offload",
        "no GPU rows in telemetry",
        "no GPU energy per output token",
        "1 stage(s) in summary.json, expected 2",
    ):
        assert expected in text


def test_missing_engine_gpu_memory_and_energy_are_failures(tmp_path):
    run = gpu_run(tmp_path)
    rows = [json.loads(line) for line in (run / "telemetry.jsonl").read_text().splitlines()]
    for row in rows:
        row["gpus"][0].update(engine_memory_bytes=None, energy_mj=None, power_w=None, utilization_percent=0.0)
    (run / "telemetry.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, failures = check.check_run(run)
    assert any("engine's own GPU memory" in f for f in failures)
    assert any("GPU utilization > 0" in f for f in failures) and any("no power" in f for f in failures)
    assert any("neither the energy counter nor two power readings" in f for f in failures)


def test_the_check_script_exits_by_its_verdict(tmp_path):
    run = gpu_run(tmp_path)
    script = str(REPO / "scripts" / "gpu_smoke_check.py")
    ok = subprocess.run([sys.executable, script, str(run), "--stages", "2"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("PASS")
    bad = subprocess.run([sys.executable, script, str(run), "--stages", "3"], capture_output=True, text=True)
    assert bad.returncode == 1 and "expected 3" in bad.stdout
    assert subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True).returncode == 2


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None, reason="pip install -e '.[llamacpp]'")
def test_the_tiny_gguf_is_served_by_llama_cpp_through_the_rig(tmp_path):
    """The fallback model of an offline lab: made with numpy and gguf only, served for real (on the CPU here)."""
    gguf, catalog = tmp_path / "tiny.gguf", tmp_path / "models.yaml"
    make = [sys.executable, str(REPO / "scripts" / "make_tiny_llama.py")]
    subprocess.run([*make, "--gguf", str(gguf)], check=True, capture_output=True)
    assert 1_000_000 < gguf.stat().st_size < 3_000_000
    subprocess.run([*make, "--catalog", str(catalog), str(gguf)], check=True, capture_output=True)
    bench = [sys.executable, "-m", "bench", "run", "--engine", "llamacpp", "--model", "tiny-llama-gguf"]
    plan = ["--catalog", str(catalog), "--concurrency", "2", "--requests", "4", "--output-tokens", "8"]
    done = subprocess.run(
        [*bench, *plan, "--input-tokens", "32", "--results-dir", str(tmp_path / "results")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp_path / "results").iterdir()
    records = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["status"] == "ok" and r["output_tokens"] == 8 for r in records)
    figures, failures = check.check_run(run, stages=1)
    assert figures["stages"][0]["requests_ok"] == 4
    assert any("did not offload" in f for f in failures)  # a CPU run is never a GPU smoke pass
