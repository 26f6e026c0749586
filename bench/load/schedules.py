"""When requests are sent: closed-loop concurrency, or open-loop arrivals computed up front.

Open-loop arrivals are a sequence of intended send offsets from the stage start, drawn from a
generator seeded by (seed, stage index), so a stage's schedule never depends on how fast the
server answered. Inter-arrival gaps:

    constant  1 / rate
    poisson   exponential with mean 1 / rate                      (coefficient of variation 1)
    gamma     gamma with shape k and mean 1 / rate                (CV = 1 / sqrt(k); k = 1 is Poisson)

Smaller k means burstier traffic, as vLLM's `--burstiness`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.spec import Arrival


@dataclass(frozen=True)
class ClosedLoop:
    """N workers, each sending its next request when its last one ends."""

    concurrency: int

    def label(self) -> str:
        return f"concurrency {self.concurrency}"


@dataclass(frozen=True)
class OpenLoop:
    """Requests sent at intended times regardless of answers; optionally capped in flight."""

    rate: float  # requests per second
    arrival: Arrival = "poisson"
    burstiness: float = 1.0  # gamma shape k
    max_concurrency: int | None = None

    def label(self) -> str:
        shape = f"gamma k={self.burstiness:g}" if self.arrival == "gamma" else self.arrival
        cap = f", max {self.max_concurrency} in flight" if self.max_concurrency else ""
        return f"{self.rate:.3g} req/s {shape}{cap}"


Schedule = ClosedLoop | OpenLoop


def interarrival_gaps(schedule: OpenLoop, count: int, seed: int, stage: int) -> list[float]:
    """count gaps in seconds; the first request goes at the stage start (gap 0)."""
    if schedule.rate <= 0:
        raise ValueError("rate must be positive")
    rng = random.Random(f"arrivals:{seed}:{stage}")
    mean = 1.0 / schedule.rate
    if schedule.arrival == "constant":
        draw = lambda: mean  # noqa: E731
    elif schedule.arrival == "poisson":
        draw = lambda: rng.expovariate(schedule.rate)  # noqa: E731
    elif schedule.arrival == "gamma":
        if schedule.burstiness <= 0:
            raise ValueError("burstiness (gamma shape) must be positive")
        shape = schedule.burstiness
        draw = lambda: rng.gammavariate(shape, mean / shape)  # noqa: E731
    else:
        raise ValueError(f"unknown arrival {schedule.arrival!r}")
    return [0.0] + [draw() for _ in range(count - 1)] if count > 0 else []
