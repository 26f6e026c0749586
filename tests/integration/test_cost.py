"""`bench cost` on a real CPU run: its figures are the cost formulas applied to that run's summary.json."""

import json

import pytest

from bench.catalog import load_catalog
from bench.cost import HOURS_PER_MONTH, TaskProfile, api_per_task, break_even

from .conftest import RUN_GEMMA, needs_xllamacpp, only_run_dir, run_bench

pytestmark = [pytest.mark.integration, needs_xllamacpp]


def test_cost_of_a_real_run_follows_the_formulas(tmp_path):
    done = run_bench(
        *RUN_GEMMA,
        "--concurrency",
        "2",
        "--requests",
        "6",
        "--input-tokens",
        "32",
        "--output-tokens",
        "16",
        results=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    run_dir = only_run_dir(tmp_path)
    priced = run_bench(
        "cost",
        str(run_dir),
        "--hardware-offer",
        "cpu-2-core-vm",
        "--utilization",
        "0.4",
        "--tasks-per-month",
        "200000",
        results=tmp_path,
    )
    assert priced.returncode == 0, priced.stderr
    report = json.loads((run_dir / "cost.json").read_text())
    stage = json.loads((run_dir / "summary.json").read_text())["stages"][0]

    hourly = 0.05  # models.yaml: cpu-2-core-vm rents at $0.05 an hour
    rps, tps = stage["request_throughput_per_s"], stage["output_throughput_tokens_per_s"]
    sh = report["self_hosted"]
    assert sh["per_1m_output_tokens"] == pytest.approx(hourly / (tps * 3600 * 0.4) * 1e6)
    assert sh["per_task"] == pytest.approx(hourly / (rps * 3600 * 0.4))
    assert sh["per_successful_task"] == pytest.approx(sh["per_task"])  # every request succeeded
    cached = stage["prefix_cache_hit_rate"] or 0.0  # the run's prefix-cache hits are billed as cached input
    task = TaskProfile(
        stage["prompt_tokens"]["mean"],
        stage["output_tokens"]["mean"],
        200_000,
        utilization=0.4,
        cached_input_share=cached,
    )
    catalog, _ = load_catalog(None)
    for api in report["apis"]:
        offer = catalog.api_offers[api["offer"]].model_dump()
        expected = api_per_task(offer, task)
        assert api["per_task"] == pytest.approx(expected) and api["monthly"] == pytest.approx(expected * 200_000)
        assert api["break_even_tasks_per_month"] == break_even(task, hourly, rps, expected)
    assert sh["monthly"] == pytest.approx(sh["instances"] * hourly * HOURS_PER_MONTH)
    for line in ("Priced throughput", "per 1M output tokens", "as of 2024-10", "break-even"):
        assert line in priced.stdout


def test_unknown_offer_is_one_clear_line(tmp_path):
    done = run_bench("cost", str(tmp_path), "--hardware-offer", "nope", results=tmp_path)
    assert (
        done.returncode == 2 and "--hardware-offer 'nope' is not in" in done.stderr and "Traceback" not in done.stderr
    )
