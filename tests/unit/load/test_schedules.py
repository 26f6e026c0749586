"""Seeded arrival schedules have the statistics they promise; phases follow counts and times."""

import math
import statistics

import pytest

from bench.load.runner import PhaseClock, Stage
from bench.load.schedules import ClosedLoop, OpenLoop, intended_offsets, interarrival_gaps

N = 20_000


def gaps(schedule, seed=1):
    return interarrival_gaps(schedule, N, seed=seed, stage=0)[1:]  # the first request goes at once


def cv(values):
    return statistics.pstdev(values) / statistics.fmean(values)


def test_constant_rate_is_exact():
    assert set(gaps(OpenLoop(4.0, "constant"))) == {0.25}
    assert interarrival_gaps(OpenLoop(2.0, "constant"), 3, 0, 0) == [0.0, 0.5, 0.5]  # the first goes at once


def test_poisson_mean_and_cv():
    g = gaps(OpenLoop(5.0, "poisson"))
    assert statistics.fmean(g) == pytest.approx(0.2, rel=0.03)
    assert cv(g) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("shape", [0.25, 0.5, 1.0, 4.0])
def test_gamma_mean_is_the_rate_and_cv_is_one_over_sqrt_shape(shape):
    g = gaps(OpenLoop(10.0, "gamma", burstiness=shape))
    assert statistics.fmean(g) == pytest.approx(0.1, rel=0.05)
    assert cv(g) == pytest.approx(1 / math.sqrt(shape), rel=0.06)


def test_schedule_depends_on_seed_and_stage_only():
    s = OpenLoop(3.0, "poisson")
    assert interarrival_gaps(s, 50, 7, 2) == interarrival_gaps(s, 50, 7, 2)
    assert interarrival_gaps(s, 50, 7, 2) != interarrival_gaps(s, 50, 8, 2)
    assert interarrival_gaps(s, 50, 7, 2) != interarrival_gaps(s, 50, 7, 3)


def stage(**kw):
    return Stage(0, "s", ClosedLoop(1), **{"requests": 3, **kw})


def test_phases_by_count():
    clock = PhaseClock(stage(warmup_requests=2, cooldown_requests=1), start_ns=0)
    assert [clock.next(0) for _ in range(7)] == ["warmup"] * 2 + ["measured"] * 3 + ["cooldown", None]


def test_phases_by_time():
    s = 1_000_000_000
    clock = PhaseClock(stage(requests=100, duration_s=2, warmup_s=1, cooldown_s=1), start_ns=0)
    assert clock.next(0) == "warmup" and clock.next(s // 2) == "warmup"
    assert clock.next(s) == "measured" and clock.next(2 * s) == "measured"
    assert clock.next(3 * s) == "cooldown"  # duration over: the next second keeps the load up
    assert clock.next(3 * s + s // 2) == "cooldown" and clock.next(4 * s) is None


@pytest.mark.parametrize("arrival,burstiness", [("poisson", 1.0), ("gamma", 0.5), ("constant", 1.0)])
def test_an_open_loop_draws_arrivals_enough_for_its_timed_warmup_and_cooldown(arrival, burstiness):
    """Rate 10, 5 s of warmup, 64 measured requests, 5 s of cooldown: in every one of 200 seeded stages the
    phase clock, not the supply of arrivals, ends the stage, so the cooldown lasts its 5 s (drawing only the
    mean count, 10 x 10 + 64 + 1, ran out first in about half of them)."""
    from bench.load.plan import Stage
    from bench.load.runner import PhaseClock, arrival_budget

    schedule = OpenLoop(10.0, arrival, burstiness=burstiness)
    stage = Stage(index=0, name="s", schedule=schedule, requests=64, warmup_s=5.0, cooldown_s=5.0)
    budget = arrival_budget(stage)
    for seed in range(200):
        clock = PhaseClock(stage, 0)
        phases = [clock.next(round(t * 1e9)) for t in intended_offsets(schedule, budget, seed, 0)]
        assert None in phases, f"seed {seed}: the arrivals ran out before the stage's cooldown ended"
        sent = phases[: phases.index(None)]
        assert sent.count("measured") == 64 and sent.count("cooldown") > 0
