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


def _event(lot: int, at: float, kind: str, step: int, after: int, **extra) -> r.Event:
    return r.Event(lot, h(at), kind, 1, step, after, extra.pop("state", "Waiting"), 2, **extra)


def test_replay_carries_the_arrival_time_and_counts_a_rework_as_an_arrival():
    initial = {7: r.LotState(h(-5), 10, "Waiting", 2, 1, h(-6))}
    events = [
        _event(7, 1, "TRACK_IN", 10, 10, state="Running"),
        _event(7, 2, "TRACK_OUT", 10, 20, wafers_processed=2, outcome="pass"),
        _event(7, 3, "HOLD", 20, 20, state="OnHold"),
        _event(7, 4, "TRACK_OUT", 20, 20, wafers_processed=2, outcome="rework"),
    ]
    states = r.replay(initial, events)[7]
    assert [s.entered_at for _, s in states] == [h(-6), h(2), h(2), h(4)]
    assert r.state_at(initial[7], states, h(2)).step_id == 20  # an event at the instant counts
    assert r.state_at(initial[7], states, h(0)).step_id == 10


def test_moves_and_turns_per_area_and_day():
    calendar = r.days(date(2026, 3, 2), date(2026, 3, 3), UTC, max_days=5)
    areas = {(1, 10): "WET", (1, 20): "METRO"}
    lives = [r.LotLife(7, "P", h(-10), None), r.LotLife(8, "P", h(30), None)]
    initial = {7: r.LotState(h(-5), 10, "Waiting", 2, 1, h(-6))}
    events = [
        _event(7, 2, "TRACK_OUT", 10, 20, wafers_processed=2, outcome="pass"),
        _event(8, 30, "START", 10, 10),
        _event(8, 31, "TRACK_OUT", 10, 20, wafers_processed=2, outcome="pass"),
        _event(7, 32, "TRACK_OUT", 20, 20, wafers_processed=1, outcome="pass"),  # partial
    ]
    replayed = r.replay(initial, events)
    rows = r.moves_and_turns(lives, initial, replayed, areas, calendar, None)
    assert [
        (x.area, x.day.day, x.lot_moves, x.wafer_moves, x.wip_wafers, x.turns) for x in rows
    ] == [
        ("METRO", 3, 1, 1, 2, 0.5),  # lot 7 waited at 20 when day 2 began
        ("WET", 2, 1, 2, 2, 1.0),  # lot 7 at 10 when day 1 began
        ("WET", 3, 1, 2, 0, None),  # lot 8 started during day 2
    ]
    # Another fab's scope sees none of it.
    assert r.moves_and_turns(lives, initial, replayed, areas, calendar, frozenset({2})) == []


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
