"""Runs as data: bench.load_run's DataFrames give back summary.json's figures by plain pandas arithmetic, and
`bench runs` / `bench export` table many runs."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import bench
from bench.run import execute
from bench.spec import EndpointEngine, Length, LoadSpec, RunSpec, WorkloadSpec

from .conftest import fake_engine


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    with fake_engine(ttft_ms=3.0, gap_ms=0.5) as url:
        for run_id, streams in (("a", [1, 2]), ("b", [4])):
            spec = RunSpec(
                engine=EndpointEngine(url=url),
                model="calibration",
                api="completions",
                workload=WorkloadSpec(input_tokens=Length(a=8), output_tokens=Length(a=12)),
                load=LoadSpec(concurrency=streams, requests=20),
                telemetry={"interval_s": 0.05},
                output={"results_dir": root, "run_id": run_id},
            )
            assert execute(spec).exit_code == 0
    return root


def test_the_requests_frame_gives_back_the_summary_by_pandas_arithmetic(two_runs):
    run = bench.load_run(two_runs / "b")
    summary = json.loads((two_runs / "b" / "summary.json").read_text())
    df = run.requests
    measured = df[(df.phase == "measured") & (df.status == "ok")]
    window_s = (measured.t_end_ns.max() - measured.t_send_ns.min()) / 1e9
    assert summary["request_throughput_per_s"] == pytest.approx(len(measured) / window_s, rel=1e-12)
    assert summary["output_throughput_tokens_per_s"] == pytest.approx(measured.output_tokens.sum() / window_s)
    for q, key in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        assert summary["ttft_ms"][key] == pytest.approx(measured.ttft_ms.quantile(q), rel=1e-12)
        assert summary["e2e_ms"][key] == pytest.approx(measured.e2e_ms.quantile(q), rel=1e-12)
    assert summary["tpot_ms"]["mean"] == pytest.approx(measured.tpot_ms.mean(), rel=1e-12)
    gaps = np.concatenate([np.diff(t) for t in measured.output_times_ns]) / 1e6
    assert summary["itl_ms"]["n"] == len(gaps) and summary["itl_ms"]["p99"] == pytest.approx(np.percentile(gaps, 99))
    assert run.manifest.spec.load.concurrency == [4] and run.summary.requests.successful == 20
    assert list(run.stages.label) == ["concurrency 4"] and not run.telemetry.empty


def test_bench_runs_lists_them_and_export_writes_one_table(two_runs, tmp_path):
    listing = subprocess.run([sys.executable, "-m", "bench", "runs", str(two_runs)], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert "run_id" in lines[0] and "ttft_p99_ms" in lines[0] and len(lines) == 3
    for fmt in ("parquet", "csv"):
        out = tmp_path / f"stages.{fmt}"
        done = subprocess.run(
            [sys.executable, "-m", "bench", "export", str(two_runs), "--format", fmt, "-o", str(out)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        table = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out)
        assert list(table.run_id) == ["a", "a", "b"] and list(table.label)[-1] == "concurrency 4"
    out = tmp_path / "requests.parquet"
    subprocess.run(
        [sys.executable, "-m", "bench", "export", str(two_runs / "a"), "--table", "requests", "-o", str(out)],
        check=True,
        capture_output=True,
    )
    requests = pd.read_parquet(out)
    assert len(requests) == 2 * 20 + 1 + 2 and set(requests.stage) == {0, 1}  # measured plus one warmup per stream


@pytest.mark.parametrize("streams", ["3", "1,2"])
def test_bench_summarize_prints_what_bench_run_printed(tmp_path, streams):
    """The table `bench summarize` recomputes from the records is the one `bench run` printed, its heading aside:
    a one-stage run's with that stage's telemetry (the samples in its window, not the run's from the engine's
    start), and a run of several stages' row per stage, each with the run's timing bound."""
    with fake_engine(ttft_ms=3.0, gap_ms=0.5) as url:
        run = subprocess.run(
            [sys.executable, "-m", "bench", "run", "--endpoint", url, "--model", "calibration", "--api", "completions",
             "--input-tokens", "8", "--output-tokens", "32", "--concurrency", streams, "--requests", "64",
             "--telemetry-interval", "0.02", "--results-dir", str(tmp_path), "--run-id", "r"],
            capture_output=True, text=True,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    again = subprocess.run(
        [sys.executable, "-m", "bench", "summarize", str(tmp_path / "r")], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    printed = run.stdout[run.stdout.index("\n\n") :]  # after the heading (its lines differ: the run's says more)
    assert again.stdout[again.stdout.index("\n\n") :] == printed
    assert "client timing error: unknown: no calibration" in printed
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    if len(summary["stages"]) == 1:
        stage_samples = summary["stages"][0]["telemetry"]["samples"]
        assert 0 < stage_samples < summary["telemetry"]["samples"]  # the run's count also spans the engine's wait
        assert f"(mean of {stage_samples} samples" in printed
    else:  # the client's CPU of its busiest stage, not the run's mean over the engine's wait and the gaps too
        means = {s["stage"]: s["telemetry"]["client_cpu_percent_mean"] for s in summary["stages"]}
        busiest = max(means, key=means.get)
        assert f"client CPU up to {means[busiest]:.0f} % (stage {busiest}'s mean)" in printed


def test_a_run_of_several_stages_prints_its_errors_and_cut_streams(tmp_path):
    """The per-stage table of a run of several stages says what failed and which streams were cut, as a one-stage
    run's table does, and `bench summarize` prints the same."""

    def faults(n, body):
        return "http-500" if n % 8 == 3 else "cut:3" if n % 8 == 5 else None

    with fake_engine(faults, ttft_ms=2.0, gap_ms=0.5) as url:
        run = subprocess.run(
            [sys.executable, "-m", "bench", "run", "--endpoint", url, "--model", "calibration", "--api", "completions",
             "--input-tokens", "8", "--output-tokens", "16", "--concurrency", "1,2", "--requests", "32",
             "--results-dir", str(tmp_path), "--run-id", "r"],
            capture_output=True, text=True,
        )  # fmt: skip
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["requests"]["failed"] > 0 and summary["cut_streams"] > 0, run.stderr
    assert len(summary["stages"]) == 2
    again = subprocess.run(
        [sys.executable, "-m", "bench", "summarize", str(tmp_path / "r")], capture_output=True, text=True
    )
    for printed in (run.stdout, again.stdout):
        assert f"Note         {summary['cut_streams']} stream(s) were cut short" in printed
        for error in summary["errors"]:
            assert f"Error        {error['count']} x {error['error']}" in printed
