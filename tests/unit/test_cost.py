"""Every cost formula against a hand-computed case, and the edge cases."""

import pytest

from bench.cost import (
    CostError,
    TaskProfile,
    api_per_task,
    break_even,
    energy_per_million_tokens,
    hourly_owned,
    hourly_rented,
    instances_needed,
    monthly_curve,
    per_million_tokens,
    per_task,
    self_hosted_monthly,
    with_measured_tokens,
)

API = {"input_per_1m": 1.0, "output_per_1m": 4.0, "cached_input_per_1m": 0.5, "batch_discount": 0.5}


def test_rented_per_million_tokens():
    # $2/h at 1,000 tok/s, busy half the time: 2 / (1000 * 3600 * 0.5) * 1e6 = $1.111 per 1M tokens
    assert per_million_tokens(hourly_rented(2.0), 1000, 0.5) == pytest.approx(2 / 1.8e6 * 1e6)


def test_owned_hourly():
    # $30,000 over 3 years (26,280 h) = 1.14155; 700 W at $0.15/kWh = 0.105; $100/month hosting = 0.13699
    assert hourly_owned(30_000, 3, 700, 0.15, 100) == pytest.approx(30_000 / 26_280 + 0.105 + 100 / 730)


def test_utilization_and_success_rate_per_task():
    assert per_task(2.0, 1.0, 0.25) == pytest.approx(2 / 900)  # 900 tasks per paid hour
    assert per_task(2.0, 1.0, 0.25, success_rate=0.8) == pytest.approx(2 / 900 / 0.8)


def test_multi_gpu_instances_are_a_step_function():
    task = TaskProfile(1000, 500, peak_to_average=2.0, utilization=0.5)
    # 10M tasks a month = 3.805 tasks/s on average, 7.61 at peak; 1 task/s per instance at 50 % -> 16
    assert instances_needed(10_000_000, 2.0, 1.0, 0.5) == 16
    assert self_hosted_monthly(10_000_000, task, hourly=8.0, requests_per_s=1.0) == 16 * 8.0 * 730
    assert instances_needed(0, 2.0, 1.0, 0.5) == 0


def test_api_task_cost_with_every_term():
    task = TaskProfile(
        1000,
        500,
        reasoning_tokens=100,
        tool_calls_per_task=1,
        cached_input_share=0.5,
        batch_share=0.5,
        retry_rate=0.1,
        escalation_rate=0.01,
        human_review_cost=2.0,
    )
    # input 1000 * (0.5 * $1 + 0.5 * $0.5) / 1e6 = 0.00075; output (500 + 100) * $4 / 1e6 = 0.0024
    # two calls: 0.0063; half batched at half price: x0.75 = 0.004725; 10 % retried: 0.0051975
    # plus 1 % escalated at $2: + 0.02
    assert api_per_task(API, task) == pytest.approx(0.0251975)
    assert api_per_task(API, TaskProfile(1000, 500)) == pytest.approx(0.003)


def test_break_even():
    task = TaskProfile(1000, 500, utilization=0.5)
    # one $2/h instance: $1,460 a month; the API: $0.003 a task -> equal at 486,667 tasks a month,
    # which one instance serving 1 task/s at 50 % (1,314,000 a month) can carry
    assert break_even(task, 2.0, 1.0, 0.003) == pytest.approx(1460 / 0.003)
    # at 0.1 task/s an instance carries only 131,400 a month: the API is cheaper at any volume
    assert break_even(task, 2.0, 0.1, 0.003) is None


def test_edge_cases_are_clear():
    with pytest.raises(CostError, match="no throughput was measured"):
        per_million_tokens(2.0, 0, 0.5)
    with pytest.raises(CostError, match="no request throughput"):
        per_task(2.0, None, 0.5)
    with pytest.raises(CostError, match="utilization must be in"):
        per_task(2.0, 1.0, 0.0)
    with pytest.raises(CostError, match="no task succeeded"):
        per_task(2.0, 1.0, 0.5, success_rate=0.0)


def test_energy_cost_per_million_tokens():
    # 0.36 J/token: 1M tokens = 360,000 J = 0.1 kWh, at $0.20/kWh = $0.02
    assert energy_per_million_tokens(0.36, 0.20) == pytest.approx(0.02)


def test_monthly_curve_steps_with_volume():
    # 1 req/s at 50 % utilization serves 1,314,000 tasks a month per instance at $1/h ($730 a month)
    task = TaskProfile(100, 10, utilization=0.5)
    curve = monthly_curve(task, 1.0, 1.0, [0, 1_000_000, 1_314_000, 1_314_001, 3_000_000])
    assert curve == pytest.approx([730, 730, 730, 1460, 2190])


def test_measured_tokens_fill_only_what_the_task_leaves_unset():
    measured = {"input_tokens_mean": 120.0, "output_tokens_mean": 30.0, "prefix_cache_hit_rate": 0.25}
    assert with_measured_tokens(TaskProfile(None, None), measured).input_tokens == 120.0
    assert with_measured_tokens(TaskProfile(1, 1, cached_input_share=None), measured).cached_input_share == 0.25
    assert with_measured_tokens(TaskProfile(1, 1, cached_input_share=0.0), measured).cached_input_share == 0.0
    filled = with_measured_tokens(TaskProfile(500, None), measured)
    assert (filled.input_tokens, filled.output_tokens) == (500, 30.0)
