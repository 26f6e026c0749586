"""When requests are sent: closed-loop concurrency, or open-loop arrivals computed up front.

Open-loop arrivals are a sequence of intended send offsets from the stage start, drawn from a
generator seeded by (seed, stage index), so a stage's schedule never depends on how fast the
server answered. Inter-arrival gaps:

    constant  1 / rate
    poisson   exponential with mean 1 / rate                      (coefficient of variation 1)
    gamma     gamma with shape k and mean 1 / rate                (CV = 1 / sqrt(k); k = 1 is Poisson)

Smaller k means burstier traffic, as vLLM's `--burstiness`.

A ramp raises the load linearly over `ramp_s` seconds from `ramp_from` to the target. Closed loop: the
first `ramp_from` streams start at once, the others one by one at even steps of the ramp. Open loop:
the rate r(t) = r0 + (r1 - r0) t / T until T, then r1; arrivals are drawn at unit rate in "operational
time" u and mapped through the inverse of the integrated rate Lambda(t) = r0 t + (r1 - r0) t^2 / (2T)
(then Lambda(T) + r1 (t - T)), so the ramp keeps the chosen arrival process's shape.

A trace gives its own intended offsets (bench.load.trace).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from bench.spec import Arrival


@dataclass(frozen=True)
class ClosedLoop:
    """N workers, each sending its next request when its last one ends."""

    concurrency: int
    ramp_from: int | None = None  # streams at the ramp's start
    ramp_s: float = 0.0

    def label(self) -> str:
        ramp = f", ramped from {self.ramp_from} over {self.ramp_s:g} s" if self.ramp_s else ""
        return f"concurrency {self.concurrency}{ramp}"

    def start_offsets_s(self) -> list[float]:
        """When each worker starts, from the stage start."""
        first = min(self.concurrency, self.ramp_from or 1) if self.ramp_s else self.concurrency
        later = self.concurrency - first
        return [0.0] * first + [self.ramp_s * (k + 1) / later for k in range(later)]

    def level_at(self, t_s: float) -> float | None:
        """Streams running at t, during the ramp; None after it (or with no ramp)."""
        if not self.ramp_s or t_s >= self.ramp_s:
            return None
        return float(sum(1 for start in self.start_offsets_s() if start <= t_s))


@dataclass(frozen=True)
class OpenLoop:
    """Requests sent at intended times regardless of answers; optionally capped in flight."""

    rate: float  # requests per second
    arrival: Arrival = "poisson"
    burstiness: float = 1.0  # gamma shape k
    max_concurrency: int | None = None
    ramp_from: float | None = None  # the rate at the ramp's start
    ramp_s: float = 0.0

    def label(self) -> str:
        shape = f"gamma k={self.burstiness:g}" if self.arrival == "gamma" else self.arrival
        cap = f", max {self.max_concurrency} in flight" if self.max_concurrency else ""
        ramp = f", ramped from {self.ramp_from or 0:.3g} over {self.ramp_s:g} s" if self.ramp_s else ""
        return f"{self.rate:.3g} req/s {shape}{cap}{ramp}"

    def level_at(self, t_s: float) -> float | None:
        """The arrival rate at t, during the ramp; None after it (or with no ramp)."""
        if not self.ramp_s or t_s >= self.ramp_s:
            return None
        r0 = self.ramp_from or 0.0
        return r0 + (self.rate - r0) * t_s / self.ramp_s


@dataclass(frozen=True)
class TraceArrivals:
    """Requests at the offsets a trace gives, seconds from the stage start; optionally capped in flight."""

    offsets_s: tuple[float, ...]
    max_concurrency: int | None = None
    source: str = "trace"

    def label(self) -> str:
        span = self.offsets_s[-1] if self.offsets_s else 0.0
        cap = f", max {self.max_concurrency} in flight" if self.max_concurrency else ""
        return f"trace {self.source}: {len(self.offsets_s)} requests over {span:.1f} s{cap}"

    def level_at(self, t_s: float) -> float | None:
        return None


Schedule = ClosedLoop | OpenLoop | TraceArrivals


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


def _unit_gaps(schedule: OpenLoop, count: int, rng: random.Random) -> list[float]:
    """Gaps of the arrival process at rate 1 (its shape without its rate)."""
    if schedule.arrival == "constant":
        return [1.0] * count
    if schedule.arrival == "poisson":
        return [rng.expovariate(1.0) for _ in range(count)]
    return [rng.gammavariate(schedule.burstiness, 1.0 / schedule.burstiness) for _ in range(count)]


def _ramped_time(schedule: OpenLoop, u: float) -> float:
    """The time at which the ramped rate's integral reaches u."""
    r0, r1, ramp = schedule.ramp_from or 0.0, schedule.rate, schedule.ramp_s
    during = r0 * ramp + (r1 - r0) * ramp / 2  # Lambda(T)
    if u >= during:
        return ramp + (u - during) / r1
    slope = (r1 - r0) / ramp
    if abs(slope) < 1e-12:
        return u / r0
    return (-r0 + math.sqrt(r0 * r0 + 2 * slope * u)) / slope


def intended_offsets(schedule: OpenLoop | TraceArrivals, count: int, seed: int, stage: int) -> list[float]:
    """Intended send times in seconds from the stage start, the first at 0 (a ramp's first at its start)."""
    if isinstance(schedule, TraceArrivals):
        return list(schedule.offsets_s[:count])
    if not schedule.ramp_s:
        offsets, t = [], 0.0
        for gap in interarrival_gaps(schedule, count, seed, stage):
            t += gap
            offsets.append(t)
        return offsets
    rng = random.Random(f"arrivals:{seed}:{stage}")
    u, offsets = 0.0, []
    for gap in [0.0] + _unit_gaps(schedule, count - 1, rng) if count > 0 else []:
        u += gap
        offsets.append(_ramped_time(schedule, u))
    return offsets
