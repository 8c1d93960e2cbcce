"""Random number streams: one per source (a lot, a tool's breakdowns, a tool's PMs), each
seeded from the run's seed and the source's name. A lot draws its process times, transports,
sampling and rework from its own stream in the order it meets its steps, and a tool its
failures from its own, so two rule sets compared with the same seed see the same releases,
the same breakdowns and the same lot-level draws (common random numbers), whatever order the
dispatcher runs things in.
"""

from __future__ import annotations

import random


def stream(seed: int, *source: object) -> random.Random:
    # A string seed is hashed with SHA-512 by ``random``: stable across runs and platforms,
    # unlike ``hash()``.
    return random.Random("/".join(str(s) for s in (seed, *source)))


def draw(rng: random.Random, dist: str, mean: float, spread: float = 0.0) -> float:
    """One sample of an SMT2020 distribution. ``uniform`` is ``mean ± spread/2`` (the reading
    of open simulators of this testbed; AutoSched's own reading is not published)."""
    if dist == "exponential":
        return rng.expovariate(1.0 / mean) if mean > 0 else 0.0
    if dist == "uniform" and spread > 0:
        # random.uniform(a, b) written out (a + (b - a) * random()): the same floats, one
        # Python call less on the hottest draw (every process and transport time).
        low = mean - spread / 2
        return max(0.0, low + (mean + spread / 2 - low) * rng.random())
    return mean
