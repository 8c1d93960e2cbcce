"""The pure figures of the morning reports (mes.reports.morning_rules), worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mes.reports import morning_rules as r

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_days_follow_the_fab_calendar_across_a_clock_change():
    berlin = ZoneInfo("Europe/Berlin")
    found = r.days(date(2026, 3, 28), date(2026, 3, 30), berlin, max_days=5)
    lengths = [(d.end - d.start).total_seconds() / 3600 for d in found]
    assert lengths == [24, 23, 24]  # summer time starts on 29 March
    assert found[0].start == datetime(2026, 3, 27, 23, tzinfo=UTC)


def test_days_refuse_reversed_long_and_far_ranges():
    with pytest.raises(r.InvalidRange) as reversed_:
        r.days(date(2026, 1, 2), date(2026, 1, 1), UTC, max_days=5)
    assert not reversed_.value.too_large
    with pytest.raises(r.InvalidRange) as long:
        r.days(date(2026, 1, 1), date(2026, 1, 6), UTC, max_days=5)
    assert long.value.too_large
    with pytest.raises(r.InvalidRange):
        r.days(date(9999, 12, 31), date(9999, 12, 31), UTC, max_days=5)


def test_pareto_orders_by_wafers_and_runs_the_total():
    rows = r.pareto([("A", 1), ("B", 5), ("A", 2), ("C", 2)])
    assert [(x.key, x.count, x.wafers, x.share_pct, x.cumulative_pct) for x in rows] == [
        ("B", 1, 5, 50.0, 50.0),
        ("A", 2, 3, 30.0, 80.0),
        ("C", 1, 2, 20.0, 100.0),
    ]
    assert r.pareto([]) == []


def test_moves_and_turns_per_area_and_day():
    calendar = r.days(date(2026, 3, 2), date(2026, 3, 3), UTC, max_days=5)
    areas = {(1, 10): "WET", (1, 20): "METRO"}
    moves = [
        r.StepMoves(1, 10, 0, 1, 2),  # day 1: a lot of 2 wafers out of step 10 (WET)
        r.StepMoves(1, 10, 1, 1, 2),
        r.StepMoves(1, 20, 1, 1, 1),  # day 2: one wafer out of 20 (METRO)
        r.StepMoves(1, 99, 1, 3, 9),  # a step no tool group of the fab maps to an area
        r.StepMoves(2, 10, 0, 5, 50),  # another fab
    ]
    lot7 = r.Snapshot(7, "P", 10, "Waiting", 2, 1)
    starts = [
        [lot7, r.Snapshot(8, "P", 10, "Completed", 2, 1)],  # a finished lot is no WIP
        [lot7._replace(step_id=20, state="OnHold"), r.Snapshot(9, "P", 10, "InTransit", 3, 1)],
    ]
    rows = r.moves_and_turns(moves, starts, areas, calendar, frozenset({1}))
    assert [
        (x.area, x.day.day, x.lot_moves, x.wafer_moves, x.wip_wafers, x.turns) for x in rows
    ] == [
        ("(no area)", 3, 3, 9, 0, None),
        ("METRO", 3, 1, 1, 2, 0.5),  # lot 7 (held: still WIP) waited at 20 when day 2 began
        ("WET", 2, 1, 2, 2, 1.0),
        ("WET", 3, 1, 2, 0, None),
    ]
    assert r.moves_and_turns(moves, starts, areas, calendar, frozenset({3})) == []


def test_wip_and_cycle_time_per_product_and_step():
    steps = {10: r.StepInfo(10, "CLEAN"), 20: r.StepInfo(20, "THK")}
    at_end = [
        r.Snapshot(1, "P", 10, "Waiting", 3, 1),
        r.Snapshot(2, "P", 10, "OnHold", 2, 1),
        r.Snapshot(3, "Q", 20, "Completed", 2, 1),
    ]
    cycles = [r.StepCycle("P", 20, 3, 3 * 3600 + 5400, 2)]  # one arrival unknown
    completed = [("P", h(0), h(36)), ("P", h(0), h(12))]
    rows, products = r.wip_and_cycle_time(at_end, cycles, completed, steps, None)
    assert [
        (x.product, x.sequence, x.wip_lots, x.wip_wafers, x.track_outs, x.mean_cycle_time_h)
        for x in rows
    ] == [("P", 10, 2, 5, 0, None), ("P", 20, 0, 0, 3, 2.25)]
    assert [(p.product, p.completed_lots, p.mean_cycle_time_d, p.wip_lots, p.wip_wafers)
            for p in products] == [("P", 2, 1.0, 2, 5)]  # fmt: skip


def test_holds_by_code_with_ageing_and_escalation():
    holds = [
        r.Hold("L1", "QUALITY", "CLEAN", h(0), h(2)),  # 2 h, released
        r.Hold("L2", "QUALITY", "CLEAN", h(10), None),  # open, 14 h at the report's instant
        r.Hold("L3", "ENG", None, h(-100), None),  # placed before the range: open, 124 h
        r.Hold("L4", "ENG", None, h(1), h(30)),  # released after the instant: open, 23 h
    ]
    rows, escalated = r.hold_pareto(holds, h(0), h(48), h(24), escalate_after_h=20)
    assert [(x.hold_code, x.placed, x.hold_hours, x.share_pct, x.open) for x in rows] == [
        ("ENG", 1, 23.0, 58.97, 2),
        ("QUALITY", 2, 16.0, 41.03, 1),
    ]
    assert rows[0].ageing == {"< 4 h": 0, "4-24 h": 1, "1-3 d": 0, "> 3 d": 1}
    assert [(e.lot, e.age_h) for e in escalated] == [("L3", 124.0), ("L4", 23.0)]


def test_on_time_delivery_per_product_and_priority():
    rows = r.on_time_delivery(
        [
            r.Completion("P", "hot", h(10), h(12)),
            r.Completion("P", "hot", h(14), h(12)),
            r.Completion("P", "normal", h(20), None),
        ]
    )
    assert [
        (x.priority_class, x.completed, x.with_due, x.on_time, x.on_time_pct, x.mean_lateness_h)
        for x in rows
    ] == [("*", 3, 2, 1, 50.0, 2.0), ("hot", 2, 2, 1, 50.0, 2.0), ("normal", 1, 0, 0, None, None)]
