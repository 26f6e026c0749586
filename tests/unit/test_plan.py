"""Load flags become stages, or a one-line error naming the flag."""

import argparse

import pytest

from bench.cli import build_parser
from bench.errors import UsageError
from bench.load.schedules import ClosedLoop, OpenLoop
from bench.plan import build_plan, parse_amount, parse_slo


def plan_of(*flags):
    args = build_parser().parse_args(["run", "--engine", "llamacpp", "--model", "m", *flags])
    return build_plan(args)


def test_concurrency_list_is_consecutive_closed_loop_stages_with_one_warmup_per_stream():
    plan = plan_of("--concurrency", "1,2,4", "--requests", "10")
    assert [s.schedule for s in plan.stages] == [ClosedLoop(1), ClosedLoop(2), ClosedLoop(4)]
    assert [s.warmup_requests for s in plan.stages] == [1, 2, 4] and plan.max_streams == 4
    assert all(s.requests == 10 for s in plan.stages)


def test_rates_are_open_loop_stages():
    plan = plan_of(
        "--rate",
        "0.5,2",
        "--arrival",
        "gamma",
        "--burstiness",
        "0.5",
        "--max-concurrency",
        "8",
        "--warmup",
        "3s",
        "--cooldown",
        "2",
    )
    assert plan.stages[1].schedule == OpenLoop(2.0, "gamma", 0.5, 8)
    assert plan.stages[0].warmup_s == 3.0 and plan.stages[0].cooldown_requests == 2


def test_sweep_starts_synchronous_then_throughput():
    plan = plan_of("--sweep", "3", "--max-concurrency", "16", "--slo", "ttft=1s")
    assert [s.name for s in plan.stages] == ["synchronous", "throughput"]
    assert plan.stages[1].schedule == ClosedLoop(16) and plan.sweep_rates == 3
    assert plan.rate_stage(2, 1.5).warmup_requests == 0  # rate stages do not inherit closed-loop warmup


def test_duration_without_requests_is_still_bounded():
    assert plan_of("--duration", "5").stages[0].requests == 1000


def test_slo_units():
    assert parse_slo("ttft=500ms,tpot=50ms,e2e=10s,itl=200us") == {"ttft": 500, "tpot": 50, "e2e": 10000, "itl": 0.2}


@pytest.mark.parametrize("flags, fragment", [
    (("--rate", "1", "--sweep", "2"), "give one of them"),
    (("--rate", "0,1"), "--rate '0,1': every value must be greater than 0"),
    (("--concurrency", "x"), "--concurrency 'x': expected a comma-separated list"),
    (("--arrival", "pareto", "--rate", "1"), "--arrival 'pareto': choose one of"),
    (("--burstiness", "0.5", "--rate", "1"), "add --arrival gamma"),
    (("--slo", "ttft=500"), "--slo 'ttft=500': each item is METRIC=VALUE with a unit"),
    (("--slo", "latency=1s"), "METRIC one of ttft, tpot, itl, e2e"),
    (("--warmup", "1.5"), "--warmup '1.5': give a number of requests (8) or of seconds (5s)"),
    (("--max-error-rate", "5"), "--max-error-rate is a fraction"),
])  # fmt: skip
def test_bad_plans_name_the_flag(flags, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        plan_of(*flags)


def test_amounts():
    assert parse_amount("8", "--warmup") == (8, 0.0) and parse_amount("2.5s", "--warmup") == (0, 2.5)
    assert parse_amount(None, "--warmup") == (0, 0.0)
    assert isinstance(build_parser(), argparse.ArgumentParser)
