"""The protocol's quality goals judged from pooled figures (``goals.judge``), on figures made
by hand just either side of each limit."""

from __future__ import annotations

from typing import Any

from mes.simulation import goals


def lot_type(name: str, priority: int, ct: float | None, on_time: float | None) -> dict[str, Any]:
    return {
        "lot_type": name,
        "priority": priority,
        "completed": 0 if ct is None else 100,
        "ct_mean_days": ct,
        "on_time_pct": on_time,
    }


def summary(cost: float | None, *types: dict[str, Any], trend: float = 0.0) -> dict[str, Any]:
    return {
        "weighted_cost": cost,
        "lot_types": list(types),
        "days": 730.0,
        "warmup_days": 365.0,
        "wip_mean": 3650.0,
        "wip_trend_lots_per_day": [trend, trend / 2],
    }


def verdicts(found: list[goals.Goal]) -> dict[str, bool | None]:
    return {g.name: g.met for g in found}


BASELINES = {
    "fifo": summary(
        100.0, lot_type("Lot_3", 10, 100.0, 10.0), lot_type("HotLot_3", 20, 40.0, 50.0)
    ),
    "cr": summary(90.0, lot_type("Lot_3", 10, 110.0, 12.0), lot_type("HotLot_3", 20, 38.0, 55.0)),
}


def test_a_set_just_inside_every_limit_meets_every_goal() -> None:
    good = summary(
        71.9,  # just over 20 % below CR's 90, the better baseline
        lot_type("Lot_3", 10, 89.9, 50.0),  # just under 0.9 x FIFO, 50 % on time
        lot_type("HotLot_3", 20, 40.0, 85.0),  # as slow as FIFO: not slower
        trend=0.49,  # 0.49 x 365 = 179 lots, under 5 % of 3,650
    )
    assert set(verdicts(goals.judge({**BASELINES, "good": good}, "good")).values()) == {True}


def test_a_set_just_outside_each_limit_misses_that_goal_alone() -> None:
    cases = {
        "weighted cost": {"weighted_cost": 72.1},
        "normal-lot cycle time": {"lot_types": [lot_type("Lot_3", 10, 90.1, 50.0)]},
        "on time, normal lots": {"lot_types": [lot_type("Lot_3", 10, 89.9, 49.9)]},
        "on time, hot and super-hot lots": {"lot_types": [lot_type("HotLot_3", 20, 40.0, 84.9)]},
        "no lot type slower than FIFO": {"lot_types": [lot_type("HotLot_3", 20, 40.1, 85.0)]},
        "WIP stable": {"wip_trend_lots_per_day": [0.0, -0.51]},
    }
    base = summary(71.9, lot_type("Lot_3", 10, 89.9, 50.0), lot_type("HotLot_3", 20, 40.0, 85.0))
    for missed, change in cases.items():
        changed = {**base, **change}
        if "lot_types" in change:  # the other type as in the good set
            name = change["lot_types"][0]["lot_type"]
            kept = [t for t in base["lot_types"] if t["lot_type"] != name]
            changed["lot_types"] = kept + change["lot_types"]
        found = verdicts(goals.judge({**BASELINES, "set": changed}, "set"))
        assert [name for name, met in found.items() if not met] == [missed], (missed, found)


def test_a_lot_type_the_set_completes_none_of_is_slower_than_fifo() -> None:
    starving = summary(
        71.9, lot_type("Lot_3", 10, 89.9, 50.0), lot_type("HotLot_3", 20, None, None)
    )
    found = goals.judge({**BASELINES, "set": starving}, "set")
    slower = next(g for g in found if g.name == "no lot type slower than FIFO")
    assert slower.met is False
    assert "HotLot_3 none done" in slower.measured


def test_a_goal_without_the_figures_to_judge_it_is_not_called_met() -> None:
    # A run too short for any lot released after the warm-up to complete, FIFO's alike.
    bare = summary(None, lot_type("Lot_3", 10, None, None))
    bare["wip_trend_lots_per_day"] = [None]
    runs = {"fifo": bare, "cr": bare, "bare": bare}
    assert set(verdicts(goals.judge(runs, "bare")).values()) == {None}
    assert "n/a" in goals.table(goals.judge(runs, "bare"))
