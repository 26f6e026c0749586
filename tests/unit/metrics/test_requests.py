"""Metrics against records whose answers were worked out by hand."""

import math

import pytest

from bench.analysis import summarize_run
from bench.metrics.requests import summarize_requests, table_of
from bench.metrics.stats import describe, percentile
from bench.records import GpuSample, Manifest, TelemetrySample

MS = 1_000_000


def rec(request_id, t_send_ms, chunk_ms, t_end_ms, n, status="ok", phase="measured", prompt=10):
    return {
        "request_id": request_id,
        "phase": phase,
        "status": status,
        "max_tokens": n if n else 4,
        "t_send_ns": t_send_ms * MS,
        "t_end_ns": t_end_ms * MS,
        "output_times_ns": [t * MS for t in chunk_ms],
        "output_tokens": n,
        "prompt_tokens": prompt if status == "ok" else None,
        "tokens_source": "usage" if status == "ok" else None,
        "error": None if status == "ok" else "HTTP 500: boom",
    }


# A: four one-token chunks. B: a one-token output. C: failed. D: warmup. E: six tokens in three chunks.
A = rec(1, 0, [100, 150, 200, 250], 260, 4)
B = rec(2, 10, [60], 70, 1)
C = rec(3, 20, [], 30, None, status="error")
D = rec(0, -500, [-400, -300], -290, 2, phase="warmup")
E = rec(4, 40, [120, 180, 300], 310, 6)
RECORDS = [D, A, B, C, E]


def test_percentile_interpolates_linearly_like_numpy():
    data = [50.0, 80.0, 100.0]
    assert percentile(data, 50) == 80.0
    assert percentile(data, 90) == pytest.approx(96.0)  # rank 1.8: 80 + 0.8 * 20
    assert percentile(data, 0) == 50.0 and percentile(data, 100) == 100.0
    assert percentile([7.0], 99.9) == 7.0


def summarize(records):
    return summarize_requests(table_of(records))


def single(record):
    """The per-request figures of one record, through the same table the summaries use."""
    table = table_of([record])
    gaps, _ = table.gaps_ms()
    e2e = table.e2e_ms()[0]
    n = record["output_tokens"]
    return {
        "ttft_ms": table.ttft_ms()[0],
        "e2e_ms": e2e,
        "tpot_ms": table.tpot_ms()[0],
        "itl_ms": gaps.tolist(),
        "output_tokens_per_s": n / (e2e / 1000),
    }


def test_describe_reports_population_std_and_every_percentile():
    stats = describe([36.0, 50.0])
    assert stats.n == 2 and stats.mean == 43.0 and stats.std == 7.0
    assert stats.p50 == 43.0 and stats.p99 == pytest.approx(36 + 0.99 * 14)
    assert set(stats.model_dump(by_alias=True)) >= {"p50", "p90", "p95", "p99", "p99.9", "min", "max"}


def test_describe_of_nothing_is_none_not_zero():
    stats = describe([])
    assert stats.n == 0 and stats.mean is None and stats.p99 is None


def test_single_request_latencies():
    a = single(A)
    assert a["ttft_ms"] == 100 and a["e2e_ms"] == 260
    assert a["tpot_ms"] == 50  # (250 - 100) / (4 - 1)
    assert a["itl_ms"] == [50, 50, 50]
    assert a["output_tokens_per_s"] == pytest.approx(4 / 0.26)


def test_one_token_output_has_ttft_but_no_tpot_or_itl():
    b = single(B)
    assert b["ttft_ms"] == 50 and math.isnan(b["tpot_ms"]) and b["itl_ms"] == []


def test_tpot_divides_by_tokens_not_chunks():
    e = single(E)
    assert e["tpot_ms"] == 36  # (300 - 120) / (6 - 1), though only 3 chunks arrived
    assert e["itl_ms"] == [60, 120]


def test_summary_of_hand_made_run():
    s = summarize(RECORDS)
    assert s.requests.model_dump() == {"measured": 4, "successful": 3, "failed": 1, "cancelled": 0, "warmup": 1}
    # window: first measured send (0 ms) to last measured end (310 ms); the failed request counts in it
    assert s.window_s == pytest.approx(0.31)
    assert s.request_throughput_per_s == pytest.approx(3 / 0.31)
    assert s.output_throughput_tokens_per_s == pytest.approx(11 / 0.31)
    assert s.total_token_throughput_tokens_per_s == pytest.approx((11 + 30) / 0.31)
    assert s.ttft_ms.n == 3 and s.ttft_ms.mean == pytest.approx((100 + 50 + 80) / 3)
    assert s.ttft_ms.p90 == pytest.approx(96.0)
    assert s.tpot_ms.n == 2 and s.tpot_ms.mean == 43.0 and s.tpot_ms.std == 7.0
    # pooled ITL: A's three gaps and E's two
    assert s.itl_ms.n == 5 and s.itl_ms.mean == 66.0
    assert s.itl_ms.p50 == 50.0 and s.itl_ms.p99 == pytest.approx(60 + 0.96 * 60)
    assert s.e2e_ms.mean == pytest.approx((260 + 60 + 270) / 3)
    assert [e.model_dump() for e in s.errors] == [{"error": "HTTP 500: boom", "count": 1}]
    assert s.tokens_source == {"usage": 3}
    assert s.output_length_differs_from_max_tokens == 0


def test_a_run_of_several_stages_is_measured_over_its_stages_not_the_gaps_between_them():
    """Stage 0 measures 0-310 ms, stage 1 (its own warmup at 900 ms) 1,000-1,200 ms: the run's window is
    0.31 + 0.20 s, not the 1.2 s from the first send to the last end. Stages that overlap count once."""
    later = [dict(r, stage=1) for r in (rec(5, 1000, [1100], 1200, 3), rec(6, 900, [950], 960, 1, phase="warmup"))]
    s = summarize(RECORDS + later)
    assert s.window_s == pytest.approx(0.31 + 0.20)
    assert s.output_throughput_tokens_per_s == pytest.approx((11 + 3) / 0.51)
    assert s.request_throughput_per_s == pytest.approx(4 / 0.51)
    overlapping = [dict(rec(7, 200, [300], 400, 2), stage=1)]  # 200-400 ms, over stage 0's 0-310 ms
    assert summarize(RECORDS + overlapping).window_s == pytest.approx(0.40)
    one_stage = summarize(RECORDS + [dict(r, stage=0) for r in later])  # the same requests as one stage
    assert one_stage.window_s == pytest.approx(1.20)


def test_warmup_never_leaks_into_metrics():
    with_warmup = summarize(RECORDS).model_dump()
    without = summarize([r for r in RECORDS if r["phase"] != "warmup"]).model_dump()
    with_warmup["requests"].pop("warmup")
    without["requests"].pop("warmup")
    assert with_warmup == without


def test_a_request_that_stopped_short_of_max_tokens_is_counted():
    short = rec(5, 0, [100, 150, 200], 210, 3)
    short["max_tokens"] = 4  # it stopped (EOS) one token short
    assert summarize([A, short]).output_length_differs_from_max_tokens == 1


def test_a_record_without_a_phase_counts_as_measured():
    """One rule for every reader (a record written without `phase` was measured)."""
    record = {k: v for k, v in A.items() if k != "phase"}
    assert summarize([record]).requests.measured == 1


def test_all_failed_run_has_no_latency_and_zero_throughput():
    s = summarize([C])
    assert s.requests.successful == 0 and s.ttft_ms.n == 0
    assert s.request_throughput_per_s == 0.0


def test_empty_run_has_no_rates():
    s = summarize_run(table_of([]), [], Manifest(run_id="r", started_at="now"))
    assert s.window_s == 0 and s.request_throughput_per_s is None
    assert s.telemetry.samples == 0


def test_telemetry_summary_takes_peak_and_means():
    samples = [
        TelemetrySample(t_ns=0, engine_rss_bytes=100, engine_cpu_percent=50.0, client_cpu_percent=2.0),
        TelemetrySample(t_ns=1, engine_rss_bytes=300, engine_cpu_percent=150.0, client_cpu_percent=4.0),
    ]
    tel = summarize_run(table_of([]), samples, Manifest(run_id="r", started_at="now")).telemetry
    assert tel.engine_peak_rss_bytes == 300 and tel.engine_cpu_percent_mean == 100.0
    assert math.isclose(tel.client_cpu_percent_mean, 3.0)


def test_a_runs_energy_per_token_is_its_stages_not_the_engines_load():
    """The GPU spends 5,000 J loading the model (0-1 s, before any request), 100 J in stage 0 (1.0-1.1 s,
    3 tokens) and 300 J in stage 1 (2.0-2.2 s, 5 tokens): the run's J per output token is 400 / 8, not
    5,400 / 8; its energy and its peaks still span every sample."""
    ms = 1_000_000
    meter = [(0, 0), (1000, 5_000), (1100, 5_100), (1500, 5_200), (2000, 5_300), (2200, 5_600)]
    samples = [
        TelemetrySample(t_ns=t * ms, engine_rss_bytes=t, gpus=[GpuSample(index=0, energy_mj=j * 1000)])
        for t, j in meter
    ]
    records = [rec(0, 1000, [1050, 1080], 1100, 3), dict(rec(1, 2000, [2100, 2150], 2200, 5), stage=1)]
    tel = summarize_run(table_of(records), samples, Manifest(run_id="r", started_at="now")).telemetry
    assert tel.gpu_energy_j_per_output_token == pytest.approx(400 / 8)
    assert tel.gpu_energy_j == pytest.approx(5_600) and tel.engine_peak_rss_bytes == 2200


def test_first_chunks_read_with_the_next_are_counted_among_measured_ok_requests():
    """One read brought the first two chunks (one time): counted; warm-up, failures and one-chunk outputs are not."""
    together = rec(5, 0, [100, 100, 150], 160, 3)
    apart = rec(6, 0, [100, 101, 150], 160, 3)
    warm = rec(7, -500, [-400, -400], -390, 2, phase="warmup")
    assert summarize([together, apart, warm, B, C]).first_chunk_read_with_the_next == 1
    assert summarize(RECORDS).first_chunk_read_with_the_next == 0
