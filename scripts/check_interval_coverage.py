"""How often does bench check's interval call two samples of one distribution different? Draws pairs of
independent samples of n values from one gamma distribution (shape 20: like the throughput of ten time slices,
or a stage's per-request latencies), computes bench.check.relative_change_interval of each pair as the gate
does, and counts the pairs whose 95 % interval excludes no change: a nominal 5 %. Prints that rate, with its
95 % Wilson interval, per n and statistic. With --rho the values are serially correlated (an AR(1) series of
the gamma draws, x[i] = rho * x[i-1] + (1 - rho) * draw[i], after a burn-in of 50), as successive requests
or time slices of a run can be.

    .venv/bin/python scripts/check_interval_coverage.py                      # n = 3, 5, 10, 24, 50, 200
    .venv/bin/python scripts/check_interval_coverage.py --n 10 --trials 2000 --statistics mean
    .venv/bin/python scripts/check_interval_coverage.py --rho 0.5

A regression also needs the change to pass its tolerance (output_tok_s -10 % by default), so this is how often
noise is "clear", not how often the gate fails. Not a test: a few seconds per row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.check import relative_change_interval  # noqa: E402
from bench.metrics.stats import wilson_interval  # noqa: E402

BURN_IN = 50  # AR(1) draws dropped before a sample, so that it starts in its steady state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="3,5,10,24,50,200", help="sample sizes, comma-separated")
    p.add_argument("--statistics", default="mean,p50", help="mean, p50, p90, ... comma-separated")
    p.add_argument("--trials", type=int, default=400, help="pairs per row")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval")
    p.add_argument("--rho", type=float, default=0.0, help="serial correlation of the values (AR(1)), 0 to < 1")
    a = p.parse_args()
    if not 0 <= a.rho < 1:
        p.error(f"--rho must be at least 0 and below 1, got {a.rho}")

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        draws = rng.gamma(20.0, 5.0, n + BURN_IN)
        values = np.empty_like(draws)
        values[0] = draws[0]
        for i in range(1, len(draws)):
            values[i] = a.rho * values[i - 1] + (1 - a.rho) * draws[i]
        return values[BURN_IN:]

    print(f"values: gamma(20, 5){f', AR(1) with rho {a.rho:g}' if a.rho else ''}")
    print("| n | statistic | pairs called different (nominal 5 %) | 95 % interval |")
    print("| --- | --- | --- | --- |")
    for name in a.statistics.split(","):
        for n in (int(v) for v in a.n.split(",")):
            rng = np.random.default_rng(3)
            hits = 0
            for _ in range(a.trials):
                base, new = sample(rng, n), sample(rng, n)
                interval = relative_change_interval(base, new, name, a.resamples, int(rng.integers(1 << 30)))
                hits += interval is not None and (interval[0] > 0 or interval[1] < 0)
            low, high = wilson_interval(hits, a.trials)
            print(f"| {n} | {name} | {hits / a.trials:.1%} | {low:.1%}-{high:.1%} |", flush=True)


if __name__ == "__main__":
    main()
