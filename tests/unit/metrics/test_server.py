"""The engine's own figures: /metrics deltas and histogram percentiles against a hand-made histogram."""

import pytest

from bench.engines.prometheus import parse
from bench.metrics.server import deltas, histogram_quantile

BEFORE = """
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 2
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 4
vllm:time_to_first_token_seconds_bucket{le="1.0",model_name="m"} 4
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 4
vllm:time_to_first_token_seconds_count{model_name="m"} 4
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.8
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{model_name="m"} 1000
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{model_name="m"} 500
"""
# ten more requests in the stage: 2 under 0.1 s, 4 in (0.1, 0.5], 4 in (0.5, 1.0]; their TTFTs sum to 4.2 s
AFTER = """
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 4
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 10
vllm:time_to_first_token_seconds_bucket{le="1.0",model_name="m"} 14
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 14
vllm:time_to_first_token_seconds_count{model_name="m"} 14
vllm:time_to_first_token_seconds_sum{model_name="m"} 5.0
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{model_name="m"} 2280
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{model_name="m"} 1140
"""


def test_histogram_quantile_interpolates_inside_the_bucket():
    buckets = {0.1: 2.0, 0.5: 6.0, 1.0: 10.0, float("inf"): 10.0}
    # p50: rank 5 of 10 lies in (0.1, 0.5], 3 of that bucket's 4: 0.1 + 0.4 * 3/4 = 0.4
    assert histogram_quantile(0.5, buckets) == pytest.approx((0.4, 0.1, 0.5))
    # p99: rank 9.9 in (0.5, 1.0], 3.9 of 4: 0.5 + 0.5 * 3.9/4 = 0.9875
    assert histogram_quantile(0.99, buckets) == pytest.approx((0.9875, 0.5, 1.0))
    assert histogram_quantile(0.5, {float("inf"): 0.0}) is None


def test_stage_deltas_from_two_scrapes():
    figures = deltas(parse(BEFORE), parse(AFTER))
    assert figures.prompt_tokens == 1280 and figures.generation_tokens == 640
    ttft = figures.ttft_ms
    assert ttft.n == 10 and ttft.mean == pytest.approx(420.0)  # (5.0 - 0.8) s over 10 requests, exact
    assert ttft.p50.estimate == pytest.approx(400.0) and ttft.p50.bucket_ms == [100.0, 500.0]
    assert ttft.p99.estimate == pytest.approx(987.5) and figures.queue_ms is None


def test_llama_cpp_prompt_tokens_are_the_computed_ones_plus_the_cached():
    text = """# TYPE llamacpp:prompt_tokens counter
llamacpp:prompt_tokens_total 300
# TYPE llamacpp:prompt_tokens_cached counter
llamacpp:prompt_tokens_cached_total 100
"""
    figures = deltas({}, parse(text))
    assert figures.processed_prompt_tokens == 300 and figures.cached_prompt_tokens == 100
    assert figures.prompt_tokens == 400 and figures.prefix_cache_hit_rate == pytest.approx(0.25)
