"""Release planning rules (mes.planning.rules): the grid, the catch-up cap, the WIP cap, the
priority mix and due dates, without a database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from mes.errors import InvalidInput
from mes.planning import rules
from mes.planning.rules import DueRule, RatePer, Schedule, slots_to_release

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def every(seconds: float, **kwargs) -> Schedule:
    return Schedule(anchor_at=T0, anchor_sequence=1, interval_s=seconds, **kwargs)


def test_rates_become_intervals() -> None:
    assert rules.interval_s(4, RatePer.HOUR) == 900
    assert rules.interval_s(48, RatePer.DAY) == 1800
    assert rules.interval_s(0.5, RatePer.DAY) == 172_800


@pytest.mark.parametrize(
    ("rate", "per"), [(0, RatePer.HOUR), (-1, RatePer.DAY), (float("nan"), RatePer.DAY)]
)
def test_a_rate_must_be_positive(rate: float, per: RatePer) -> None:
    with pytest.raises(InvalidInput) as caught:
        rules.interval_s(rate, per)
    assert caught.value.code == "start_plan.rate"


def test_a_rate_above_one_lot_per_second_is_refused() -> None:
    assert rules.interval_s(3600, RatePer.HOUR) == 1.0
    with pytest.raises(InvalidInput):
        rules.interval_s(3601, RatePer.HOUR)


def test_a_steady_clock_releases_one_lot_per_interval_in_order() -> None:
    schedule = every(600)
    released: list[int] = []
    last = None
    # Asked every 7 minutes for 3 hours: each slot once, none early, none missed.
    for minute in range(0, 181, 7):
        now = T0 + timedelta(minutes=minute)
        slots = slots_to_release(schedule, last, now, wip=0)
        for sequence in slots.sequences:
            assert schedule.slot_at(sequence) <= now
        released.extend(slots.sequences)
        last = released[-1] if released else None
        assert slots.skipped == 0
    # Slots at 0, 10, ..., 180 min are all due by minute 175 except the one at 180 min.
    assert released == list(range(1, 18 + 1))


def test_nothing_is_due_before_the_start() -> None:
    slots = slots_to_release(every(600), None, T0 - timedelta(seconds=1), wip=0)
    assert slots == rules.ReleaseSlots((), 0, 0)
    assert slots_to_release(every(600), None, T0, wip=0).sequences == (1,)


def test_catch_up_after_downtime_is_capped_and_the_rest_skipped() -> None:
    schedule = every(600, catch_up_max=3)
    # Released slot 2, then down for 5 hours: slots 3..32 are due.
    now = T0 + timedelta(hours=5, minutes=1)
    slots = slots_to_release(schedule, 2, now, wip=0)
    assert slots.sequences == (29, 30, 31)
    assert slots.skipped == 26
    # Back on the grid: the next call releases only what falls due after.
    assert slots_to_release(schedule, 31, now, wip=0).sequences == ()
    later = slots_to_release(schedule, 31, T0 + timedelta(hours=5, minutes=10), wip=0)
    assert later.sequences == (32,)
    assert later.skipped == 0


@pytest.mark.parametrize("cap", [1, 2, 5])
def test_no_burst_beyond_the_cap_whatever_the_gap(cap: int) -> None:
    schedule = every(60, catch_up_max=cap)
    for hours in (0.05, 1, 24, 24 * 30):
        slots = slots_to_release(schedule, 1, T0 + timedelta(hours=hours), wip=0)
        assert 1 <= len(slots.sequences) <= cap
        assert slots.sequences[-1] == schedule.newest_due(T0 + timedelta(hours=hours))


def test_the_wip_cap_holds_slots_back_until_lots_leave_the_line() -> None:
    schedule = every(60, catch_up_max=10, max_wip=5)
    now = T0 + timedelta(minutes=3)  # slots 1..4 due
    assert slots_to_release(schedule, None, now, wip=5) == rules.ReleaseSlots((), 0, 4)
    held = slots_to_release(schedule, None, now, wip=3)
    assert held.sequences == (1, 2)
    assert held.held_back == 2
    # Two lots later, the held slots go first (oldest first).
    assert slots_to_release(schedule, 2, now, wip=3).sequences == (3, 4)


def test_a_held_backlog_is_still_bounded_by_the_catch_up_cap() -> None:
    schedule = every(60, catch_up_max=2, max_wip=100)
    # The line was full for an hour; now there is room for everything.
    slots = slots_to_release(schedule, 1, T0 + timedelta(hours=1), wip=0)
    assert slots.sequences == (60, 61)
    assert slots.skipped == 58


def test_a_new_anchor_starts_the_grid_over() -> None:
    # Released up to 5 at one per 10 min; the rate doubles at T0+47min.
    now = T0 + timedelta(minutes=47)
    at, first = rules.reanchor(
        now, 300, starts_at=T0, last_sequence=5, last_slot_at=T0 + timedelta(minutes=40)
    )
    assert (at, first) == (T0 + timedelta(minutes=47), 6)  # 40 + 5 min is past: now
    schedule = Schedule(anchor_at=at, anchor_sequence=first, interval_s=300)
    assert slots_to_release(schedule, 5, now, wip=0).sequences == (6,)
    assert slots_to_release(schedule, 6, now + timedelta(minutes=4), wip=0).sequences == ()
    assert slots_to_release(schedule, 6, now + timedelta(minutes=5), wip=0).sequences == (7,)
    # A slower rate after a recent release: the next one falls one new interval after it.
    at, first = rules.reanchor(
        now, 3600, starts_at=T0, last_sequence=5, last_slot_at=T0 + timedelta(minutes=40)
    )
    assert (at, first) == (T0 + timedelta(minutes=100), 6)
    # Slots before the anchor are never due again.
    assert slots_to_release(Schedule(at, first, 3600), 2, at, wip=0).sequences == (6,)
    # A plan that never released starts at its start.
    assert rules.reanchor(now, 60, starts_at=None, last_sequence=None, last_slot_at=None) == (
        now,
        1,
    )


def test_the_priority_mix_follows_the_weights_with_a_seeded_draw() -> None:
    mix = rules.check_priority_mix({"normal": 80, "hot": 15, "super_hot": 5})
    draws = [rules.priority_for(mix, seed=7, plan="F1-A", sequence=n) for n in range(1, 4001)]
    shares = {k: v / len(draws) for k, v in Counter(draws).items()}
    assert shares["normal"] == pytest.approx(0.80, abs=0.03)
    assert shares["hot"] == pytest.approx(0.15, abs=0.02)
    assert shares["super_hot"] == pytest.approx(0.05, abs=0.015)
    # Reproducible per slot (any process, any time), different for another seed or plan.
    again = [rules.priority_for(mix, seed=7, plan="F1-A", sequence=n) for n in range(1, 4001)]
    assert again == draws
    assert [rules.priority_for(mix, seed=8, plan="F1-A", sequence=n) for n in range(1, 200)] != (
        draws[:199]
    )
    # A zero weight is never drawn.
    only = rules.check_priority_mix({"normal": 0, "hot": 1})
    assert {rules.priority_for(only, seed=0, plan="P", sequence=n) for n in range(50)} == {"hot"}


@pytest.mark.parametrize(
    "mix", [{"urgent": 1}, {"normal": -1, "hot": 2}, {"normal": 0}, {}, {"hot": float("inf")}]
)
def test_bad_priority_mixes_are_refused(mix: dict[str, float]) -> None:
    with pytest.raises(InvalidInput) as caught:
        rules.check_priority_mix(mix)
    assert caught.value.code == "start_plan.priority_mix"


def test_due_dates() -> None:
    raw = rules.raw_process_s([3600, 1800, 600], [1.0, 1.0, 0.5])
    assert raw == 5700
    assert rules.due_at(T0, DueRule.X_FACTOR, 2.5, raw) == T0 + timedelta(seconds=14_250)
    assert rules.due_at(T0, DueRule.FIXED_DAYS, 21, raw) == T0 + timedelta(days=21)
    rules.check_due_rule(DueRule.X_FACTOR, 1.0)
    with pytest.raises(InvalidInput):
        rules.check_due_rule(DueRule.X_FACTOR, 0.8)
    with pytest.raises(InvalidInput):
        rules.check_due_rule(DueRule.FIXED_DAYS, 0)
