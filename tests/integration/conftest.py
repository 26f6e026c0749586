import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_GEMMA = ["run", "--engine", "llamacpp", "--model", "gemma3-270m"]  # the bundled model on llama.cpp


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_xllamacpp = pytest.mark.skipif(
    not installed("xllamacpp"), reason="llama.cpp server not installed: pip install -e '.[llamacpp]'"
)
LLAMA_SERVER = os.environ.get("BENCH_LLAMA_SERVER") or shutil.which("llama-server") or ""
needs_llama_server = pytest.mark.skipif(
    not LLAMA_SERVER, reason="no llama-server binary: BENCH_LLAMA_SERVER=$(bash scripts/build_llama_server.sh)"
)
needs_llama_cpp_python = pytest.mark.skipif(
    not installed("llama_cpp"),
    reason="llama-cpp-python not installed: pip install -e '.[llamacpp-python]' (compiles llama.cpp, minutes)",
)


def bench(*args: str, results: Path) -> list[str]:
    where = ["--results-dir", str(results)] if args[0] in ("run", "eval") else []
    return [sys.executable, "-m", "bench", *args, *where]


def run_bench(*args: str, results: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        bench(*args, results=results),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def start_bench(*args: str, results: Path) -> subprocess.Popen:
    return subprocess.Popen(
        bench(*args, results=results),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def only_run_dir(results: Path) -> Path:
    runs = [p for p in results.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def read_records(run_dir: Path) -> list[dict]:
    path = run_dir / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_for_measured(results: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> Path:
    """Block until the run has `count` finished measured requests on disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        runs = [p for p in results.iterdir() if p.is_dir()] if results.exists() else []
        if runs and sum(r["phase"] == "measured" for r in read_records(runs[0])) >= count:
            return runs[0]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    raise AssertionError(f"fewer than {count} measured requests after {timeout} s")


def engine_processes(run_dir: Path) -> list[psutil.Process]:
    """Live processes started for this run (their command line names the run directory or the engine pid)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    pid = manifest["engine"].get("pid")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.info["pid"] == pid or str(run_dir.resolve()) in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            pass
    return found
