"""Load workers without Ray: how a stage is split, how records move to the common clock, and one LoadWorker (the
Ray actor's class, used as plain Python) driving the in-process fake engine. The Ray cluster itself:
tests/integration/test_ray.py."""

import time

import pytest

from bench.cli import build_parser
from bench.cli.run import spec_from_args
from bench.clients.base import PreparedRequest
from bench.errors import UsageError
from bench.load.plan import Stage
from bench.load.schedules import ClosedLoop, OpenLoop
from bench.load.workload import WorkItem
from bench.records import RequestRecord
from bench.scale.workers import LoadWorker, best_sample, items_needed, shares, shift_record, split_stage

from ..conftest import fake_engine


def test_shares_are_whole_and_add_up():
    assert shares(10, [1, 1, 1]) == [4, 3, 3]
    assert shares(64, [3, 2]) == [38, 26]
    assert shares(1, [1, 1]) == [1, 0] and shares(5, [0, 0]) == [0, 0]


def test_a_closed_loop_stage_is_split_by_streams_with_the_counts_in_proportion():
    stage = Stage(
        2,
        "c5",
        ClosedLoop(5),
        requests=64,
        warmup_requests=5,
        cooldown_requests=2,
        max_errors=3,
        duration_s=30.0,
        warmup_s=1.0,
    )
    a, b = split_stage(stage, 2)
    assert (a.schedule.concurrency, b.schedule.concurrency) == (3, 2)
    assert (a.requests, b.requests) == (38, 26) and (a.warmup_requests, b.warmup_requests) == (3, 2)
    assert a.cooldown_requests + b.cooldown_requests == 2 and a.index == b.index == 2
    assert a.duration_s == 30.0 and a.warmup_s == 1.0  # times are the stage's own on every worker
    assert a.max_errors is None and b.max_error_rate is None  # judged on the merged records instead


def test_fewer_streams_than_workers_leaves_workers_idle():
    parts = split_stage(Stage(0, "c1", ClosedLoop(1), requests=8, warmup_requests=1), 3)
    assert parts[1] is None and parts[2] is None and parts[0].requests == 8


def test_an_open_loop_rate_is_shared_and_a_cap_split_like_streams():
    stage = Stage(0, "r", OpenLoop(rate=6.0, arrival="poisson", max_concurrency=3), requests=10)
    parts = split_stage(stage, 4)
    assert parts[3] is None and [p.schedule.rate for p in parts[:3]] == [2.0, 2.0, 2.0]
    assert [p.schedule.max_concurrency for p in parts[:3]] == [1, 1, 1] and sum(p.requests for p in parts[:3]) == 10
    uncapped = split_stage(Stage(0, "r", OpenLoop(rate=6.0), requests=10), 2)
    assert [p.schedule.rate for p in uncapped] == [3.0, 3.0] and uncapped[0].schedule.max_concurrency is None


def test_items_cover_time_bounded_phases():
    part = Stage(0, "c2", ClosedLoop(2), requests=10, warmup_requests=2, warmup_s=1.5)
    assert items_needed(part) == 2 + 10 + 24  # 8 a stream-second for 1.5 s: twice bench.run's guess


def test_a_record_moves_to_the_common_clock_by_one_integer_so_durations_are_unchanged():
    record = RequestRecord(request_id=0, t_intended_ns=5, t_send_ns=10, output_times_ns=[30, 45, 61], t_end_ns=70)
    moved = shift_record(record, -1_000_000_007)
    assert moved.t_send_ns == 10 - 1_000_000_007 and moved.t_intended_ns == 5 - 1_000_000_007
    assert [t - moved.t_send_ns for t in moved.output_times_ns] == [20, 35, 51]
    assert moved.t_end_ns - moved.t_send_ns == 60


def test_the_clock_offset_comes_from_the_fastest_round_trip():
    # (t0, worker clock, worker wall, t1): the second trip is the fastest, its midpoint is 2_000_050
    samples = [
        (1_000_000, 5_000_900, 0, 1_002_000),
        (2_000_000, 6_000_050, 0, 2_000_100),
        (3_000_000, 7_000_000, 0, 3_000_500),
    ]
    best = best_sample(samples)
    assert best["offset_ns"] == 6_000_050 - 2_000_050 and best["rtt_ns"] == 100 and best["uncertainty_ns"] == 50


def test_a_load_worker_runs_its_part_from_its_own_start_time_and_says_when_it_ran_short():
    with fake_engine(ttft_ms=5, gap_ms=1) as url:
        worker = LoadWorker(0, url, {}, "completions", "calibration", {}, 30.0, None, [], False)
        try:
            items = [WorkItem([PreparedRequest("hi", 4)]) for _ in range(5)]
            start = time.perf_counter_ns() + 200_000_000
            result = worker.run_stage(Stage(0, "c2", ClosedLoop(2), requests=4, warmup_requests=1), items, 0, start)
            records = worker.drain()
            assert result["sent"] == {"warmup": 1, "measured": 4, "cooldown": 0} and not result["exhausted"]
            assert len(records) == 5 and worker.drain() == []
            assert all(r.status == "ok" and r.output_tokens == 4 for r in records)
            # times are relative to the worker's own anchor, and nothing was sent before the start time
            assert min(r.t_send_ns for r in records) + worker.anchor_ns >= start
            short = worker.run_stage(Stage(1, "c2", ClosedLoop(2), requests=4), items[:2], 0, 0)
            assert short["exhausted"] and short["used"] == 2 and len(worker.drain()) == 2
        finally:
            worker.close()


def test_a_run_stop_that_reaches_a_worker_between_stages_stops_the_next_stage_at_once():
    """A Ctrl-C handled while the coordinator prepares a stage reaches the worker before that stage's runner
    exists: the stage sends nothing and says why, where it ran its whole length; a stage-only stop (a stage's
    error limit) does not carry over to the next stage."""
    with fake_engine(ttft_ms=5, gap_ms=1) as url:
        worker = LoadWorker(0, url, {}, "completions", "calibration", {}, 30.0, None, [], False)
        try:
            items = [WorkItem([PreparedRequest("hi", 4)]) for _ in range(8)]
            worker.stop("more than 0 errors")  # a stage's own stop, with no stage running
            ran = worker.run_stage(Stage(0, "c2", ClosedLoop(2), requests=4), items[:4], 0, 0)
            assert ran["sent"]["measured"] == 4 and ran["run_stop"] is None
            worker.drain()
            worker.stop("interrupted by SIGINT", True)
            stopped = worker.run_stage(Stage(1, "c2", ClosedLoop(2), requests=4), items[4:], 0, 0)
            assert stopped["sent"]["measured"] == 0 and stopped["run_stop"] == "interrupted by SIGINT"
        finally:
            worker.close()


def test_load_workers_need_an_endpoint_and_ray_goes_with_them(tmp_path):
    def spec(*argv):
        return spec_from_args(build_parser().parse_args(["run", *argv, "--results-dir", str(tmp_path)]))

    s = spec("--endpoint", "http://127.0.0.1:9", "--model", "m", "--load-workers", "2", "--ray", "auto")
    assert s.load.workers == 2 and s.load.ray_address == "auto"
    with pytest.raises(UsageError, match="drive a running server from client hosts of a Ray cluster"):
        spec("--engine", "llamacpp", "--model", "gemma3-270m", "--load-workers", "2")
    with pytest.raises(UsageError, match="drive a running server from client hosts of a Ray cluster"):
        spec("--engine", "llamacpp", "--model", "gemma3-270m", "--ray", "auto")
    one = spec("--endpoint", "http://127.0.0.1:9", "--model", "m", "--ray", "auto")  # one load worker on the cluster
    assert one.load.workers == 1 and one.load.on_ray
    assert not spec("--endpoint", "http://127.0.0.1:9", "--model", "m").load.on_ray
    with pytest.raises(UsageError, match="--load-workers 0"):
        spec("--endpoint", "http://127.0.0.1:9", "--model", "m", "--load-workers", "0")
