"""What the simulator models of the SMT2020 testbed beyond the dispatch rules, found missing or
wrong when the simulator did not hold the testbed's throughput (docs/simulation.md,
Measurements): each on a fab small enough to work the expected figures out by hand."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from mes.dispatch import policy
from mes.simulation import engine, model, rulesets, runner
from mes.simulation.rulesets import BATCH_GATE
from mes.simulation.state import BROKEN, MAINT
from tests.unit import smt2020_writer as w

SETUPS = "CURSETUP\tNEWSETUP\tSTIME\tSTUNITS\n\tSU_A\t30\tmin\n\tSU_B\t30\tmin\n"
MIN_RUN_3 = "SETUPGRP\tSETUP\tMINRUN\nGas\tSU_A\t3\n\tSU_B\t3\n"


def run(folder: Path, days: float = 1, rules: str = "fifo", seed: int = 1) -> engine.Simulation:
    fab = model.load(folder)
    return engine.Simulation(fab, rulesets.resolve(rules), seed=seed, days=days).run()


def alternating_setups(tmp_path: Path, **files: str) -> Path:
    # One implanter; step 1 needs SU_A, step 2 SU_B, 10 min each. Six lots wait at time zero,
    # alternating A, B, A, B, A, B in FIFO order.
    return w.make_testbed(
        tmp_path,
        families=[w.family("Implant")],
        steps=[w.step(1, "Implant", 10, SETUP="SU_A"), w.step(2, "Implant", 10, SETUP="SU_B")],
        wip_lots=[w.wip(f"Init_Lot_1_{n}", 1 if n % 2 else 2) for n in range(1, 7)],
        extra_files={"setup.txt": SETUPS, **files},
    )


def test_pure_fifo_changes_setup_for_every_lot_without_a_minimum_run(tmp_path):
    # A, B, A, B, A, B: six changes; then lots 1, 3, 5 come back at step 2 (SU_B): no change.
    sim = run(alternating_setups(tmp_path / "free"))
    assert sim.counters.setups == 6
    assert len(sim.completed) == 6


def test_a_minimum_run_holds_the_setup_while_its_lots_wait_whatever_the_rule_set(tmp_path):
    # MINRUN 3 (setupgrp.txt) is the tool's, not the rule set's: after the change to SU_A the
    # tool runs the three SU_A lots (1, 3, 5) before FIFO may change it to SU_B for lot 2, and
    # then every lot left needs SU_B: two changes. 2 x 30 min setup + 9 x 10 min of work.
    sim = run(alternating_setups(tmp_path / "minrun", **{"setupgrp.txt": MIN_RUN_3}))
    assert sim.counters.setups == 2
    assert len(sim.completed) == 6
    assert max(c.done - sim.model.t0 for c in sim.completed) == 150 * 60


def test_a_minimum_run_waits_for_its_setup_as_long_as_a_change_takes(tmp_path):
    # Only lot 1 needs SU_A. After it the tool's run of SU_A is 1 of 3 and no lot of SU_A
    # waits: the tool waits for one (the minimum run is "run 3 before changing again"), but
    # no longer than the 30 min a change back to SU_A takes, then changes to SU_B.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Implant")],
        steps=[w.step(1, "Implant", 10, SETUP="SU_A"), w.step(2, "Implant", 10, SETUP="SU_B")],
        wip_lots=[w.wip("Init_Lot_1_1", 1), w.wip("Init_Lot_1_2", 2), w.wip("Init_Lot_1_3", 2)],
        extra_files={"setup.txt": SETUPS, "setupgrp.txt": MIN_RUN_3},
    )
    sim = run(folder)
    assert sim.counters.setups == 2
    # 30 + 10 (lot 1, SU_A), 30 waiting, 30 + 10 + 10 + 10 (lots 2, 3, then lot 1 at step 2).
    assert sorted((c.done - sim.model.t0) / 60 for c in sim.completed) == [110, 120, 130]


def test_a_lot_of_the_run_that_comes_while_the_tool_waits_continues_the_run(tmp_path):
    # Lot 1 (SU_A) runs 0-40 after the change. Lot 4 leaves a 45-min prep step at 45 and needs
    # SU_A: the implanter, 1 of 3 into its run and waiting for SU_A since 40, takes it without
    # a change (45-55), waits again (55-85) and only then changes to SU_B for lots 2 and 3 and
    # for 1 and 4 at their SU_B step. Giving way at once (the former reading of MINRUN) changed
    # to SU_B at 40 and back to SU_A for lot 4 (three changes).
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Implant"), w.family("Prep")],
        steps=[
            w.step(1, "Prep", 45),
            w.step(2, "Implant", 10, SETUP="SU_A"),
            w.step(3, "Implant", 10, SETUP="SU_B"),
        ],
        wip_lots=[
            w.wip("Init_Lot_1_1", 2),
            w.wip("Init_Lot_1_2", 3),
            w.wip("Init_Lot_1_3", 3),
            w.wip("Init_Lot_1_4", 1),
        ],
        extra_files={"setup.txt": SETUPS, "setupgrp.txt": MIN_RUN_3},
    )
    sim = run(folder)
    assert sim.counters.setups == 2
    # SU_B from 85 to 115, then lots 2, 3 (waiting since 0), 1 (since 40), 4 (since 55).
    assert sorted((c.done - sim.model.t0) / 60 for c in sim.completed) == [125, 135, 145, 155]


def test_a_lot_goes_to_the_free_tool_already_set_up_for_it(tmp_path):
    # Two implanters, SU_A 60 min then SU_B 60 min, 30 min per change. Lot 1 (at step 1, SU_A)
    # and lot 2 (at step 2, SU_B) start at once, one per tool, and end at 90. Lot 1 then needs
    # SU_B: both tools are free, and the one set up for SU_B takes it (the testbed's
    # wake_LeastSetupTime), done at 150 with no third change; not the first tool of the list.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Implant", count=2)],
        steps=[w.step(1, "Implant", 60, SETUP="SU_A"), w.step(2, "Implant", 60, SETUP="SU_B")],
        wip_lots=[w.wip("Init_Lot_1_1", 1), w.wip("Init_Lot_1_2", 2)],
        extra_files={"setup.txt": SETUPS},
    )
    for rules in ("fifo", "testbed"):
        sim = run(folder, rules=rules)
        assert sim.counters.setups == 2, rules
        assert max(c.done - sim.model.t0 for c in sim.completed) == 150 * 60


def test_a_cascading_tool_changes_setup_only_once_it_is_empty(tmp_path):
    # A cascading implanter: 40 min per lot, the next lot may start 10 min after one started
    # (PartInterval 0.4 min x 25 wafers). Lot 1 (SU_A, 30 min change from none) runs 30-70.
    # Lot 2 needs SU_B: the gas cannot change under lot 1, so its change starts when lot 1 is
    # out (70), then 30 min of setup, 40 of work: done at 140 (not at 40 + 30 + 40 = 110).
    # Lot 3 (SU_B again) cascades 10 min behind lot 2: 150.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Implant", STNCAP=2)],
        steps=[
            w.step(1, "Implant", 40, SETUP="SU_A", PartInterval=0.4, PartIntUnits="min"),
            w.step(2, "Implant", 40, SETUP="SU_B", PartInterval=0.4, PartIntUnits="min"),
        ],
        wip_lots=[w.wip("Init_Lot_1_1", 1), w.wip("Init_Lot_1_2", 2), w.wip("Init_Lot_1_3", 2)],
        extra_files={"setup.txt": SETUPS},
    )
    sim = run(folder, days=3 / 24)
    assert sim.counters.setups == 2
    ends = sorted(round((c.done - sim.model.t0) / 60) for c in sim.completed)
    assert ends[:2] == [140, 150]


def two_routes_sharing_a_batch_step(tmp_path: Path, **furnace_family: object) -> Path:
    # Part 1 (route r_1): Furnace "F" then Etch. Part 2 (route r_2): Litho, Furnace "F", Litho.
    # The furnace step has the same name (the batch key) at index 0 of r_1 and index 1 of r_2:
    # a part-1 lot and a part-2 lot waiting there at time zero run in one batch (60 min).
    furnace = {"DESC": "F_Diffusion", "BATCHMN": 25, "BATCHMX": 50}
    route_2 = [
        {**w.step(1, "Litho", 10), "ROUTE": "r_2"},
        {**w.step(2, "Furnace", 60, "per_batch", **furnace), "ROUTE": "r_2"},
        {**w.step(3, "Litho", 10), "ROUTE": "r_2"},
    ]
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Furnace", **furnace_family), w.family("Etch"), w.family("Litho")],
        steps=[w.step(1, "Furnace", 60, "per_batch", **furnace), w.step(2, "Etch", 10)],
        wip_lots=[w.wip("Init_Lot_1_1", 1), {**w.wip("Init_Lot_2_1", 2), "PART": "part_2"}],
        extra_files={
            "part.txt": "PARTGRP\tPARTFAM\tPART\tROUTEFILE\tROUTE\n"
            "Saleable\tproduct_1\tpart_1\troute_1.txt\tr_1\n"
            "Saleable\tproduct_2\tpart_2\troute_2.txt\tr_2\n"
        },
    )
    w._write(folder / "route_2.txt", w.ROUTE_HEADER, route_2)
    return folder


def test_after_a_batch_each_lot_goes_on_along_its_own_route(tmp_path):
    # After the batch (0-60) the part-1 lot goes to its Etch step and the part-2 lot to its
    # last Litho step, both done at 70. Before the fix every lot of a batch went on from the
    # first lot's route index: one lot ran the furnace again or skipped its last step.
    sim = run(two_routes_sharing_a_batch_step(tmp_path))
    assert sim.counters.starts == 3  # the batch, Etch, Litho: no lot repeats or skips a step
    assert sorted((c.part, (c.done - sim.model.t0) / 60) for c in sim.completed) == [
        ("part_1", 70.0),
        ("part_2", 70.0),
    ]


def test_a_furnace_batching_by_route_and_step_keeps_the_two_routes_apart(tmp_path):
    # The same two lots, the furnace family with the testbed's BATCHCRITF crit_sameroutestep:
    # only lots of the same route and step share a batch, so each runs alone (1 lot is the
    # batch minimum): the part-1 lot first (FIFO tie on the code) 0-60, Etch 60-70; the part-2
    # lot 60-120, Litho 120-130. Batched by step name they ran together (both done at 70).
    sim = run(two_routes_sharing_a_batch_step(tmp_path, BATCHCRITF="crit_sameroutestep"))
    assert sim.counters.starts == 4  # two furnace jobs, Etch, Litho
    assert sorted((c.part, (c.done - sim.model.t0) / 60) for c in sim.completed) == [
        ("part_1", 70.0),
        ("part_2", 130.0),
    ]


def test_the_time_to_failure_counts_from_the_end_of_the_repair(tmp_path):
    # Up 100 min, down 50 (constants), first failure at 100: failures at 100, 250, 400, ...
    # (the testbed reference's broken share is MTTR / (MTTF + MTTR): 2.30 % for Dry_Etch, 231.84
    # / (10,080 + 231.84) = 2.25 %; 6.55 % for Litho, 705.59 / 10,785.59 = 6.54 %). In 10 h:
    # down 100-150, 250-300, 400-450, 550-600: 200 min, a third of the time after the first
    # failure. Before: a failure every 100 min of calendar time, down 100-150, 200-250, ...
    # (MTTR / MTTF, half of the time).
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch", area="Dry_Etch")],
        steps=[w.step(1, "Etch", 10)],
        extra_files={
            "downcal.txt": "DOWNCALNAME\tDOWNCALTYPE\tMTTFDIST\tMTTF\tMTTFUNITS\tMTTRDIST\tMTTR"
            "\tMTTRUNITS\nBRK\tmttf_by_cal\tconstant\t100\tmin\tconstant\t50\tmin\n",
            "attach.txt": "CALNAME\tCALTYPE\tRESTYPE\tRESNAME\tFOADIST\tFOA\tFOAUNITS\n"
            "BRK\tdown\tstngrp\tDry_Etch\tconstant\t100\tmin\n",
        },
    )
    sim = run(folder, days=10 / 24)
    assert sim.counters.breakdowns == 4
    assert sim.tools[0].buckets[BROKEN] == pytest.approx(200 * 60)


def test_a_cascading_tool_loads_the_next_lot_while_the_last_one_runs(tmp_path):
    # Cascading coater, 1 min load and unload, 40 min per lot, the next lot may start 10 min
    # after one started (PartInterval 0.4 min x 25). Lot 1: load 0-1, runs 1-41, out at 42.
    # Lot 2 is loaded while lot 1 runs and starts at 11, 10 min after lot 1: out at 52; lot 3
    # at 62. Before, each lot's load came on top of the interval (lots every 11 min: 53, 64),
    # 10 % less capacity than the testbed's cascading tools have.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Coat", load_min=1, STNCAP=2)],
        steps=[w.step(1, "Coat", 40, PartInterval=0.4, PartIntUnits="min")],
        wip_lots=[w.wip(f"Init_Lot_1_{n}", 1) for n in range(1, 4)],
    )
    sim = run(folder)
    assert sorted((c.done - sim.model.t0) / 60 for c in sim.completed) == [42.0, 52.0, 62.0]


def test_a_minimum_run_does_not_idle_a_tool_whose_run_lots_cannot_start_there(tmp_path):
    # Tool 1 is 1 lot into a run of SU_A (MINRUN 3); the only SU_A lot waiting must run on
    # tool 2 (lens-style dedication), which is busy; a SU_B lot waits too. The run does not
    # keep tool 1 idle: it changes to SU_B for that lot.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Implant", count=2)],
        steps=[w.step(1, "Implant", 10, SETUP="SU_A"), w.step(2, "Implant", 10, SETUP="SU_B")],
        wip_lots=[w.wip("Init_Lot_1_1", 1), w.wip("Init_Lot_1_2", 2)],
        extra_files={"setup.txt": SETUPS, "setupgrp.txt": MIN_RUN_3},
    )
    sim = engine.Simulation(model.load(folder), rulesets.resolve("fifo"), seed=1, days=1)
    sim._start()  # the lots wait in the queue; nothing decided yet
    tool_1, tool_2 = sim.tools
    tool_1.setup, tool_1.since_setup = "SU_A", 1
    tool_2.pm_due = True  # takes no work now
    queue = sim.queues[tool_1.family.id]
    run_lot, other = sorted(queue.values(), key=lambda snap: snap.code)
    queue[run_lot.id] = replace(run_lot, dedicated_tool_id=tool_2.id)
    sim.setup_queues[tool_1.family.id]["SU_A"][run_lot.id] = queue[run_lot.id]  # the engine's copy
    sim.dispatching.cycle()
    assert [lot.name for job in tool_1.jobs for lot in job.lots] == [other.code]
    assert tool_1.setup == "SU_B"


def test_the_load_the_policy_reads_counts_lots_and_tools_per_setup(monkeypatch):
    # ``setup_demand`` reads, per family, the lots waiting per setup and the tools up per
    # setup: kept by the engine as lots come and go and tools change setup or break. At every
    # decision of 20 days of the example fab (three gas setups on the implanters), the load
    # handed to the policy is held to a count made from the queue and the tools themselves.
    rules = rulesets.from_spec(
        "demand",
        [{"rule": "setup", "weight": 200}, {"rule": "setup_demand", "weight": 50}, BATCH_GATE],
    )
    sim = engine.Simulation(model.load(runner.EXAMPLE), rules, seed=2, days=20)
    decide, checked = policy.decide, Counter[str]()

    def checking_decide(tool, lots, situation, rule_set, **kw):  # type: ignore[no-untyped-def]
        fid = tool.tool_group_id
        waiting = Counter(snap.step.setup for snap in sim.queues[fid].values() if snap.step.setup)
        in_setup = Counter(
            t.setup for t in sim.tools_of[fid] if t.setup and t.status not in (BROKEN, MAINT)
        )
        load = situation.loads[(tool.fab_id, fid)]
        queued = {setup: n for setup, n in load.queued_by_setup.items() if n}  # 0s kept
        assert (queued, dict(load.tools_by_setup)) == (dict(waiting), dict(in_setup))
        checked["changes" if tool.current_setup else "first"] += bool(waiting)
        checked["down"] += any(t.status in (BROKEN, MAINT) for t in sim.tools_of[fid])
        return decide(tool, lots, situation, rule_set, **kw)

    monkeypatch.setattr(policy, "decide", checking_decide)
    sim.run()
    assert sim.counters.setups > 50
    assert checked["changes"] > 100, checked
    assert checked["down"] > 0, checked
