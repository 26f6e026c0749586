"""Load flags become a spec, the spec becomes stages; a bad plan is a one-line error naming the flag."""

import pytest

from bench.cli import build_parser
from bench.cli.run import spec_from_args
from bench.errors import UsageError
from bench.load.plan import build_plan
from bench.load.schedules import ClosedLoop, OpenLoop
from bench.spec import Amount, parse_slo


def spec_of(*flags):
    return spec_from_args(build_parser().parse_args(["run", "--engine", "llamacpp", "--model", "m", *flags]))


def plan_of(*flags):
    spec = spec_of(*flags)
    return build_plan(spec.load, spec.workload)


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
    assert plan.stages[1].schedule == ClosedLoop(16) and plan.sweep_rates == 3 and plan.total_stages == 5
    assert plan.rate_stage(2, 1.5).warmup_requests == 0  # rate stages do not inherit closed-loop warmup


def test_duration_without_requests_is_still_bounded():
    assert plan_of("--duration", "5").stages[0].requests == 1000


def test_a_golden_set_is_one_pass_without_warmup():
    spec = spec_of("--golden", "tests/integration/fixtures/golden-gemma.jsonl")
    plan = build_plan(spec.load, spec.workload, cases=9)
    assert plan.stages[0].requests == 9 and plan.stages[0].warmup_requests == 0
    assert spec.workload.asks_ignore_eos is False


def test_slo_units():
    assert parse_slo("ttft=500ms,tpot=50ms,e2e=10s,itl=200us") == {"ttft": 500, "tpot": 50, "e2e": 10000, "itl": 0.2}


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (("--rate", "1", "--sweep", "2"), "--rate and --sweep are different plans; give one of them"),
        (("--rate", "0,1"), "--rate 0,1: Input should be greater than 0"),
        (("--rate", "nan"), "--rate nan: Input should be a finite number"),
        (("--rate", "inf"), "--rate inf: Input should be a finite number"),
        (("--concurrency", "x"), "--concurrency x: Input should be a valid integer"),
        (("--arrival", "pareto", "--rate", "1"), "argument --arrival: invalid choice: 'pareto'"),
        (("--burstiness", "0.5", "--rate", "1"), "set --arrival to gamma"),
        (("--slo", "ttft=500"), "--slo ttft=500: 'ttft=500': each item is METRIC=VALUE with a unit"),
        (("--slo", "latency=1s"), "METRIC one of ttft, tpot, itl, e2e"),
        (("--warmup", "1.5"), "--warmup 1.5: '1.5': give a number of requests (8) or of seconds (5s)"),
        (("--max-error-rate", "5"), "--max-error-rate 5: Input should be less than or equal to 1"),
        (("--port", "70000"), "--port 70000: Input should be less than or equal to 65535"),
        (("--run-id", "../escaped-run"), "--run-id ../escaped-run: '../escaped-run': a run id is a folder name"),
        (("--api-key-env", "KEY"), "--api-key-env does not apply to --engine llamacpp"),
        (("--dtype", "half"), "--dtype does not apply to --engine llamacpp"),
        (("--prefix-count", "2"), "--prefix-count and --prefix-tokens go together"),
    ],
)
def test_bad_plans_name_the_flag(flags, fragment):
    with pytest.raises(UsageError) as caught:
        plan_of(*flags)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_amounts():
    assert Amount.model_validate("8") == Amount(requests=8) and Amount.model_validate("2.5s") == Amount(seconds=2.5)
    assert str(Amount(seconds=2.5).model_dump()) == "2.5s"


def stage_summary(index, ok, failed, rps, slo_fraction=None):
    from bench.summary import RequestCounts, SloReport, StageSummary

    slo = (
        SloReport(percentile=99, requests_judged=ok + failed, fraction_meeting_all=slo_fraction)
        if (slo_fraction is not None)
        else None
    )
    return StageSummary(
        stage=index, requests=RequestCounts(successful=ok, failed=failed), request_throughput_per_s=rps, slo=slo
    )


def test_a_plan_stops_after_a_stage_that_failed_most_requests_or_missed_its_slos():
    plan = plan_of("--concurrency", "1,2,4", "--slo", "ttft=1s", "--stop-slo-fraction", "0.6")
    assert plan.stop_reason(stage_summary(0, 10, 0, 1.0, 0.9), None) is None
    assert plan.stop_reason(stage_summary(0, 4, 6, 1.0), None) == "stage 0 failed 6 of 10 requests"
    assert "only 50% of requests met every SLO (stop_slo_fraction 0.6)" in plan.stop_reason(
        stage_summary(1, 10, 0, 1.0, 0.5), None
    )
    assert plan.stop_reason(stage_summary(2, 10, 0, 1.0), "more than 3 errors") == (
        "stage 2 stopped early (more than 3 errors)"
    )


def test_a_sweep_places_its_rates_between_the_two_measured_throughputs_or_adds_none():
    plan = plan_of("--sweep", "3", "--max-concurrency", "8")
    added = plan.next_stages([stage_summary(0, 10, 0, 1.0), stage_summary(1, 10, 0, 5.0)])
    assert [s.schedule.rate for s in added] == [2.0, 3.0, 4.0] and [s.index for s in added] == [2, 3, 4]
    assert plan.next_stages([stage_summary(0, 0, 10, None), stage_summary(1, 10, 0, 5.0)]) == []


def test_the_error_stops_given_as_flags_bound_every_stage_of_the_plan():
    plan = plan_of("--concurrency", "1,2", "--max-errors", "3", "--max-error-rate", "0.2")
    assert [(s.max_errors, s.max_error_rate) for s in plan.stages] == [(3, 0.2), (3, 0.2)]
    swept = plan_of("--sweep", "2", "--max-concurrency", "4", "--max-errors", "5")
    added = swept.next_stages([stage_summary(0, 10, 0, 1.0), stage_summary(1, 10, 0, 3.0)])
    assert [s.max_errors for s in swept.stages + added] == [5, 5, 5, 5]  # the sweep's rate stages too
