"""Random faults: when each kind strikes a tool, drawn from a seeded RNG.

Each kind is a Poisson process in simulated time with ``rate_per_hour`` occurrences per
simulated hour, on its own random stream (seed, tool id, kind), so the schedule of a tool is the
same on every run with the same seed, however often the caller looks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .process import seeded_rng

# What a random fault does (see fault_injection.FaultInjection._random_fault).
KINDS = (
    "alarm",  # a non-breaking alarm that needs acknowledging; cleared after a while
    "breakdown",  # job aborted, OutOfService + breaking alarm; repaired after a while
    "reject_download",  # the next recipe download is rejected (checksum or range)
    "slow_replies",  # method replies are delayed for a while
    "restart",  # the server restarts, state restored from its state file
    "offline",  # the operator takes the tool Offline for a while
    "online_local",  # the operator takes local control for a while
    "drop_connection",  # the network drops for a few seconds
    "chamber_down",  # cluster tools: a chamber goes down for a while
)


@dataclass(frozen=True)
class Occurrence:
    at: float  # simulated seconds
    kind: str
    rng: random.Random  # the kind's own stream for the fault's details


class FaultSchedule:
    def __init__(
        self,
        rate_per_hour: float,
        *,
        seed: int,
        tool_id: str,
        kinds: tuple[str, ...] = KINDS,
        start: float = 0.0,
    ) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        if rate_per_hour < 0:
            raise ValueError("fault rate must not be negative")
        self.rate_per_s = rate_per_hour / 3600.0
        self._rngs = {kind: seeded_rng(seed, tool_id, f"fault/{kind}") for kind in kinds}
        self._details = {kind: seeded_rng(seed, tool_id, f"fault/{kind}/details") for kind in kinds}
        self._next = {kind: start + self._gap(kind) for kind in kinds}

    def _gap(self, kind: str) -> float:
        if self.rate_per_s <= 0:
            return float("inf")
        return self._rngs[kind].expovariate(self.rate_per_s)

    def due(self, now: float) -> list[Occurrence]:
        """Every occurrence up to ``now`` not yet returned, oldest first."""
        out: list[Occurrence] = []
        while True:
            kind = min(self._next, key=lambda k: (self._next[k], k), default=None)
            if kind is None or self._next[kind] > now:
                return out
            out.append(Occurrence(self._next[kind], kind, self._details[kind]))
            self._next[kind] += self._gap(kind)
