"""Percentiles and intervals against independent oracles: numpy's own percentile, Python's random module and
published t tables."""

import math
import random

import numpy as np
import pytest

from bench.metrics.stats import (
    BOOTSTRAP_MAX_N,
    BOOTSTRAP_RESAMPLES,
    bootstrap_percentile_ci,
    order_statistic_ci,
    percentiles,
    t_cdf,
    t_quantile,
    wilson_interval,
)


def python_percentile(sorted_values, q):
    position = (len(sorted_values) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def test_percentiles_equal_numpys_linear_method():
    values = np.random.default_rng(3).exponential(100.0, 1001)
    qs = (0, 1, 50, 90, 99, 99.9, 100)
    assert percentiles(values, qs) == pytest.approx(np.percentile(values, qs), rel=1e-12)


def test_bootstrap_draws_exactly_what_python_random_choices_draws():
    """The interval is reproducible and equal to the pure-Python percentile bootstrap it replaced."""
    values = [float(v) for v in np.random.default_rng(7).normal(200, 40, 300)]
    rng = random.Random(0)
    estimates = sorted(
        python_percentile(sorted(rng.choices(values, k=len(values))), 99) for _ in range(BOOTSTRAP_RESAMPLES)
    )
    tail = (1 - 0.95) / 2 * 100
    expected = [python_percentile(estimates, tail), python_percentile(estimates, 100 - tail)]
    assert bootstrap_percentile_ci(np.array(values), 99) == expected


def test_large_samples_take_the_order_statistic_interval():
    values = np.arange(1, 1_000_001, dtype=float)  # the q-th quantile of 1..n is n*q/100
    low, high = bootstrap_percentile_ci(values, 50)
    assert len(values) > BOOTSTRAP_MAX_N
    half_width = 1.96 * math.sqrt(1e6 * 0.25)  # about 980 ranks either side of the median
    assert low == pytest.approx(500_000 - half_width, abs=3) and high == pytest.approx(500_000 + half_width, abs=3)
    assert order_statistic_ci(values, 99) == pytest.approx([990_000 - 195, 990_000 + 195], abs=3)


def test_wilson_interval_matches_the_textbook():
    # 8 of 10: Wilson 95% interval (0.490, 0.943), e.g. Newcombe (1998) table I
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize(
    "p, df, expected",
    [
        (0.975, 1, 12.706204736),  # published t tables (and scipy.stats.t.ppf) to nine digits
        (0.975, 2, 4.302652730),
        (0.975, 9, 2.262157163),
        (0.975, 30, 2.042272456),
        (0.995, 5, 4.032142984),
        (0.975, 2.5, 3.574654842),  # a Welch-Satterthwaite df need not be whole
        (0.025, 9, -2.262157163),
        (0.5, 4, 0.0),
    ],
)
def test_t_quantiles_match_the_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-9)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)


def test_a_t_quantile_outside_its_domain_is_refused():
    for p, df in ((0.0, 5), (1.0, 5), (0.9, 0)):
        with pytest.raises(ValueError, match="t_quantile"):
            t_quantile(p, df)
