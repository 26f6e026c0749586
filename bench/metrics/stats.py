"""Descriptive statistics and intervals, vectorised with numpy (no I/O).

Percentiles interpolate linearly between closest ranks: for n sorted values and q in [0, 100], the
position is (n - 1) * q / 100 and the value v[lo] + (v[hi] - v[lo]) * fraction (numpy's 'linear'
method). Only the ranks needed are put in place (np.partition), so no full sort is made. std is the
population standard deviation (ddof = 0).

Intervals (95 %):
- percentiles: the percentile bootstrap, BOOTSTRAP_RESAMPLES resamples drawn from a Mersenne Twister
  seeded like Python's `random.Random(seed)` (the same draws as `random.choices`), so a summary is
  reproducible. Above BOOTSTRAP_MAX_N values the bootstrap is replaced by its large-sample limit, the
  distribution-free order-statistic interval: the q-th quantile lies between the order statistics of
  rank n*q/100 -/+ z * sqrt(n * q/100 * (1 - q/100)) (binomial normal approximation), which costs one
  partition instead of a thousand resamples of a million values.
- proportions: the Wilson score interval.
- means of a few values (a stage's throughput slices): Student's t on the log scale (mean_t_interval).

t_quantile gives Student's t quantiles (for bench check's interval of a ratio of means) from the regularized
incomplete beta function, evaluated by its continued fraction (modified Lentz), and bisection: no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from bench.summary import Stats

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_MAX_N = 20_000
BOOTSTRAP_CHUNK_VALUES = 2_000_000  # resamples are drawn this many values at a time
Z_95 = 1.959963984540054


def as_array(values: Iterable[float] | np.ndarray) -> np.ndarray:
    return values.astype(np.float64, copy=False) if isinstance(values, np.ndarray) else np.fromiter(values, float)


def _ranks(n: int, q: float) -> tuple[int, int, float]:
    position = (n - 1) * q / 100.0
    lower = math.floor(position)
    return lower, min(lower + 1, n - 1), position - lower


def _interpolate(low: float, high: float, fraction: float) -> float:
    # a rank that falls on a value is that value, and equal neighbours (two infinite values included) are
    # themselves: never inf * 0 or inf - inf = nan (a failed request counts as infinitely late)
    return low if fraction == 0 or low == high else low + (high - low) * fraction


def percentiles(values: np.ndarray, qs: Iterable[float]) -> list[float]:
    """Linear-interpolation percentiles of unsorted values, each computed from its two closest ranks."""
    qs = list(qs)
    n = len(values)
    if n == 0:
        raise ValueError("percentile of no values")
    ranks = [_ranks(n, q) for q in qs]
    kth = sorted({r for lo, hi, _ in ranks for r in (lo, hi)})
    placed = np.partition(values, kth) if n > 1 else values
    return [_interpolate(float(placed[lo]), float(placed[hi]), f) for lo, hi, f in ranks]


def percentile(values: Iterable[float] | np.ndarray, q: float) -> float:
    return percentiles(as_array(values), [q])[0]


def percentile_key(q: float) -> str:
    return f"p{q:g}"


def describe(values: Iterable[float] | np.ndarray) -> Stats:
    """n, mean, std, min, max and the standard percentiles; None where there are no values."""
    data = as_array(values)
    n = len(data)
    if n == 0:
        return Stats()
    mean = float(data.mean())
    p50, p90, p95, p99, p999 = percentiles(data, PERCENTILES)
    return Stats(
        n=n,
        mean=mean,
        std=float(np.sqrt(np.mean((data - mean) ** 2))),
        min=float(data.min()),
        max=float(data.max()),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        p99_9=p999,
    )


def _python_seeded_uniforms(seed: int) -> np.random.RandomState:
    """A Mersenne Twister in the state `random.Random(seed)` starts from (init_by_array of the seed's
    32-bit words), whose random_sample() yields the same doubles as random.random()."""
    words = []
    value = abs(seed)
    while True:
        words.append(value & 0xFFFFFFFF)
        value >>= 32
        if not value:
            break
    return np.random.RandomState(words)


def bootstrap_percentile_ci(values: np.ndarray, q: float, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """95 % interval of the q-th percentile; None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    tail = (1 - level) / 2 * 100
    if n > BOOTSTRAP_MAX_N:
        return order_statistic_ci(values, q, level)
    lo, hi, fraction = _ranks(n, q)
    rng = _python_seeded_uniforms(seed)
    rows = max(1, BOOTSTRAP_CHUNK_VALUES // n)
    estimates = np.empty(BOOTSTRAP_RESAMPLES)
    done = 0
    while done < BOOTSTRAP_RESAMPLES:
        take = min(rows, BOOTSTRAP_RESAMPLES - done)
        picks = values[np.floor(rng.random_sample((take, n)) * n).astype(np.int64)]
        placed = np.partition(picks, sorted({lo, hi}), axis=1)
        low, high = placed[:, lo], placed[:, hi]
        estimates[done : done + take] = np.where(low == high, low, low + (high - low) * fraction)
        done += take
    return percentiles(estimates, [tail, 100 - tail])


def order_statistic_ci(values: np.ndarray, q: float, level: float = 0.95) -> list[float] | None:
    """Distribution-free interval of the q-th percentile from two order statistics (large n)."""
    n = len(values)
    if n < 2:
        return None
    z = Z_95 if level == 0.95 else _normal_quantile(1 - (1 - level) / 2)
    p = q / 100
    spread = z * math.sqrt(n * p * (1 - p))
    lower = min(n - 1, max(0, math.floor(n * p - spread) - 1))
    upper = min(n - 1, max(0, math.ceil(n * p + spread) - 1))
    placed = np.partition(values, sorted({lower, upper}))
    return [float(placed[lower]), float(placed[upper])]


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def _incomplete_beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (DLMF 8.17.22), evaluated by the modified Lentz method."""
    tiny = 1e-300

    def floor(value: float) -> float:
        return value if abs(value) > tiny else tiny

    c, d = 1.0, 1.0 / floor(1.0 - (a + b) * x / (a + 1.0))
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # the even term d_2m
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),  # the odd term d_2m+1
        ):
            d = 1.0 / floor(1.0 + numerator * d)
            c = floor(1.0 + numerator / c)
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges quickly here; elsewhere by the symmetry I_x = 1 - I_1-x
        return front * _incomplete_beta_fraction(a, b, x) / a
    return 1.0 - front * _incomplete_beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function with df (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (0 < p < 1), by bisection of t_cdf to 1e-10."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    while high - low > 1e-10 * max(1.0, high):
        middle = (low + high) / 2.0
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def mean_t_interval(values: Iterable[float] | np.ndarray, level: float = 0.95) -> list[float] | None:
    """Student's t interval of the mean, on the log scale: mean x exp(-/+ t(level, n - 1) x s / (sqrt(n) x mean))
    (the delta method; never below 0 for values that are not), for small samples such as a stage's ten
    throughput slices, where the percentile bootstrap of a mean is too narrow: over 2,000 samples of a gamma
    distribution (shape 20) it covered the true mean 90.7 % of the time at ten values and 84.5 % at five, for
    95 % asked; this interval 95.5 % and 95.7 %. None for fewer than 2 values; a mean of 0 or below gets the
    linear t interval."""
    data = as_array(values)
    n = len(data)
    if n < 2:
        return None
    mean, spread = float(np.mean(data)), float(np.std(data, ddof=1)) / math.sqrt(n)
    t = t_quantile(1 - (1 - level) / 2, n - 1)
    if mean <= 0:
        return [mean - t * spread, mean + t * spread]
    half = t * spread / mean
    return [mean * math.exp(-half), mean * math.exp(half)]


def wilson_interval(successes: int, n: int, z: float = Z_95) -> list[float] | None:
    """The Wilson score interval [low, high] for a binomial proportion; None for n = 0."""
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, center - half), min(1.0, center + half)]
