"""The one time source of a simulated fab.

Simulated time runs ``speed`` times faster than the wall clock (speed 60: one simulated minute
per second). Every duration in the simulators is in simulated seconds and every timestamp they
publish comes from here, so a whole fab keeps one consistent time line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class SimClock:
    """Simulated seconds since ``start``, scaled from a monotonic wall clock."""

    def __init__(
        self,
        speed: float = 1.0,
        *,
        start: datetime | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._speed = speed
        self._monotonic = monotonic
        self._origin_real = monotonic()
        self._origin_sim = 0.0
        self.start = (start or datetime.now(UTC)).astimezone(UTC)

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        # Rebase so that simulated time stays continuous across a speed change.
        self._origin_sim = self.now()
        self._origin_real = self._monotonic()
        self._speed = speed

    def now(self) -> float:
        """Simulated seconds since the clock was made."""
        return self._origin_sim + (self._monotonic() - self._origin_real) * self._speed

    def datetime(self, at: float | None = None) -> datetime:
        """The simulated wall time of ``at`` (default: now)."""
        return self.start + timedelta(seconds=self.now() if at is None else at)

    def real_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self._speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self._speed)


class ManualClock(SimClock):
    """A clock that moves only when told to (unit tests of the pure models)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._t = 0.0
        super().__init__(1.0, start=start, monotonic=lambda: self._t)

    def advance(self, sim_seconds: float) -> float:
        if sim_seconds < 0:
            raise ValueError("time does not run backwards")
        self._t += sim_seconds
        return self.now()
