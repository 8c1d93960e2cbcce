"""The simulator's event engine on hand-checkable fabs (expected times worked out here) and on
the tiny shipped sample (determinism, conservation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mes.simulation import engine, model, rulesets
from tests.unit import smt2020_writer as w

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "smt2020_tiny"


def run(folder: Path, days: float, rules: str = "fifo", seed: int = 1) -> engine.Simulation:
    return engine.Simulation(
        model.load(folder), rulesets.resolve(rules), seed=seed, days=days
    ).run()


def done_minutes(sim: engine.Simulation) -> list[float]:
    return sorted(round((c.done - sim.model.t0) / 60, 6) for c in sim.completed)


def test_a_single_tool_queue_finishes_lots_at_the_expected_times(tmp_path):
    # D/D/1: a lot every 30 min, 60 min of work each: the tool never idles after the first
    # start, so lot k (0-based) ends at 60 (k + 1) min; by 10 h, 10 are done and 11 wait.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch")],
        steps=[w.step(1, "Etch", 60)],
        orders=[w.order("Lot_1", 30, 1000)],
    )
    sim = run(folder, days=10 / 24)
    assert done_minutes(sim) == [60.0 * (k + 1) for k in range(10)]
    assert sim.counters.released == 21  # at 0, 30, ..., 600 min
    assert sim.counters.released == len(sim.completed) + len(sim.lots)
    tool = sim.tools[0]
    assert tool.buckets[engine.BUSY] == pytest.approx(10 * 3600)  # busy the whole 10 h


def test_load_unload_transport_and_a_reentrant_route(tmp_path):
    # Etch 20 min, Litho 30 min per wafer / 25 → per_piece 1.2 min x 25 = 30, Etch again 20;
    # 1 min load and unload per job, 5 min transport between the steps: one lot takes
    # 22 + 5 + 32 + 5 + 22 = 86 min.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch", load_min=1), w.family("Litho", load_min=1)],
        steps=[w.step(1, "Etch", 20), w.step(2, "Litho", 1.2, "per_piece"), w.step(3, "Etch", 20)],
        wip_lots=[w.wip("Init_Lot_1_1", 1)],
        transport_min=5,
    )
    sim = run(folder, days=1)
    assert done_minutes(sim) == [86.0]


def test_a_batch_waits_for_its_minimum_then_starts_with_the_next_lot(tmp_path):
    # Batch of 2..3 lots (50..75 wafers), 120 min per batch. Lot A waits alone from 0; B comes
    # at 30 min: the batch of 2 starts at 30 and ends at 150 for both.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Furnace")],
        steps=[w.step(1, "Furnace", 120, "per_batch", BATCHMN=50, BATCHMX=75)],
        wip_lots=[w.wip("Init_Lot_1_1", 1)],
        orders=[w.order("Lot_1", 600, 1, START="01/01/18 00:30:00")],
    )
    sim = run(folder, days=1)
    assert done_minutes(sim) == [150.0, 150.0]
    assert sim.counters.starts == 1


def test_a_full_batch_starts_at_once_and_a_lone_lot_after_the_maximum_wait(tmp_path):
    # Four lots at time 0, batch max 3: three start at 0 (end 120); the fourth is below the
    # minimum alone and waits the built-in sets' 24 h (the testbed's minimum is a minimum)
    # before it starts alone (24 h + 120 min).
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Furnace")],
        steps=[w.step(1, "Furnace", 120, "per_batch", BATCHMN=50, BATCHMX=75)],
        wip_lots=[w.wip(f"Init_Lot_1_{n}", 1) for n in range(1, 5)],
    )
    sim = run(folder, days=2)
    assert done_minutes(sim) == [120.0, 120.0, 120.0, 24 * 60 + 120.0]
    # FIFO among equals: lots tie on arrival and go by code; the last one waited.
    last = max(sim.completed, key=lambda c: c.done)
    assert last.done - sim.model.t0 == (24 * 60 + 120) * 60


def test_a_lone_lot_below_the_batch_minimum_starts_after_the_maximum_wait(tmp_path):
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Furnace")],
        steps=[w.step(1, "Furnace", 120, "per_batch", BATCHMN=50, BATCHMX=75)],
        wip_lots=[w.wip("Init_Lot_1_1", 1)],
    )
    assert done_minutes(run(folder, days=2)) == [24 * 60 + 120.0]  # waits 24 h, runs 120
    # Under the MES default set (its batch rule waits 2 h) it starts after 2 h.
    assert done_minutes(run(folder, days=1, rules="default")) == [240.0]


def test_two_tools_share_a_queue(tmp_path):
    # Two identical tools, four lots at 0 and 60 min of work each: two end at 60, two at 120.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch", count=2)],
        steps=[w.step(1, "Etch", 60)],
        wip_lots=[w.wip(f"Init_Lot_1_{n}", 1) for n in range(1, 5)],
    )
    assert done_minutes(run(folder, days=1)) == [60.0, 60.0, 120.0, 120.0]


def test_cascading_tool_takes_the_next_lot_after_the_interval(tmp_path):
    # A cascading tool (STNCAP 2): 40 min per lot, the next lot may start 10 min after one
    # started (PartInterval 0.4 min x 25 wafers). Three lots at 0 end at 40, 50, 60 min.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Coat", STNCAP=2)],
        steps=[w.step(1, "Coat", 40, PartInterval=0.4, PartIntUnits="min")],
        wip_lots=[w.wip(f"Init_Lot_1_{n}", 1) for n in range(1, 4)],
    )
    assert done_minutes(run(folder, days=1)) == [40.0, 50.0, 60.0]


def test_priority_decides_under_the_testbed_rules_not_under_fifo(tmp_path):
    # One tool busy 60 min with lot A; B (normal) arrives at 10, C (hot) at 20. FIFO runs B
    # next, the testbed's hot-lot-first rule runs C next.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch")],
        steps=[w.step(1, "Etch", 60)],
        wip_lots=[w.wip("Init_Lot_1_1", 1)],
        orders=[
            w.order("Lot_1", 600, 1, START="01/01/18 00:10:00"),
            w.order("HotLot_1", 600, 1, prior=20, START="01/01/18 00:20:00"),
        ],
    )
    for rules, expected in (("fifo", [10, 10, 20]), ("testbed", [10, 20, 10])):
        sim = run(folder, days=1, rules=rules)
        assert [c.prior for c in sorted(sim.completed, key=lambda c: c.done)] == expected
        assert done_minutes(sim) == [60.0, 120.0, 180.0]


def test_runs_are_deterministic_per_seed_and_conserve_lots():
    a = run(SAMPLE, days=30, seed=7)
    b = run(SAMPLE, days=30, seed=7)
    c = run(SAMPLE, days=30, seed=8)
    key = [(x.part, x.released, x.done) for x in a.completed]
    assert key == [(x.part, x.released, x.done) for x in b.completed]
    assert a.counters == b.counters
    assert key != [(x.part, x.released, x.done) for x in c.completed]
    for sim in (a, c):
        released = sim.counters.released + len(sim.model.testbed.wip)
        assert released == len(sim.completed) + len(sim.lots)
        assert sim.counters.decisions > 0
        assert sim.counters.starts > 0


def released(sim: engine.Simulation) -> list[tuple[str, float]]:
    lots = [(c.part, c.released) for c in sim.completed]
    return sorted(lots + [(lot.part, lot.released) for lot in sim.lots.values()])


def test_rule_sets_see_the_same_releases_with_the_same_seed():
    fifo, cr = run(SAMPLE, days=20, rules="fifo"), run(SAMPLE, days=20, rules="cr")
    assert released(fifo) == released(cr)
    assert len(released(fifo)) == fifo.counters.released + len(fifo.model.testbed.wip)


def test_every_decision_is_the_production_policys(monkeypatch):
    # The engine decides only through policy.decide (choose_starts(rank_lots(...)) without the
    # list nobody reads: tests/unit/test_dispatch_decide.py), on the production snapshot
    # types; count the calls and check what they were given.
    import mes.dispatch.policy as policy

    seen: list[tuple[type, type, type]] = []
    original = policy.decide

    def decide(tool, lots, situation, rule_set, **kwargs):
        lots = list(lots)
        seen.append((type(tool), type(lots[0]), type(situation)))
        return original(tool, lots, situation, rule_set, **kwargs)

    monkeypatch.setattr(policy, "decide", decide)
    sim = run(runner_example(), days=5)
    assert len(seen) == sim.counters.decisions > 0
    assert set(seen) == {(policy.ToolSnapshot, policy.LotSnapshot, policy.Situation)}


def runner_example() -> Path:
    from mes.simulation.runner import EXAMPLE

    return EXAMPLE


def test_the_example_fab_conserves_lots_through_breakdowns_and_pms():
    sim = run(runner_example(), days=30, rules="testbed")
    assert sim.counters.breakdowns > 0
    assert sim.counters.pms > 0
    assert sim.counters.setups > 0
    assert sim.counters.reworks + sim.counters.skipped > 0
    released = sim.counters.released + len(sim.model.testbed.wip)
    assert released == len(sim.completed) + len(sim.lots)
