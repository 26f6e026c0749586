"""The cost model against hand-computed cases: every expected figure below is worked out in the test's
docstring from the inputs it names, never taken from bench.cost."""

import datetime

import pytest

from bench.catalog import ApiOffer, HardwareOffer
from bench.cost import (
    CostError,
    Option,
    PricingInputs,
    TaskProfile,
    api_attempt,
    break_even,
    calls,
    combine,
    cost_report,
    decision,
    energy_per_million_tokens,
    hardware_items,
    instance_hourly,
    labour_item,
    offer_hourly,
    outcome,
    price_age,
    priced_throughput,
    public,
    self_hosted_section,
    task_rate,
    with_measured_tokens,
)
from bench.summary import Intervals, RequestCounts, RunSummary, StageSummary, Stats

TODAY = datetime.date(2026, 12, 1)


def rented(per_hour, **extra):
    return HardwareOffer(rented={"per_hour": per_hour}, source="a quote", as_of="2026-11-20", **extra)


def api(**prices):
    base = {"provider": "P", "model": "m", "source": "price page", "as_of": "2026-11-20"}
    return ApiOffer(**{**base, **prices})


def measured(**figures):
    """A priced stage as priced_throughput gives it (the figures a test needs, the rest neutral)."""
    base = {
        "basis": "highest measured throughput",
        "stage": 0,
        "label": "concurrency 4",
        "window_s": 10.0,
        "requests_ok": 20,
        "requests_failed": 0,
        "attempts_per_s": 2.0,
        "requests_per_s": 2.0,
        "output_tokens_per_s": 100.0,
        "total_tokens_per_s": 300.0,
        "output_tokens_per_s_ci95": None,
        "input_tokens_mean": 100.0,
        "output_tokens_mean": 50.0,
        "ttft_ms_mean": 500.0,
        "tpot_ms_mean": 20.0,
        "prefix_cache_hit_rate": 0.0,
        "success_rate": 1.0,
        "success_basis": "requests that succeeded",
        "success_rate_ci95": None,
        "successes": 20,
        "trials": 20,
        "gpu_energy_j_per_output_token": None,
    }
    return {**base, **figures}


def success(rate, ci=None, measured=False):
    return {"rate": rate, "ci95": ci, "basis": "test", "measured": measured, "source": "flag"}


# -- 1. a task priced from the task ------------------------------------------------------------------
def test_a_task_ten_times_longer_than_the_runs_requests_is_extrapolated_and_costs_ten_times_more():
    """The run's mean request: 100 in, 50 out; TTFT 500 ms, TPOT 20 ms; 2.0 attempts/s (20 in 10 s).
    Per stream: prefill P = 100 / 0.5 s = 200 tok/s, decode D = 1000 / 20 = 50 tok/s.
    The run's request occupies a stream 100/200 + 50/50 = 1.5 s.
    A task 10x longer (1,000 in, 500 out): 1000/200 + 500/50 = 5 + 10 = 15 s, x10, so
    A = 2.0 x 1.5 / 15 = 0.2 attempts/s.
    At $2/h and 50 %: $ per attempt = 2 / (0.2 x 3600 x 0.5) = 2 / 360 = $0.0055556 (the run's own shape:
    2 / (2.0 x 1800) = $0.00055556).
    One instance carries 0.2 x 0.5 x 2,628,000 = 262,800 tasks a month: 1,000,000 needs ceil(3.805) = 4
    instances, 4 x $2 x 730 = $5,840 a month (the run's own shape: 1 instance, $1,460)."""
    run = measured()
    long_task = TaskProfile(1000, 500, tasks_per_month=1_000_000, utilization=0.5)
    rate = task_rate(run, long_task)
    assert rate["method"] == "extrapolated"
    assert rate["prefill_tokens_per_s_per_stream"] == pytest.approx(200)
    assert rate["decode_tokens_per_s_per_stream"] == pytest.approx(50)
    assert (rate["run_request_s"], rate["attempt_s"], rate["factor"]) == pytest.approx((1.5, 15.0, 10.0))
    assert rate["attempts_per_s"] == pytest.approx(0.2)
    assert "extrapolated x10.00" in rate["note"]
    sh = self_hosted_section("x", "run", run, "box", rented(2.0), long_task, success(1.0), TODAY, 90)
    assert sh["per_attempt"] == pytest.approx(2 / 360)
    assert (sh["instances"], sh["monthly"]) == (4, pytest.approx(5840))

    same = TaskProfile(100, 50, tasks_per_month=1_000_000, utilization=0.5)
    sh = self_hosted_section("x", "run", run, "box", rented(2.0), same, success(1.0), TODAY, 90)
    assert sh["rate"]["method"] == "measured" and sh["per_attempt"] == pytest.approx(2 / 3600)
    assert (sh["instances"], sh["monthly"]) == (1, pytest.approx(1460))


def test_within_the_tolerance_the_runs_own_rate_prices_the_task():
    """105 in / 52 out is within 10 % of 100 / 50: the measured 2.0 attempts/s, no extrapolation. Output alone
    10x (100 in, 500 out): 100/200 + 500/50 = 10.5 s against 1.5 s, A = 2.0 x 1.5 / 10.5 = 0.285714."""
    assert task_rate(measured(), TaskProfile(105, 52))["attempts_per_s"] == 2.0
    assert task_rate(measured(), TaskProfile(105, 52, shape_tolerance=0.01))["method"] == "extrapolated"
    assert task_rate(measured(), TaskProfile(100, 500))["attempts_per_s"] == pytest.approx(2.0 * 1.5 / 10.5)


def test_the_cached_share_is_part_of_the_shape_when_given():
    """A run whose engine served 75 % of the input from its prefix cache: 100 x 0.25 = 25 uncached tokens in
    500 ms, P = 50 tok/s. Not given, the task keeps the run's cache behaviour (its rate, 2.0/s). Given as 0 on
    both sides, every input token is prefilled: 100/50 + 50/50 = 3 s against 25/50 + 1 = 1.5 s, A = 1.0/s; the
    API then bills no cached input either."""
    run = measured(prefix_cache_hit_rate=0.75)
    assert task_rate(run, TaskProfile(100, 50))["method"] == "measured"
    cold = task_rate(run, TaskProfile(100, 50, cached_input_share=0.0))
    assert cold["method"] == "extrapolated" and cold["attempts_per_s"] == pytest.approx(1.0)


def test_no_ttft_or_tpot_to_extrapolate_from_is_a_clear_error():
    with pytest.raises(CostError, match="no TTFT/TPOT to extrapolate from"):
        task_rate(measured(tpot_ms_mean=None), TaskProfile(1000, 500))


# -- 4. tool loops: tokens per turn and the context carried -------------------------------------------
def test_a_tool_loop_adds_calls_of_their_own_size_with_the_context_carried_or_reset():
    """Task 500 in / 80 out, 2 tool calls of 20 tokens, each result 100 tokens. Carried: call k reads
    500 + k x (20 + 100): 500, 620, 740, and writes 20, 20, 80. Reset: 500, 600, 600 (the task and the
    latest result). A copy of the task per turn would have been 3 x (500 + 80)."""
    task = TaskProfile(500, 80, tool_calls=2, tool_call_tokens=20, tool_result_tokens=100, reasoning_tokens=10)
    carried = calls(task)
    assert [c.input_tokens for c in carried] == [500, 620, 740]
    assert [c.output_tokens for c in carried] == [20, 20, 80]
    assert [c.reasoning_tokens for c in carried] == [10, 10, 10]
    reset = calls(TaskProfile(500, 80, tool_calls=2, tool_call_tokens=20, tool_result_tokens=100, tool_context="reset"))
    assert [c.input_tokens for c in reset] == [500, 600, 600]


# -- 2. and 3. one workflow for both sides, failures counted once ---------------------------------------
def summary_with_failures() -> RunSummary:
    stage = StageSummary(
        stage=0,
        label="concurrency 8",
        requests=RequestCounts(measured=150, successful=120, failed=30),
        window_s=10.0,
        request_throughput_per_s=12.0,
        output_throughput_tokens_per_s=1200.0,
        total_token_throughput_tokens_per_s=2400.0,
        prompt_tokens=Stats(n=120, mean=100.0),
        output_tokens=Stats(n=120, mean=100.0),
        ttft_ms=Stats(n=120, mean=200.0),
        tpot_ms=Stats(n=120, mean=20.0),
        ci95=Intervals(output_throughput_tokens_per_s=[1000.0, 1500.0]),
    )
    return RunSummary(stages=[stage])


def test_a_run_with_20_percent_failures_counts_them_once():
    """120 requests succeeded and 30 failed in 10 s: 15 attempts/s, success rate 120/150 = 0.8.
    At $3.60/h and 100 % utilization the 10 s cost $0.01; the right cost per successful task is
    $0.01 / 120 = $0.0000833 (= 3.6 / (15 x 3600) / 0.8). Dividing the successful requests' rate (12/s)
    by the success rate again gave 3.6 / (12 x 3600) / 0.8 = $0.000104. With one retry: 1.2 attempts per
    task, 96 % solved; $ per task 1.2 x $0.0000667 = $0.00008, per successful task $0.00008 / 0.96 =
    $0.0000833 again (independent retries do not change the cost of a success)."""
    run = priced_throughput(summary_with_failures())
    assert (run["attempts_per_s"], run["success_rate"]) == (15.0, 0.8)
    task = TaskProfile(100, 100, utilization=1.0)
    from bench.cost import self_hosted_success

    sh = self_hosted_section("x", "r", run, "box", rented(3.6), task, self_hosted_success(run, "r", None), TODAY, 90)
    assert sh["per_attempt"] == pytest.approx(3.6 / (15 * 3600))
    assert sh["per_successful_task"] == pytest.approx(0.01 / 120)
    assert sh["per_successful_task"] != pytest.approx(3.6 / (12 * 3600) / 0.8)
    retried = self_hosted_section(
        "x",
        "r",
        run,
        "box",
        rented(3.6),
        TaskProfile(100, 100, utilization=1.0, max_retries=1),
        success(0.8),
        TODAY,
        90,
    )
    assert retried["outcome"]["attempts_per_task"] == pytest.approx(1.2)
    assert retried["outcome"]["solved_share"] == pytest.approx(0.96)
    assert retried["per_task"] == pytest.approx(0.00008)
    assert retried["per_successful_task"] == pytest.approx(0.01 / 120)


def test_outcome_of_retries_and_escalation():
    """s = 0.5, up to 2 retries: attempts 1 + 0.5 + 0.25 = 1.75, solved 1 - 0.125 = 0.875; escalating the
    failures sends 12.5 % to a person and every task ends successful; a 2 % policy escalation keeps S = q."""
    o = outcome(0.5, 2, "failures")
    assert (o.attempts, o.solved, o.escalated, o.successful) == pytest.approx((1.75, 0.875, 0.125, 1.0))
    o = outcome(0.5, 2, 0.02)
    assert (o.escalated, o.successful) == pytest.approx((0.02, 0.875))


WORKFLOW = TaskProfile(
    1000,
    200,
    tasks_per_month=100_000,
    peak_to_average=2.0,
    utilization=0.5,
    reasoning_tokens=100,
    tool_calls=1,
    tool_call_tokens=50,
    tool_result_tokens=250,
    cached_input_share=0.5,
    batch_share=0.5,
    max_retries=1,
    escalation_rate="failures",
    human_review_cost=2.0,
)
PRICES = {"input_per_1m": 1.0, "output_per_1m": 4.0, "cached_input_per_1m": 0.5, "batch_discount": 0.5}


def test_the_full_monthly_formula_on_both_sides_with_escalation():
    """The task: 1,000 in, 200 out, 100 reasoning tokens per call, one tool call writing 50 tokens whose
    result adds 250, context carried: call 0 reads 1,000 and writes 50 + 100 reasoning; call 1 reads
    1,000 + 300 = 1,300 and writes 200 + 100. Half the input is cached, half the tasks go in batch at 50 % off
    both ways (factor 1 - 0.5 x 0.5 = 0.75), up to 1 retry, failures escalated at $2.

    API ($1 in, $0.5 cached, $4 out per 1M): call 0 = (500 x 1 + 500 x 0.5) / 1e6 x 0.75 + 150 x 4 / 1e6 x 0.75
    = 0.0005625 + 0.00045 = 0.0010125; call 1 = (650 + 325) / 1e6 x 0.75 + 300 x 4 / 1e6 x 0.75 = 0.00073125 +
    0.0009 = 0.00163125; an attempt $0.00264375. With s = 0.8: 1.2 attempts, 96 % solved, 4 % escalated,
    every task successful: $/task = 1.2 x 0.00264375 + 0.04 x 2 = $0.0831725; monthly at 100,000 = $8,317.25.

    Self-hosted: $1/h rent + 10 h/month x $73/h labour = $1/h: $2/h, $1,460 a month per instance. The run:
    1,000 in / 200 out at TTFT 1,000 ms, TPOT 50 ms, 1.0 attempts/s: P = 1,000, D = 20 tok/s, its request 1 +
    10 = 11 s. The attempt: call 0 500/1000 + 150/20 = 8 s, call 1 650/1000 + 300/20 = 15.65 s: 23.65 s,
    A = 11 / 23.65 = 0.465116/s. $/attempt = 2 / (0.465116 x 3600 x 0.5) = $0.0023889; with s = 0.8:
    $/task = 1.2 x 0.0023889 + 0.04 x 2 = $0.0828667. Peak factor max((1 - 0.5) x 2, 1) = 1; one instance
    carries 0.465116 x 0.5 x 2,628,000 / 1.2 = 509,302 tasks a month: 1 instance; monthly = $1,460 + 100,000 x
    0.04 x $2 = $9,460; per successful task $0.0946.

    Break-even: V* = 1,460 / (0.0831725 - 0.04 x 2) = 1,460 / 0.0031725 = 460,205 tasks/month (under the
    509,302 one instance carries). Escalation costs the same on both sides, so it cancels. If the API's
    success rate were 0.9 (1 % escalated, $0.0229081 per task), self-hosting escalates 4 % at $2 and can never
    catch up: no break-even."""
    offer = rented(1.0, labour={"hours_per_month": 10, "per_hour": 73})
    run = measured(input_tokens_mean=1000.0, output_tokens_mean=200.0, ttft_ms_mean=1000.0, tpot_ms_mean=50.0)
    run["attempts_per_s"] = 1.0
    sh = self_hosted_section("sh", "r", run, "box", offer, WORKFLOW, success(0.8), TODAY, 90)
    assert sh["instance_hourly"] == pytest.approx(2.0) and sh["labour"]["monthly"] == pytest.approx(730)
    assert sh["rate"]["attempt_s"] == pytest.approx(23.65)
    assert sh["per_attempt"] == pytest.approx(0.0023888889)
    assert sh["per_task"] == pytest.approx(1.2 * 0.0023888889 + 0.08)
    assert sh["capacity_tasks_per_month"] == pytest.approx(509_302.3, rel=1e-6)
    assert (sh["instances"], sh["monthly"]) == (1, pytest.approx(9460))
    assert sh["monthly_items"]["escalation"] == pytest.approx(8000)
    assert sh["per_successful_task_at_volume"] == pytest.approx(0.0946)

    from bench.cost import api_section, break_even_entry

    a = api_section("api", api(**PRICES), WORKFLOW, success(0.8), TODAY, 90)
    assert [c["cost"] for c in a["attempt"]["calls"]] == pytest.approx([0.0010125, 0.00163125])
    assert a["per_task"] == pytest.approx(0.0831725)
    assert a["monthly"] == pytest.approx(8317.25)
    assert a["items"]["escalation"] == pytest.approx(0.08)
    assert break_even_entry(sh, a)["tasks_per_month"] == pytest.approx(460_204.9, rel=1e-6)
    better = api_section("api", api(**PRICES), WORKFLOW, success(0.9), TODAY, 90)
    assert better["per_task"] == pytest.approx(1.1 * 0.00264375 + 0.01 * 2)
    assert break_even_entry(sh, better)["tasks_per_month"] is None


def test_api_tiers_cache_writes_and_per_direction_batch_prices():
    """$1 in, $4 out, $0.1 cached, $1.25 cache write; above 200k prompt tokens $2 in, $0.2 cached, $6 out;
    batch 50 % off input, 25 % off output; every task in batch.
    A 250,000-token prompt, 40 % cached, 20 % written to the cache, 1,000 out, billed at the tier:
    (100,000 x 2 + 100,000 x 0.2 + 50,000 x 1.25) / 1e6 x 0.5 = 0.2825 x 0.5 = 0.14125, plus
    1,000 x 6 / 1e6 x 0.75 = 0.0045: $0.14575. A 1,000-token prompt stays at the base prices:
    (400 x 1 + 400 x 0.1 + 200 x 1.25) / 1e6 x 0.5 + 1,000 x 4 / 1e6 x 0.75 = 0.000345 + 0.003 = $0.003345."""
    offer = api(
        input_per_1m=1.0,
        output_per_1m=4.0,
        cached_input_per_1m=0.1,
        cache_write_input_per_1m=1.25,
        batch_input_discount=0.5,
        batch_output_discount=0.25,
        tiers=[{"above_input_tokens": 200_000, "input_per_1m": 2.0, "output_per_1m": 6.0, "cached_input_per_1m": 0.2}],
    )
    shares = {"cached_input_share": 0.4, "cache_write_share": 0.2, "batch_share": 1.0}
    long = api_attempt(offer, TaskProfile(250_000, 1000, **shares))
    assert long["total"] == pytest.approx(0.14575) and long["calls"][0]["tier"] == "prompt above 200,000 tokens"
    assert api_attempt(offer, TaskProfile(1000, 1000, **shares))["total"] == pytest.approx(0.003345)


# -- 5. owned hardware, itemised, with labour ------------------------------------------------------------
def test_an_owned_box_with_labour_is_itemised():
    """$26,280 over 3 years = 26,280 / 26,280 h = $1.00/h; 500 W at $0.20/kWh = $0.10/h; $73/month hosting =
    $0.10/h; labour 20 h/month x $36.50 = $730/month = $1.00/h: an instance costs $2.20/h, $1,606 a month.
    At 1 attempt/s and 100 % utilization an attempt costs 2.2 / 3600 = $0.00061111, of which labour
    1 / 3600 = $0.00027778."""
    offer = HardwareOffer(
        owned={
            "purchase": 26_280,
            "amortization_years": 3,
            "power_w": 500,
            "electricity_per_kwh": 0.20,
            "hosting_per_month": 73,
        },
        labour={"hours_per_month": 20, "per_hour": 36.5, "basis": "on-call share"},
        source="our purchase",
        as_of="2026-11-01",
    )
    items = {i["item"]: i["per_hour"] for i in hardware_items(offer)}
    assert items == pytest.approx({"amortisation": 1.0, "power": 0.10, "hosting": 0.10})
    assert offer_hourly(offer) == pytest.approx(1.2)
    assert labour_item(offer)["per_hour"] == pytest.approx(1.0) and labour_item(offer)["monthly"] == 730
    assert instance_hourly(offer) == pytest.approx(2.2)
    run = measured(attempts_per_s=1.0)
    sh = self_hosted_section(
        "x", "r", run, "box", offer, TaskProfile(100, 50, utilization=1.0), success(1.0), TODAY, 90
    )
    assert sh["instance_monthly"] == pytest.approx(1606)
    assert sh["per_attempt"] == pytest.approx(2.2 / 3600)
    assert sh["items"]["labour"] == pytest.approx(1 / 3600)
    no_labour = labour_item(rented(1.0))
    assert (no_labour["per_hour"], no_labour["basis"]) == (0.0, "not in the catalog offer: 0 hours")


# -- 6. prices with an age ------------------------------------------------------------------------------
def test_a_stale_price_is_flagged_and_a_deprecated_model_left_out_of_the_answer():
    """On 2026-12-01 a price of 2026-08-01 is 122 days old (> 90: stale), one of 2026-10-01 61 days (fresh),
    an undated one of unknown age (flagged). The cheaper API ($0.10 a task: 1,000 in x $100/1M) was deprecated
    on 2026-11-30, so the answer is the other ($0.20: 1,000 in x $200/1M) though it costs twice as much."""
    assert price_age(datetime.date(2026, 8, 1), TODAY, 90)["age_days"] == 122
    assert price_age(datetime.date(2026, 8, 1), TODAY, 90)["stale"] is True
    assert price_age(datetime.date(2026, 10, 1), TODAY, 90)["stale"] is False
    assert price_age(None, TODAY, 90)["stale"] is True
    offers = {
        "old-cheap": api(input_per_1m=100, output_per_1m=0, deprecation="2026-11-30", as_of="2026-08-01"),
        "live": api(input_per_1m=200, output_per_1m=0, as_of="2026-10-01"),
    }
    report = cost_report([], offers, PricingInputs(task=TaskProfile(1000, 0, tasks_per_month=10), today=TODAY))
    d = report["decision"]
    assert d["winner"] == "live" and d["ranking"][0]["per_successful_task"] == pytest.approx(0.20)
    assert d["excluded"] == [{"name": "old-cheap", "why": "deprecated on 2026-11-30: left out of recommendations"}]
    warnings = " ".join(report["warnings"])
    assert "old-cheap" in warnings and "122 days old" in warnings and "stale" in warnings
    assert "live (" not in warnings  # a fresh price is not flagged


def test_price_dates_must_be_days():
    with pytest.raises(ValueError, match="'2024-10' is not a date: write the day"):
        api(input_per_1m=1, output_per_1m=1, as_of="2024-10")
    assert api(input_per_1m=1, output_per_1m=1, as_of=None).as_of is None  # an import of unknown date


# -- intervals on the decision ---------------------------------------------------------------------------
def test_intervals_combine_on_the_log_scale_in_quadrature():
    """Point 10; the throughput's ends give 8 and 12.5 (ln 1.25 = 0.22314 each way), the success rate's 9 and
    15 (ln 0.9 = -0.10536, ln 1.5 = 0.40547). High = 10 x exp(sqrt(0.22314^2 + 0.40547^2)) = 10 x
    exp(0.46281) = 15.885; low = 10 x exp(-sqrt(0.22314^2 + 0.10536^2)) = 10 x exp(-0.24677) = 7.8132.
    An end where the figure is unbounded (None) leaves the high end open."""
    ci = combine(10.0, {"throughput": [8.0, 12.5], "success rate": [9.0, 15.0]})["ci95"]
    assert ci == pytest.approx([7.8132, 15.885], rel=1e-4)
    assert combine(10.0, {"success rate": [None, 9.0]})["ci95"] == [pytest.approx(9.0), None]
    assert combine(10.0, {})["ci95"] is None  # nothing measured: no interval


def test_an_interval_about_a_figure_of_zero_keeps_its_ends():
    """A blended success rate of 0 (every case failed; Wilson 0/6 is 0-0.390): no log scale at 0, so the ends
    combine as they are, sqrt(0.390^2 + 0.2^2) = 0.43829 above; an end at 0 about a point of 10 is a fall to 0."""
    assert combine(0.0, {"a": [0.0, 0.390]})["ci95"] == pytest.approx([0.0, 0.390])
    assert combine(0.0, {"a": [0.0, 0.390], "b": [0.0, 0.2]})["ci95"] == pytest.approx([0.0, 0.43829], rel=1e-4)
    assert combine(10.0, {"a": [0.0, 12.0]})["ci95"] == pytest.approx([0.0, 12.0])


def test_cost_per_successful_task_carries_the_throughput_and_wilson_intervals():
    """$3.60/h, 1 attempt/s, 100 %: $0.001 an attempt; s = 0.5 (95 % Wilson 0.4-0.6): $0.002 per successful
    task. Throughput x0.8 / x1.25 gives $0.0025 / $0.0016; s = 0.4 / 0.6 gives $0.0025 / $0.0016667.
    High = 0.002 x exp(sqrt(2 x 0.22314^2)) = 0.002 x exp(0.31557) = $0.0027421; low = 0.002 x
    exp(-sqrt(0.22314^2 + ln(1.2)^2 = 0.18232^2)) = 0.002 x exp(-0.28816) = $0.0014993."""
    run = measured(attempts_per_s=1.0, output_tokens_per_s=100.0, output_tokens_per_s_ci95=[80.0, 125.0])
    sh = self_hosted_section(
        "x", "r", run, "box", rented(3.6), TaskProfile(100, 50, utilization=1.0), success(0.5, [0.4, 0.6]), TODAY, 90
    )
    assert sh["per_successful_task"] == pytest.approx(0.002)
    assert sh["per_successful_task_ci95"] == pytest.approx([0.0014993, 0.0027421], rel=1e-4)
    parts = sh["per_successful_task_interval"]["parts"]
    assert parts["throughput"] == pytest.approx([0.0025, 0.0016])
    assert parts["success rate"] == pytest.approx([0.0025, 0.002 / 1.2])


# -- the answer and what would flip it -------------------------------------------------------------------
def test_the_answer_names_the_cheapest_by_how_much_and_what_would_flip_it():
    """Self-hosted: $1/h, 1 attempt/s at 100 %: one instance carries 2,628,000 tasks a month for $730. API:
    $0.0005 a task. At 1,000,000 tasks: self-hosted $730 / 1,000,000 = $0.00073 per successful task, so the API
    wins by $0.00023 (x1.46). Break-even 730 / 0.0005 = 1,460,000 tasks/month, the nearest volume above at
    which the answer flips (nothing flips it below). Price: the API's +46 % (x1.46), or self-hosting's
    0.0005 x 1,000,000 / 730 = x0.68493 (-31.5 %). Success rate: the API's below 0.0005 / 0.00073 = 68.49 %;
    self-hosting's none (it is at 100 % already). Utilization: none helps (1 instance already)."""
    sh = {
        "name": "sh",
        "kind": "self-hosted",
        "success": success(1.0),
        "_option": Option("sh", "self-hosted", 1.0, hardware_hourly=1.0, attempt_rate=1.0, utilization=1.0),
    }
    ap = {
        "name": "api",
        "kind": "api",
        "success": success(1.0),
        "_option": Option("api", "api", 1.0, attempt_cost=0.0005),
    }
    for e in (sh, ap):
        e["monthly"] = e["_option"].monthly(1_000_000)
        e["per_successful_task_at_volume_ci95"] = None
    d = decision([sh], [ap], TaskProfile(1, 1, tasks_per_month=1_000_000), None, [])
    assert (d["winner"], d["runner_up"]) == ("api", "sh")
    assert d["difference"]["per_successful_task"] == pytest.approx(0.00023)
    assert d["difference"]["ratio"] == pytest.approx(1.46)
    assert break_even(sh["_option"], ap["_option"]) == pytest.approx(1_460_000)
    flips = d["flips"]
    assert flips["volume"]["below"] is None
    assert flips["volume"]["above"]["tasks_per_month"] == pytest.approx(1_460_000, rel=1e-4)
    assert flips["volume"]["above"]["cheapest"] == "sh"
    assert flips["price"]["winner_factor"] == pytest.approx(1.46)
    assert flips["price"]["runner_up_factor"] == pytest.approx(500 / 730)
    assert flips["success_rate"]["winner"] == pytest.approx(0.0005 / 0.00073, rel=1e-6)
    assert flips["success_rate"]["runner_up"] is None
    assert flips["utilization"]["runner_up"] is None


def test_break_even_is_never_when_one_instance_cannot_carry_it():
    """0.1 attempts/s at 50 % carries 131,400 tasks a month; $1,460 / $0.003 = 486,667 is beyond it."""
    sh = Option("sh", "self-hosted", 1.0, hardware_hourly=2.0, attempt_rate=0.1, utilization=0.5)
    assert break_even(sh, Option("api", "api", 1.0, attempt_cost=0.003)) is None
    sh = Option("sh", "self-hosted", 1.0, hardware_hourly=2.0, attempt_rate=1.0, utilization=0.5)
    assert break_even(sh, Option("api", "api", 1.0, attempt_cost=0.003)) == pytest.approx(1460 / 0.003)


def test_report_json_has_no_in_memory_objects_and_the_task_fills_from_the_run():
    filled = with_measured_tokens(TaskProfile(None, 30), {"input_tokens_mean": 120.0, "output_tokens_mean": 9.0})
    assert (filled.input_tokens, filled.output_tokens, filled.cached_input_share) == (120.0, 30, None)
    report = cost_report(
        [{"run_id": "r", "measured": measured(), "offer_name": "box", "offer": rented(2.0)}],
        {"a": api(input_per_1m=1, output_per_1m=1)},
        PricingInputs(task=TaskProfile(100, 50, tasks_per_month=1000), today=TODAY),
    )
    clean = public(report)
    assert "_option" not in clean["self_hosted"][0] and "_variations" not in clean["apis"][0]
    import orjson

    orjson.dumps(clean)  # serialisable


def test_energy_cost_per_million_tokens():
    """0.36 J/token: 1M tokens = 360,000 J = 0.1 kWh, at $0.20/kWh = $0.02."""
    assert energy_per_million_tokens(0.36, 0.20) == pytest.approx(0.02)


def test_an_api_priced_with_its_own_golden_run_and_a_self_hosted_option_below_the_bar():
    """The API's own golden run passed 45 of 50 cases: s = 0.9 (measured, Wilson interval), so its $0.001
    a task (100 in x $10/1M) costs 0.001 / 0.9 = $0.0011111 per successful task. The self-hosted run passed
    40 of 100 (0.4) against a 0.8 bar: left out. Its requests are the task's shape (100 in, 50 out). Its
    instance: $0.50/h, 1 attempt/s at 100 %, one instance for 10,000 tasks: $365 a month; at the bar
    365 / (0.8 x 10,000) = $0.045625 per successful task, and at any success rate up to 100 % at least
    $0.0365, dearer than the API: it would never win. Its break-even against the API is still shown:
    365 / 0.4 / 0.0011111 = 821,250, within the 2,628,000 one instance carries (and marked as left out)."""
    from bench.cost import api_success_from_run
    from bench.summary import Quality

    golden = RunSummary(quality=Quality(cases=50, passed=45, success_rate=0.9, ci95=[0.786, 0.957]))
    measured_api = api_success_from_run(golden, "api-golden")
    assert measured_api["measured"] and measured_api["basis"] == "golden run api-golden: 45/50 cases passed"
    run = measured(
        attempts_per_s=1.0,
        success_rate=0.4,
        success_basis="golden-set cases passed",
        success_rate_ci95=[0.31, 0.50],
        successes=40,
        trials=100,
    )
    report = cost_report(
        [{"run_id": "r", "measured": run, "offer_name": "box", "offer": rented(0.5)}],
        {"a": api(input_per_1m=10.0, output_per_1m=0.0)},
        PricingInputs(
            task=TaskProfile(100, 50, tasks_per_month=10_000, utilization=1.0),
            bar=0.8,
            api_success={"a": measured_api},
            today=TODAY,
        ),
    )
    (a,) = report["apis"]
    assert a["per_successful_task"] == pytest.approx(0.001 / 0.9)
    assert a["per_successful_task_ci95"][0] < a["per_successful_task"] < a["per_successful_task_ci95"][1]
    d = report["decision"]
    assert d["winner"] == "a" and d["excluded"][0]["name"] == "r on box"
    (below,) = d["below_bar"]
    assert below["per_successful_task_at_bar"] == pytest.approx(365 / 8000)
    assert below["success_rate_to_win"] is None
    assert d["break_even"]["tasks_per_month"] == pytest.approx(365 / 0.4 / (0.001 / 0.9))
    assert "left out" in d["break_even"]["note"]


def test_the_priced_stage_is_the_fastest_that_met_its_slos_not_the_fastest():
    """Stage 0: one stream, 2 requests in 1 s, TTFT 100 ms (meets ttft <= 200 ms). Stage 1: two streams,
    4 requests in 1 s, TTFT 500 ms (breaks it). A pricing that ignored the SLOs would take stage 1's 4 req/s;
    the max SLO-compliant throughput is stage 0's 2 req/s, so $/task at $3.60/h and 100% utilization is
    3.60 / (2 * 3600) = $0.0005."""
    from bench.analysis import summarize_run
    from bench.metrics.requests import table_of
    from bench.records import Manifest, SloTargets

    ms = 1_000_000

    def rec(stage, send, ttft):
        return {
            "request_id": send,
            "stage": stage,
            "status": "ok",
            "t_send_ns": send * ms,
            "output_times_ns": [(send + ttft) * ms, (send + ttft + 10) * ms],
            "t_end_ns": (send + 500) * ms,
            "output_tokens": 2,
            "prompt_tokens": 4,
            "max_tokens": 2,
        }

    records = [rec(0, 0, 100), rec(0, 500, 100)] + [rec(1, t, 500) for t in (1000, 1000, 1500, 1500)]
    manifest = Manifest(run_id="r", started_at="now", slo=SloTargets(thresholds_ms={"ttft": 200.0}, percentile=99))
    summary = summarize_run(table_of(records), [], manifest)
    assert [s.request_throughput_per_s for s in summary.stages] == [2.0, 4.0]
    priced = priced_throughput(summary)
    assert priced["stage"] == 0 and priced["basis"] == "max SLO-compliant throughput"
    assert 3.60 / (priced["requests_per_s"] * 3600) == pytest.approx(0.0005)


def test_cost_per_1m_output_tokens_carries_the_throughput_interval_flipped():
    """$3.60/h at 100 % and 100 output tok/s: 3.60 / (100 x 3,600) x 1e6 = $10 per 1M output tokens. The
    throughput's 95 % interval 80-125 tok/s gives 3.60 / (125 x 3,600) x 1e6 = $8 and 3.60 / (80 x 3,600) x 1e6
    = $12.50: the slow end is the dear end."""
    run = measured(attempts_per_s=1.0, output_tokens_per_s=100.0, output_tokens_per_s_ci95=[80.0, 125.0])
    sh = self_hosted_section(
        "x", "r", run, "box", rented(3.6), TaskProfile(100, 50, utilization=1.0), success(1.0), TODAY, 90
    )
    assert sh["per_1m_output_tokens"] == pytest.approx(10.0)
    assert sh["per_1m_output_tokens_ci95"] == pytest.approx([8.0, 12.5])
    no_interval = self_hosted_section(
        "x", "r", measured(attempts_per_s=1.0), "box", rented(3.6), TaskProfile(100, 50), success(1.0), TODAY, 90
    )
    assert "per_1m_output_tokens_ci95" not in no_interval


def test_break_even_by_the_apis_price_and_by_utilization():
    """Self-hosted: $1/h ($730 a month), 1 attempt/s; one instance carries 2,628,000 x u tasks a month. API:
    $0.0005 a task. Break-even 730 / 0.0005 = 1,460,000 tasks a month at the option's 100 %. By the API's
    price: -50 % ($0.00025) puts it at 2,920,000, beyond the 2,628,000 one instance carries: none; +50 %
    ($0.00075) at 973,333. By utilization: the volume is the same 1,460,000 wherever one instance carries it
    (2,628,000 x u >= 1,460,000: u >= 55.6 %), so 70 % and 90 % have it and 10 %, 30 % and 50 % have none."""
    from bench.cost import break_even_entry

    sh = {"name": "sh", "_option": Option("sh", "self-hosted", 1.0, hardware_hourly=1.0, attempt_rate=1.0)}
    ap = {"name": "api", "_option": Option("api", "api", 1.0, attempt_cost=0.0005)}
    entry = break_even_entry(sh, ap)
    assert entry["tasks_per_month"] == pytest.approx(1_460_000)
    assert entry["by_price"] == {"-50%": None, "+0%": pytest.approx(1_460_000), "+50%": pytest.approx(973_333.33)}
    at = pytest.approx(1_460_000)
    assert entry["by_utilization"] == {"10%": None, "30%": None, "50%": None, "70%": at, "90%": at}


def test_energy_cost_per_1m_output_tokens_uses_the_owned_boxs_tariff_else_the_flag():
    """0.36 J per output token: 1M tokens = 0.1 kWh; an owned box at $0.20/kWh pays $0.02, a rented one priced
    with --electricity-per-kwh 0.30 $0.03, and a rented one without it has no energy cost to show."""
    owned = HardwareOffer(
        owned={"purchase": 1000, "amortization_years": 1, "power_w": 100, "electricity_per_kwh": 0.20},
        source="our purchase",
        as_of="2026-11-01",
    )
    run = measured(attempts_per_s=1.0, gpu_energy_j_per_output_token=0.36)
    task = TaskProfile(100, 50, utilization=1.0)
    mine = self_hosted_section("x", "r", run, "box", owned, task, success(1.0), TODAY, 90, electricity_per_kwh=0.30)
    assert mine["electricity_per_kwh"] == 0.20 and mine["energy_per_1m_output_tokens"] == pytest.approx(0.02)
    hired = self_hosted_section(
        "x", "r", run, "box", rented(1.0), task, success(1.0), TODAY, 90, electricity_per_kwh=0.30
    )
    assert hired["energy_per_1m_output_tokens"] == pytest.approx(0.03)
    bare = self_hosted_section("x", "r", run, "box", rented(1.0), task, success(1.0), TODAY, 90)
    assert bare["energy_per_1m_output_tokens"] is None and bare["energy_j_per_output_token"] == 0.36


def test_a_completion_rate_does_not_pass_a_quality_bar():
    """A load run's 18/20 completed requests (90%) say nothing of answer quality: against a 90% bar it is
    left out, with the reason, and the API (assumed by flag) wins; with no bar it is priced as before."""
    run = measured(success_rate=0.9, successes=18, trials=20, success_rate_ci95=[0.7, 0.97])
    offers = {"a": api(input_per_1m=10.0, output_per_1m=0.0)}
    task = TaskProfile(100, 50, tasks_per_month=10_000, utilization=1.0)
    barred = cost_report(
        [{"run_id": "load", "measured": run, "offer_name": "box", "offer": rented(0.5)}],
        offers,
        PricingInputs(task=task, bar=0.9, today=TODAY),
    )["decision"]
    assert barred["winner"] == "a"
    assert [e["name"] for e in barred["excluded"]] == ["load on box"]
    assert "answer quality not measured (run load is not a golden run)" in barred["excluded"][0]["why"]
    free = cost_report(
        [{"run_id": "load", "measured": run, "offer_name": "box", "offer": rented(0.5)}],
        offers,
        PricingInputs(task=task, today=TODAY),
    )["decision"]
    assert not free["excluded"] and {r["name"] for r in free["ranking"]} == {"load on box", "a"}


def test_the_answer_prints_when_a_break_even_has_neither_a_point_nor_an_interval():
    """Nothing uncertain went into the figures (no throughput interval, success rates assumed): the break-even
    has no interval, and where the API is cheaper than a fully used instance there is no point either."""
    from bench.format import format_cost

    report = cost_report(
        [{"run_id": "r", "measured": measured(attempts_per_s=0.001), "offer_name": "box", "offer": rented(50.0)}],
        {"a": api(input_per_1m=0.01, output_per_1m=0.01)},
        PricingInputs(task=TaskProfile(100, 50, tasks_per_month=1000), today=TODAY, self_hosted_success_rate=0.9),
    )
    be = report["decision"]["break_even"]
    assert be["tasks_per_month"] is None and be["ci95"] is None
    assert "none: a costs less per successful task than a fully used instance" in format_cost(report)


def test_a_task_of_no_tokens_is_a_cost_error_not_a_division_by_zero():
    """0 in and 0 out (or every input token cached and none out) takes the engine no time: there is nothing to
    extrapolate a rate to, and CostError is a UsageError, so the CLI prints it as one line (exit 2)."""
    from bench.errors import UsageError

    for task in (TaskProfile(0, 0), TaskProfile(100, 0, cached_input_share=1.0)):
        with pytest.raises(CostError, match="takes no engine time to price") as raised:
            task_rate(measured(), task)
        assert isinstance(raised.value, UsageError) and raised.value.exit_code == 2


def test_a_free_offer_that_wins_prints_without_a_ratio():
    """An API offer at $0 (prices import brings these from LiteLLM) is the cheapest: the runner-up costs
    more by its own cost per successful task, and no ratio to $0 is printed."""
    from bench.format import format_cost

    report = cost_report(
        [{"run_id": "r", "measured": measured(), "offer_name": "box", "offer": rented(2.0)}],
        {"free": api(input_per_1m=0.0, output_per_1m=0.0), "paid": api(input_per_1m=1.0, output_per_1m=2.0)},
        PricingInputs(task=TaskProfile(100, 50, tasks_per_month=1000), today=TODAY),
    )
    d = report["decision"]
    assert d["winner"] == "free" and d["difference"]["ratio"] is None
    assert "more per successful task (the cheapest costs nothing)" in format_cost(report)


def test_a_stage_without_token_counts_is_not_priced_as_a_task_of_no_tokens():
    """A server that reports no usage leaves the stage's prompt token mean unset: read as 0, the APIs would
    bill nothing for input and the self-hosted side could not extrapolate. It is an error naming the stage."""
    summary = summary_with_failures()
    assert priced_throughput(summary)["input_tokens_mean"] == 100.0
    summary.stages[0].prompt_tokens = Stats(n=0)
    with pytest.raises(CostError, match="stage 0 recorded no prompt token counts"):
        priced_throughput(summary)
