"""`bench cost` on a real CPU run: its figures are the documented formulas applied by hand to that run's
summary.json and the catalog's prices (never to bench.cost's own functions)."""

import json
import math

import pytest

from bench.catalog import load_catalog

from .conftest import RUN_GEMMA, needs_xllamacpp, only_run_dir, run_bench

pytestmark = [pytest.mark.integration, needs_xllamacpp]
HOURLY = 0.05  # models.yaml: cpu-2-core-vm rents at $0.05 an hour, 0 hours of labour
U, VOLUME = 0.4, 200_000
SECONDS_PER_MONTH = 730 * 3600


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
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
        results=results,
    )
    assert done.returncode == 0, done.stderr
    return only_run_dir(results)


def price(run_dir, *extra, api_offer="openai-gpt-4o-mini", utilization=U):
    done = run_bench(
        "cost",
        str(run_dir),
        "--hardware-offer",
        "cpu-2-core-vm",
        "--api-offer",
        api_offer,
        "--utilization",
        str(utilization),
        "--tasks-per-month",
        str(VOLUME),
        "--today",
        "2026-12-01",
        *extra,
        results=run_dir.parent,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((run_dir / "cost.json").read_text()), done.stdout


def test_cost_of_a_real_run_follows_the_formulas(run_dir):
    """$/attempt = $0.05 / (attempts/s x 3600 x 0.4), attempts/s = (ok + failed) / window; $/successful task
    = $/task / (ok / finished); instances = ceil(200,000 / (attempts/s x 0.4 x 2,628,000)); the API's task =
    input x $0.15/1M + output x $0.60/1M; break-even = $36.50 / API $/task when one instance carries it."""
    report, stdout = price(run_dir)
    stage = json.loads((run_dir / "summary.json").read_text())["stages"][0]
    req = stage["requests"]
    finished = req["successful"] + req["failed"]
    attempts = finished / stage["window_s"]
    sh = report["self_hosted"]
    assert sh["rate"]["method"] == "measured"  # the task is the run's own mean request
    assert sh["per_attempt"] == pytest.approx(HOURLY / (attempts * 3600 * U))
    assert sh["per_successful_task"] == pytest.approx(sh["per_task"] / (req["successful"] / finished))
    capacity = attempts * U * SECONDS_PER_MONTH
    assert sh["instances"] == max(1, math.ceil(VOLUME / capacity))
    assert sh["monthly"] == pytest.approx(sh["instances"] * HOURLY * 730)
    assert sh["labour"]["monthly"] == 0 and sh["hardware"]["items"][0]["per_hour"] == HOURLY

    offer = load_catalog(None)[0].api_offers["openai-gpt-4o-mini"]
    (api,) = report["apis"]
    expected = (
        stage["prompt_tokens"]["mean"] * offer.input_per_1m + stage["output_tokens"]["mean"] * offer.output_per_1m
    ) / 1e6
    assert api["per_task"] == pytest.approx(expected) and api["monthly"] == pytest.approx(expected * VOLUME)
    (be,) = api["break_even"]
    point = HOURLY * 730 / expected
    assert be["tasks_per_month"] == (pytest.approx(point) if point <= capacity else None)
    # the answer first, then each side itemised; the stale price says so
    assert stdout.startswith("Answer\n") and "Cheapest per successful task" in stdout
    assert "as of 2024-10-01" in stdout and "older than 90 days: stale" in stdout
    assert "Self-hosted cost, itemised" in stdout and "API cost, itemised" in stdout


def test_a_dearer_api_has_a_break_even_one_instance_carries(run_dir):
    """Claude 3.5 Haiku at $0.80 in / $4.00 out per 1M: the run's task (about 33 in, 16 out) costs about
    $0.00009 there, so $36.50 a month of the VM pays for itself at about 400,000 tasks a month; at 90 %
    utilization one instance carries attempts/s x 0.9 x 2,628,000 (over 2M here). The break-even must be that
    volume worked out by hand (a pricing that never found a break-even would pass the test above)."""
    report, _ = price(run_dir, api_offer="anthropic-claude-3-5-haiku", utilization=0.9)
    stage = json.loads((run_dir / "summary.json").read_text())["stages"][0]
    req = stage["requests"]
    finished = req["successful"] + req["failed"]
    offer = load_catalog(None)[0].api_offers["anthropic-claude-3-5-haiku"]
    api_task = (
        stage["prompt_tokens"]["mean"] * offer.input_per_1m + stage["output_tokens"]["mean"] * offer.output_per_1m
    ) / 1e6
    point = HOURLY * 730 / (req["successful"] / finished) / api_task
    capacity = finished / stage["window_s"] * 0.9 * SECONDS_PER_MONTH
    assert point <= capacity, (point, capacity)  # the premise: one instance carries the break-even volume
    (api,) = report["apis"]
    (be,) = api["break_even"]
    assert be["tasks_per_month"] == pytest.approx(point)


def test_a_task_ten_times_longer_is_extrapolated_from_the_runs_prefill_and_decode(run_dir):
    """160 output tokens instead of the run's 16: at the measured concurrency a stream holds a request
    TTFT + out x TPOT; the task's attempt TTFT + 160 x TPOT (the same input), so attempts/s scale by their
    ratio, and the self-hosted cost per task grows with the task."""
    short, _ = price(run_dir)
    long, stdout = price(run_dir, "--output-tokens", "160")
    stage = json.loads((run_dir / "summary.json").read_text())["stages"][0]
    ttft, tpot = stage["ttft_ms"]["mean"], stage["tpot_ms"]["mean"]
    ratio = (ttft + stage["output_tokens"]["mean"] * tpot) / (ttft + 160 * tpot)
    sh = long["self_hosted"]
    assert sh["rate"]["method"] == "extrapolated"
    assert sh["rate"]["attempts_per_s"] == pytest.approx(short["self_hosted"]["rate"]["attempts_per_s"] * ratio)
    assert sh["per_attempt"] == pytest.approx(short["self_hosted"]["per_attempt"] / ratio)
    assert "extrapolated x" in stdout and "throughput:" in stdout  # printed, and listed as an assumption


def test_escalation_and_the_apis_success_rate_apply_to_both_sides(run_dir):
    """2 % escalated at $4 adds $0.08 to a task on both sides, so with both sides succeeding alike the
    break-even volume does not move. The API's own success rate (--api-success-rate 0.9) divides its cost."""
    plain, _ = price(run_dir)
    escalated, _ = price(run_dir, "--escalation-rate", "0.02", "--human-review-cost", "4")
    assert escalated["self_hosted"]["per_task"] == pytest.approx(plain["self_hosted"]["per_task"] + 0.08)
    assert escalated["apis"][0]["per_task"] == pytest.approx(plain["apis"][0]["per_task"] + 0.08)
    if plain["self_hosted"]["outcome"]["successful_share"] == 1.0:
        assert escalated["apis"][0]["break_even"][0]["tasks_per_month"] == pytest.approx(
            plain["apis"][0]["break_even"][0]["tasks_per_month"]
        )
    worse, stdout = price(run_dir, "--api-success-rate", "0.9")
    assert worse["apis"][0]["per_successful_task"] == pytest.approx(plain["apis"][0]["per_task"] / 0.9)
    assert "assumed 90% (--api-success-rate)" in stdout


def test_unknown_offer_and_removed_flag_are_one_clear_line(tmp_path):
    done = run_bench("cost", str(tmp_path), "--hardware-offer", "nope", results=tmp_path)
    assert (
        done.returncode == 2 and "--hardware-offer 'nope' is not in" in done.stderr and "Traceback" not in done.stderr
    )
    done = run_bench(
        "cost", str(tmp_path), "--hardware-offer", "cpu-2-core-vm", "--retry-rate", "0.1", results=tmp_path
    )
    assert done.returncode == 2 and "--retry-rate was removed" in done.stderr and "--max-retries" in done.stderr
