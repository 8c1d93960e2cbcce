"""Release planning rules: which lots a start plan releases now. Plain Python, no database.

A plan releases lots on a fixed grid: slot ``anchor_sequence`` is due at ``anchor_at``, and each
next slot one interval (the inverse of the rate) later. The releaser asks, given the last
sequence released and the clock, which slots to release now:

* every slot due and not yet released, oldest first;
* but never more than ``catch_up_max`` at once: after downtime (the service was stopped, the
  plan was inactive, the line was full) the older missed slots are skipped, not released in a
  burst that would flood the first steps of the line;
* and, with a WIP cap (CONWIP), only as many as leave the plan's lots in the line at or below
  ``max_wip``.

The priority class of each lot is drawn from the plan's weights by a random stream seeded with
(plan seed, plan code, sequence): the same slot always gets the same class, whichever process
releases it and however often it is asked.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from mes.errors import InvalidInput
from mes.lots.states import PriorityClass

SECONDS_PER = {"hour": 3600.0, "day": 86400.0}
# A plan faster than this is a typo, not a fab (and would let the loop spin).
MIN_INTERVAL_S = 1.0
PRIORITY_CLASSES = tuple(c.value for c in PriorityClass)


class RatePer(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"


class DueRule(enum.StrEnum):
    # due = release + value x raw process time of the route (a cycle-time target, "x-factor")
    X_FACTOR = "x_factor"
    # due = release + value days
    FIXED_DAYS = "fixed_days"


def interval_s(rate: float, per: RatePer) -> float:
    """Seconds between two releases of a plan releasing ``rate`` lots per hour or day."""
    if not math.isfinite(rate) or rate <= 0:
        raise InvalidInput("the release rate must be a positive number", code="start_plan.rate")
    seconds = SECONDS_PER[RatePer(per).value] / rate
    if seconds < MIN_INTERVAL_S:
        raise InvalidInput(
            f"a rate of {rate:g} lots per {per} releases more than one lot per second",
            code="start_plan.rate",
        )
    return seconds


def check_priority_mix(mix: Mapping[str, float]) -> dict[str, float]:
    """The weights by priority class, validated: known classes, no negative weight, some > 0."""
    unknown = sorted(set(mix) - set(PRIORITY_CLASSES))
    if unknown:
        raise InvalidInput(
            f"unknown priority classes {unknown} (known: {list(PRIORITY_CLASSES)})",
            code="start_plan.priority_mix",
        )
    if any(not math.isfinite(w) or w < 0 for w in mix.values()):
        raise InvalidInput("priority weights must not be negative", code="start_plan.priority_mix")
    if not any(w > 0 for w in mix.values()):
        raise InvalidInput(
            "at least one priority class needs a positive weight", code="start_plan.priority_mix"
        )
    return {name: float(mix[name]) for name in PRIORITY_CLASSES if name in mix}


def check_due_rule(rule: DueRule, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput("the due-date value must be positive", code="start_plan.due_rule")
    if rule is DueRule.X_FACTOR and value < 1:
        raise InvalidInput(
            "an x-factor below 1 is a due date before the lot could possibly finish",
            code="start_plan.due_rule",
        )


@dataclass(frozen=True)
class Schedule:
    """When a plan's slots fall due, and how many it may release at once."""

    anchor_at: datetime
    anchor_sequence: int  # the sequence number due at ``anchor_at``
    interval_s: float
    catch_up_max: int = 1
    max_wip: int | None = None

    def slot_at(self, sequence: int) -> datetime:
        return self.anchor_at + timedelta(
            seconds=(sequence - self.anchor_sequence) * self.interval_s
        )

    def newest_due(self, now: datetime) -> int:
        """The highest sequence due at ``now`` (anchor_sequence - 1 before the anchor)."""
        elapsed = (now - self.anchor_at).total_seconds()
        if elapsed < 0:
            return self.anchor_sequence - 1
        # A hair of tolerance: a slot computed as 59.999999 s after the anchor is due at 60 s.
        return self.anchor_sequence + math.floor(elapsed / self.interval_s + 1e-9)


@dataclass(frozen=True)
class ReleaseSlots:
    """What to release now."""

    sequences: tuple[int, ...]  # to release, oldest first
    skipped: int  # due slots given up for good (older than the catch-up cap allows)
    held_back: int  # due slots kept waiting for room under the WIP cap


def slots_to_release(
    schedule: Schedule, last_sequence: int | None, now: datetime, wip: int
) -> ReleaseSlots:
    """The slots to release at ``now`` after ``last_sequence`` (None: nothing released yet),
    with ``wip`` of the plan's lots still in the line."""
    after = schedule.anchor_sequence - 1 if last_sequence is None else last_sequence
    # Slots before the anchor were planned under an older rate: never due any more.
    after = max(after, schedule.anchor_sequence - 1)
    newest = schedule.newest_due(now)
    if newest <= after:
        return ReleaseSlots((), 0, 0)
    first = max(after + 1, newest - schedule.catch_up_max + 1)
    skipped = first - (after + 1)
    count = newest - first + 1
    held_back = 0
    if schedule.max_wip is not None:
        room = max(0, schedule.max_wip - wip)
        held_back = max(0, count - room)
        count -= held_back
    return ReleaseSlots(tuple(range(first, first + count)), skipped, held_back)


def reanchor(
    now: datetime,
    interval: float,
    *,
    starts_at: datetime | None,
    last_sequence: int | None,
    last_slot_at: datetime | None,
) -> tuple[datetime, int]:
    """(anchor_at, anchor_sequence) of a plan whose rate or start changed: the next sequence
    falls one new interval after the last release (not before ``now``, nor before the plan's
    start); a plan that never released starts at ``starts_at`` (default: now)."""
    next_sequence = 1 if last_sequence is None else last_sequence + 1
    if last_slot_at is None:
        return (starts_at or now), next_sequence
    at = max(last_slot_at + timedelta(seconds=interval), now)
    if starts_at is not None:
        at = max(at, starts_at)
    return at, next_sequence


def priority_for(mix: Mapping[str, float], *, seed: int, plan: str, sequence: int) -> str:
    """The priority class of slot ``sequence``, drawn from the weights ``mix``."""
    names = [n for n in PRIORITY_CLASSES if mix.get(n, 0) > 0]
    rng = random.Random(f"{seed}:{plan}:{sequence}")
    return rng.choices(names, weights=[mix[n] for n in names])[0]


def due_at(released_at: datetime, rule: DueRule, value: float, raw_process_s: float) -> datetime:
    """The due date of a lot released at ``released_at``."""
    if rule is DueRule.X_FACTOR:
        return released_at + timedelta(seconds=value * raw_process_s)
    return released_at + timedelta(days=value)


def raw_process_s(process_times_s: list[int], sampling_rates: list[float] | None = None) -> float:
    """Raw process time of a route: its steps' process times, a sampled step counted by its
    sampling rate (the time an average lot spends being processed)."""
    rates = sampling_rates or [1.0] * len(process_times_s)
    return float(sum(t * r for t, r in zip(process_times_s, rates, strict=True)))
