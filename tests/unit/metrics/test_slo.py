"""SLO fractions, goodput, compliance at a percentile, bootstrap intervals, sweep pick."""

import numpy as np
import pytest

from bench.analysis import summarize_run
from bench.metrics.requests import max_slo_compliant, slo_report, table_of, throughput_slices
from bench.metrics.stats import mean_t_interval
from bench.records import Manifest, SloTargets, StageRecord
from bench.summary import SloReport, StageSummary

MS = 1_000_000


def rec(t_send, ttft, tpot, n, status="ok", intended=None, phase="measured"):
    times = [t_send + ttft + i * tpot for i in range(n)] if status == "ok" else []
    end = times[-1] + 1 if times else t_send + 5
    r = {
        "phase": phase,
        "status": status,
        "t_send_ns": t_send * MS,
        "t_end_ns": end * MS,
        "output_times_ns": [t * MS for t in times],
        "output_tokens": n if status == "ok" else None,
        "max_tokens": n,
        "prompt_tokens": 4,
        "request_id": t_send,
    }
    if intended is not None:
        r["t_intended_ns"] = intended * MS
    return r


# ttft/tpot in ms: 100/10 meets both; 300/10 misses ttft; 100/40 misses tpot; one failure misses all
RECORDS = [rec(0, 100, 10, 5), rec(10, 300, 10, 5), rec(20, 100, 40, 5), rec(30, 0, 0, 0, status="error")]


def report(records, slo, q) -> SloReport:
    return slo_report(table_of(records), slo, q)


def test_fractions_and_goodput():
    r = report(RECORDS, {"ttft": 200.0, "tpot": 20.0}, 99)
    assert r.requests_judged == 4
    assert r.by_metric["ttft"].fraction_meeting == 0.5  # two of four: the failure counts against
    assert r.by_metric["tpot"].fraction_meeting == 0.5
    assert r.fraction_meeting_all == 0.25
    window_s = (10 + 300 + 4 * 10 + 1) / 1000  # first send at 0 ms to the last end at 351 ms
    assert r.goodput_requests_per_s == pytest.approx(1 / window_s)
    assert r.compliant is False and r.by_metric["ttft"].at_percentile == float("inf")


def test_two_failures_at_the_percentile_are_infinite_not_nan():
    """inf - inf is nan: neighbouring infinite ranks must interpolate to inf (a failure is infinitely slow)."""
    failures = [rec(0, 100, 10, 5)] + [rec(10 * i, 0, 0, 0, status="error") for i in range(1, 4)]
    assert report(failures, {"ttft": 200.0}, 99).by_metric["ttft"].at_percentile == float("inf")


def test_a_rank_that_lands_on_the_last_finite_value_is_that_value_not_nan():
    """101 requests, one failed: p99's rank is exactly 100, the slowest success; inf * 0 made it nan, and a run
    that met its SLO failed it."""
    records = [rec(i * 10, i + 1, 10, 5) for i in range(100)] + [rec(2000, 0, 0, 0, status="error")]
    at = report(records, {"ttft": 200.0}, 99).by_metric["ttft"]
    assert at.at_percentile == pytest.approx(100.0)
    assert report(records, {"ttft": 200.0}, 99).compliant is True


def test_compliance_at_a_percentile():
    one_slow = [rec(i * 10, 100, 10, 5) for i in range(99)] + [rec(2000, 900, 10, 5)]
    # rank 98.01 of 100 sorted values: 100 + 0.01 * (900 - 100) = 108 ms, within 200
    assert report(one_slow, {"ttft": 200.0}, 99).by_metric["ttft"].at_percentile == pytest.approx(108)
    two_slow = one_slow[1:] + [rec(3000, 900, 10, 5)]
    assert report(two_slow, {"ttft": 200.0}, 99).compliant is False  # rank 98.01 lands on a 900
    assert report(two_slow, {"ttft": 200.0}, 90).compliant is True
    assert report(two_slow, {"ttft": 200.0}, 99).by_metric["ttft"].fraction_meeting == 0.98


def test_open_loop_slo_counts_from_the_intended_send():
    late = [rec(500, 100, 10, 3, intended=0)]  # held 500 ms in the client, then a 100 ms TTFT
    assert report(late, {"ttft": 200.0}, 50).by_metric["ttft"].fraction_meeting == 0.0
    summary = summarize_run(table_of(late), [], Manifest(run_id="r", started_at="now"))
    assert summary.client_queue_ms.mean == 500 and summary.ttft_from_intended_ms.mean == 600
    assert summary.ttft_ms.mean == 100


def test_one_token_answers_have_no_tpot_to_miss():
    assert report([rec(0, 50, 0, 1)], {"tpot": 1.0}, 99).compliant is True


def test_itl_and_e2e_slos_judge_the_worst_gap_and_the_whole_request():
    # gaps of 10 ms except one request whose stream stalls: chunks at 100, 110, 400 ms
    steady = rec(0, 100, 10, 3)
    stalled = dict(rec(10, 100, 10, 3), output_times_ns=[110 * MS, 120 * MS, 410 * MS], t_end_ns=411 * MS)
    r = report([steady, stalled], {"itl": 50.0, "e2e": 200.0}, 50)
    assert r.by_metric["itl"].fraction_meeting == 0.5  # the stalled stream's worst gap is 290 ms
    assert r.by_metric["e2e"].fraction_meeting == 0.5  # its E2E is 401 ms; the steady one's 121 ms
    assert r.fraction_meeting_all == 0.5


def test_an_itl_slo_judges_the_worst_gap_not_the_mean_one():
    """Ten tokens at 110, 120, ..., 190 ms, then one 80 ms stall to 270 ms: TPOT (270 - 110) / 9 = 17.8 ms is
    within 50 ms, the worst gap (80 ms) is not. An ITL SLO that judged the mean gap would pass it."""
    times = [(110 + 10 * i) * MS for i in range(9)] + [270 * MS]
    stalled = dict(rec(10, 100, 10, 10), output_times_ns=times, t_end_ns=271 * MS)
    r = report([rec(0, 100, 10, 10), stalled], {"itl": 50.0}, 50)
    assert r.by_metric["itl"].fraction_meeting == 0.5 and r.fraction_meeting_all == 0.5
    assert report([stalled], {"tpot": 50.0}, 50).compliant is True  # the same request meets a 50 ms TPOT


def test_the_t_interval_of_a_mean_by_hand_and_its_coverage_at_ten_values():
    """1..100 by hand: mean 50.5, s = 29.011, s / sqrt(100) = 2.9011, t(0.975, 99) = 1.98422, so the log-scale half
    width is 1.98422 x 2.90115 / 50.5 = 0.113991 and the interval 50.5 x exp(-/+ 0.113991) = 45.06 to 56.60. Ten
    values of a gamma distribution (as a stage's ten throughput slices), 1,000 samples: it covers the true mean
    close to the 95 % it says (the percentile bootstrap it replaced, 90.7 %)."""
    low, high = mean_t_interval([float(v) for v in range(1, 101)])
    assert low == pytest.approx(45.0595, abs=1e-3) and high == pytest.approx(56.5974, abs=1e-3)
    rng = np.random.default_rng(5)
    covered = sum(low <= 100 <= high for low, high in (mean_t_interval(rng.gamma(20.0, 5.0, 10)) for _ in range(1000)))
    assert 930 <= covered <= 970, covered
    assert mean_t_interval([1.0]) is None
    assert mean_t_interval([0.0, 0.0]) == [0.0, 0.0]  # no throughput at all: the linear interval, not a log of 0


def test_max_slo_compliant_picks_the_fastest_compliant_stage():
    def stage(i, rps, compliant, goodput):
        return StageSummary(
            stage=i,
            label="abc"[i],
            request_throughput_per_s=rps,
            output_throughput_tokens_per_s=rps * 10,
            slo=SloReport(percentile=99, requests_judged=1, compliant=compliant, goodput_requests_per_s=goodput),
        )

    stages = [stage(0, 1.0, True, 1.0), stage(1, 3.0, True, 2.9), stage(2, 5.0, False, 1.0)]
    assert max_slo_compliant(stages).stage == 1
    assert max_slo_compliant(stages[2:]) is None


def _stage(index, name, label):
    return StageRecord(index=index, name=name, kind="closed-loop", label=label, schedule={}, requests=2)


def test_summary_per_stage_with_slo():
    records = [dict(r, stage=0) for r in RECORDS[:2]] + [dict(r, stage=1) for r in RECORDS[2:]]
    manifest = Manifest(
        run_id="r",
        started_at="now",
        slo=SloTargets(thresholds_ms={"ttft": 200.0}, percentile=50),
        stages=[_stage(0, "c1", "concurrency 1"), _stage(1, "c2", "concurrency 2")],
    )
    summary = summarize_run(table_of(records), [], manifest)
    assert [s.requests.measured for s in summary.stages] == [2, 2]
    assert summary.stages[0].label == "concurrency 1"
    assert summary.stages[0].slo.compliant is True  # p50 of (100, 300) = 200
    assert summary.slo.max_slo_compliant.stage == 0


def test_throughput_slices_count_tokens_where_they_arrived():
    # window 0..1000 ms -> ten 100 ms slices; request A's 4 tokens arrive in slices 1, 1, 2, 9;
    # request B has 6 tokens in 3 chunks (2 each) arriving in slices 5, 5, 6
    a = {
        "phase": "measured",
        "status": "ok",
        "t_send_ns": 0,
        "t_end_ns": 1000 * MS,
        "output_tokens": 4,
        "output_times_ns": [110 * MS, 150 * MS, 250 * MS, 990 * MS],
    }
    b = {
        "phase": "measured",
        "status": "ok",
        "t_send_ns": 400 * MS,
        "t_end_ns": 700 * MS,
        "output_tokens": 6,
        "output_times_ns": [510 * MS, 520 * MS, 650 * MS],
    }
    per_slice_tokens = [v * 0.1 for v in throughput_slices(table_of([a, b]))]
    assert per_slice_tokens == pytest.approx([0, 2, 1, 0, 0, 4, 2, 0, 0, 1])


def test_a_summary_with_an_infinite_percentile_matches_itself_read_back():
    """A p99 over failed requests is infinite; JSON holds it as null, and `bench summarize` must still match."""
    import orjson

    from bench.analysis import same_figures
    from bench.summary import RunSummary

    manifest = Manifest(run_id="r", started_at="now", slo=SloTargets(thresholds_ms={"ttft": 200.0}, percentile=99))
    summary = summarize_run(table_of(RECORDS), [], manifest)
    assert summary.stages[0].slo.by_metric["ttft"].at_percentile == float("inf")
    on_disk = RunSummary.load(orjson.loads(orjson.dumps(summary.to_json())))
    assert same_figures(on_disk.to_json(), summary.to_json())
