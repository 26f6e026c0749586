"""Ramps and the max-rate search, against the in-process fake engine."""

import asyncio
import json

import pytest

from bench.calibrate.server import running
from bench.clients.base import PreparedRequest
from bench.clients.dialects import DIALECTS
from bench.clients.http import HttpClient, perf_ns
from bench.clients.streaming import StreamingClient
from bench.load.plan import Search, Stage, requests_for_percentile
from bench.load.runner import LoadRunner
from bench.load.schedules import ClosedLoop, OpenLoop, intended_offsets
from bench.load.workload import WorkItem
from bench.run import execute
from bench.spec import EndpointEngine, Length, LoadSpec, RunSpec, WorkloadSpec

from ..conftest import fake_engine


def test_an_open_loop_ramp_follows_the_integrated_rate():
    # 0 -> 10 req/s over 2 s: Lambda(t) = 2.5 t^2, so the k-th arrival is at sqrt(k / 2.5); then every 0.1 s
    offsets = intended_offsets(OpenLoop(10.0, "constant", ramp_from=0.0, ramp_s=2.0), 14, 0, 0)
    assert offsets[:11] == pytest.approx([(k / 2.5) ** 0.5 for k in range(11)])
    assert offsets[11:] == pytest.approx([2.1, 2.2, 2.3])
    assert OpenLoop(10.0, ramp_from=2.0, ramp_s=4.0).level_at(1.0) == 4.0  # 2 + 8 * 1/4


def test_a_closed_loop_ramp_adds_streams_at_even_steps_and_says_so_in_each_record():
    stage = Stage(0, "ramp", ClosedLoop(4, ramp_from=1, ramp_s=0.6), requests=10_000, duration_s=1.2, warmup_s=0.6)

    async def go():
        records = []
        async with running(2.0, 5.0) as url:
            client = StreamingClient(HttpClient(url), DIALECTS["completions"], "fake", {}, 30.0, perf_ns())
            work = (WorkItem([PreparedRequest("x", 4)]) for _ in range(10_000))
            await LoadRunner(client, work, records.append).run_stage(stage)
            await client.http.close()
        return records

    records = asyncio.run(go())
    assert ClosedLoop(4, ramp_from=1, ramp_s=0.6).start_offsets_s() == pytest.approx([0.0, 0.2, 0.4, 0.6])
    ramped = [r for r in records if r.ramp_level is not None]
    assert ramped and all(r.phase == "warmup" for r in ramped)  # the ramp is warmup, not measured
    assert {r.ramp_level for r in ramped} == {1.0, 2.0, 3.0} and {r.worker for r in ramped} == {0, 1, 2}
    assert all(r.ramp_level is None for r in records if r.phase == "measured")
    assert {r.worker for r in records if r.phase == "measured"} == {0, 1, 2, 3}


def test_the_search_bisects_to_its_precision():
    search = Search(low=1.0, high=9.0, precision=0.1, min_requests=50)
    capacity = 6.2  # rates up to this hold their SLOs
    while (rate := search.next_rate()) is not None:
        search.steps.append((rate, rate <= capacity))
    rates = [r for r, _ in search.steps]
    assert rates[:3] == [9.0, 1.0, 5.0]  # the top, the bottom, then halvings of the bracket
    assert search.held <= capacity < search.failed and (search.failed - search.held) / search.held <= 0.1
    assert len(rates) <= search.most_stages
    assert (
        requests_for_percentile(99) == 500 and requests_for_percentile(90) == 50 and requests_for_percentile(50) == 10
    )


def test_a_search_run_finds_the_rate_one_stream_can_carry(tmp_path):
    """One request in flight at a time, each taking at least 50 ms (25 ms TTFT, then 2 tokens 25 ms apart):
    arrivals faster than that queue in the client. With 10 requests a stage (p50 needs 10), request k's TTFT
    from its intended send is at least 25 ms + k x (50 ms - 1000/rate), so above 30 req/s the median misses the
    100 ms TTFT SLO on any machine: overheads only add to it. At 15 req/s a request may take 66 ms before any
    queueing starts, and the median TTFT is 25 ms plus overheads: it holds unless each request's overheads
    pass about 16 ms. So the few ms a busy machine adds cannot decide the bracket's ends, whichever way the
    rates in between go."""
    with fake_engine(ttft_ms=25.0, gap_ms=25.0) as url:
        spec = RunSpec(
            engine=EndpointEngine(url=url),
            model="calibration",
            api="completions",
            workload=WorkloadSpec(input_tokens=Length(a=4), output_tokens=Length(a=2)),
            load=LoadSpec(
                search_rate="10:80",
                search_precision="20%",
                max_concurrency=1,
                arrival="constant",
                slo="ttft=100ms",
                slo_percentile=50,
                requests=4,
                warmup="0",
            ),
            output={"results_dir": tmp_path, "run_id": "s"},
        )
        result = execute(spec)
    assert result.exit_code == 0, result.manifest.incomplete_reason
    search = result.summary.search
    assert search.found_rate is not None, search.steps
    held, failed = search.bracket
    assert failed is not None and search.found_rate == held < failed and search.precision_reached, search.steps
    assert held <= 30 and failed >= 15, search.steps  # held <= 30 is exact; failed >= 15 allows 16 ms a request
    assert [(s["rate"], s["compliant"]) for s in search.steps][:3] == [(80.0, False), (10.0, True), (45.0, False)]
    assert all(s.requests == 10 for s in result.manifest.stages)  # p50 needs 10 measured requests, not the 4 asked
    assert len(result.manifest.stages) == len(search.steps) <= 8  # HIGH, LOW, then at most 6 halvings to 20%
    # One stream carries at most 20 req/s (50 ms a request): a held rate above that measures about the same
    # throughput as the compliant stages below it, so the priced stage is a compliant one that carried at least
    # as much as the held rate's stage did (which one of near-equal throughputs is a matter of noise)
    best = result.summary.slo.max_slo_compliant
    held_stage = next(s["stage"] for s in search.steps if s["rate"] == held)
    carried = {s.stage: s.request_throughput_per_s for s in result.summary.stages}
    assert best.stage in {s["stage"] for s in search.steps if s["compliant"]}, (best, search.steps)
    assert best.request_throughput_per_s >= carried[held_stage], (best, carried)
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["search"]["requests_per_stage"] == 10
