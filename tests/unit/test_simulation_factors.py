"""Breakdowns, PMs, setups, sampling, rework, Q-time and lens dedication in the simulator, each
on a fab small enough to work the expected times out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from mes.simulation import engine, model, rulesets
from mes.simulation.state import BROKEN, MAINT
from tests.unit import smt2020_writer as w

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "smt2020_tiny"

DOWNCAL = "DOWNCALNAME\tDOWNCALTYPE\tMTTFDIST\tMTTF\tMTTFUNITS\tMTTRDIST\tMTTR\tMTTRUNITS\n"
PMCAL = "PMCALNAME\tPMCALTYPE\tMTBPM\tMTBPMUNITS\tMTTRDIST\tMTTR\tMTTR2\tMTTRUNITS\n"
ATTACH = "CALNAME\tCALTYPE\tRESTYPE\tRESNAME\tFOADIST\tFOA\tFOAUNITS\n"


def run(folder: Path, days: float = 1, rules: str = "fifo", seed: int = 1) -> engine.Simulation:
    fab = model.load(folder)
    return engine.Simulation(fab, rulesets.resolve(rules), seed=seed, days=days).run()


def done_minutes(sim: engine.Simulation) -> list[float]:
    return sorted(round((c.done - sim.model.t0) / 60, 6) for c in sim.completed)


def one_tool(tmp_path: Path, minutes: float, lots: int = 1, **files: str) -> Path:
    return w.make_testbed(
        tmp_path,
        families=[w.family("Etch", area="Dry_Etch")],
        steps=[w.step(1, "Etch", minutes)],
        wip_lots=[w.wip(f"Init_Lot_1_{n}", 1) for n in range(1, lots + 1)],
        extra_files=files,
    )


def test_a_breakdown_suspends_the_running_lot_for_the_repair(tmp_path):
    # Fails at 100 min (constant first occurrence), repaired in 50: the 600-min lot ends at 650.
    folder = one_tool(
        tmp_path,
        600,
        **{
            "downcal.txt": DOWNCAL + "BRK\tmttf_by_cal\tconstant\t10000\tmin\tconstant\t50\tmin\n",
            "attach.txt": ATTACH + "BRK\tdown\tstngrp\tDry_Etch\tconstant\t100\tmin\n",
        },
    )
    sim = run(folder)
    assert done_minutes(sim) == [650.0]
    assert sim.counters.breakdowns == 1
    assert sim.tools[0].buckets[BROKEN] == pytest.approx(50 * 60)


def test_a_down_tool_takes_no_lot_until_repaired(tmp_path):
    # Down from 0 to 50 min (family attachment this time): the lot waiting at 0 starts at 50.
    folder = one_tool(
        tmp_path,
        60,
        **{
            "downcal.txt": DOWNCAL + "BRK\tmttf_by_cal\tconstant\t10000\tmin\tconstant\t50\tmin\n",
            "attach.txt": ATTACH + "BRK\tdown\tstnfam\tEtch\tconstant\t0\tmin\n",
        },
    )
    assert done_minutes(run(folder)) == [110.0]


def test_a_calendar_pm_waits_for_the_running_lot_and_blocks_the_next(tmp_path):
    # PM due at 30 min while lot 1 runs (0-60): the PM runs 60-180; lot 2 runs 180-240.
    folder = one_tool(
        tmp_path,
        60,
        lots=2,
        **{
            "pmcal.txt": PMCAL + "PM1\tmtbpm_by_cal\t30\tday\tconstant\t2\t0\thr\n",
            "attach.txt": ATTACH + "PM1\tpm\tstnfam\tEtch\tconstant\t30\tmin\n",
        },
    )
    sim = run(folder)
    assert done_minutes(sim) == [60.0, 240.0]
    assert sim.counters.pms == 1
    assert sim.tools[0].buckets[MAINT] == pytest.approx(120 * 60)


def test_a_familys_calendar_pms_are_spread_over_one_period(tmp_path):
    # Four tools, a 2-h PM every 4 days from day 1: tool j of 4 stops at day 1 + j, so one tool
    # of the family is in PM at a time (read literally, all four would stop at day 1).
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch", 4, area="Dry_Etch")],
        steps=[w.step(1, "Etch", 60)],
        extra_files={
            "pmcal.txt": PMCAL + "PM4\tmtbpm_by_cal\t4\tday\tconstant\t2\t0\thr\n",
            "attach.txt": ATTACH + "PM4\tpm\tstnfam\tEtch\tconstant\t1\tday\n",
        },
    )
    in_pm_h = [t.buckets[MAINT] / 3600 for t in run(folder, days=1.5).tools]
    assert in_pm_h == pytest.approx([2, 0, 0, 0])
    later = run(folder, days=4.5)
    assert [t.buckets[MAINT] / 3600 for t in later.tools] == pytest.approx([2, 2, 2, 2])
    assert later.counters.pms == 4


def test_a_wafer_count_pm_falls_due_after_its_wafers(tmp_path):
    # Every 50 wafers (two lots), 1 h: lots at 0-60 and 60-120, PM 120-180, lot 3 180-240.
    folder = one_tool(
        tmp_path,
        60,
        lots=3,
        **{
            "pmcal.txt": PMCAL + "PMW\tmtbpm_by_pieces\t50\tpieces\tconstant\t1\t0\thr\n",
            "attach.txt": ATTACH + "PMW\tpm\tstnfam\tEtch\tconstant\t50\t\n",
        },
    )
    sim = run(folder)
    assert done_minutes(sim) == [60.0, 120.0, 240.0]
    assert sim.counters.pms == 1


def test_breakdowns_are_the_same_for_every_rule_set_with_one_seed():
    runs = {rules: run(SAMPLE, days=40, rules=rules) for rules in ("fifo", "cr", "testbed")}
    assert len({r.counters.breakdowns for r in runs.values()}) == 1
    assert runs["fifo"].counters.breakdowns > 0
    assert run(SAMPLE, days=40, seed=2).counters.breakdowns != runs["fifo"].counters.breakdowns


def test_setups_sequence_dependent_and_from_any(tmp_path):
    # From no setup to SU_A: the step's 30 min; SU_A → SU_B: 15 min (setup.txt). Lot 1 at step
    # 1 (SU_A), lot 2 at step 2 (SU_B), one tool, 60 min each: 30+60 = 90, then 15+60 → 165.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Implant")],
        steps=[
            w.step(1, "Implant", 60, SETUP="SU_A", STIME=30, STUNITS="min"),
            w.step(2, "Implant", 60, SETUP="SU_B"),
        ],
        wip_lots=[w.wip("Init_Lot_1_1", 1), w.wip("Init_Lot_1_2", 2)],
        extra_files={"setup.txt": "CURSETUP\tNEWSETUP\tSTIME\tSTUNITS\nSU_A\tSU_B\t15\tmin\n"},
    )
    sim = run(folder)
    # Lot 1 then needs SU_A again for nothing (its step 2 is SU_B): 90 → lot 2 (SU_B) 90-165
    # → lot 1's step 2 on SU_B, no change: 165-225.
    assert done_minutes(sim) == [165.0, 225.0]
    assert sim.counters.setups == 2
    assert sim.tools[0].setup_s == 45 * 60


def test_sampling_skips_steps_by_their_percentage(tmp_path):
    # Step 2 at 0 % never runs, step 3 at 50 % runs for about half the lots.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch", count=5), w.family("Metro", count=5)],
        steps=[
            w.step(1, "Etch", 10),
            w.step(2, "Metro", 1000, StepPercent=0),
            w.step(3, "Metro", 20, StepPercent=50),
        ],
        orders=[w.order("Lot_1", 30, 200)],
    )
    sim = run(folder, days=4)
    ends = [round((c.done - c.released) / 60, 6) for c in sim.completed]
    assert set(ends) == {10.0, 30.0}
    measured = sum(1 for e in ends if e == 30.0) / len(ends)
    assert 0.35 < measured < 0.65
    assert sim.counters.skipped == len(ends) + sum(1 for e in ends if e == 10.0)


def test_rework_returns_the_lot_to_its_rework_step(tmp_path):
    # 40 % rework at step 2 back to step 1: a lot takes (1 + reworks) x (10 + 20) min.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch"), w.family("Metro")],
        steps=[w.step(1, "Etch", 10), w.step(2, "Metro", 20, RWKSTEP=1, REWORK=40)],
        wip_lots=[w.wip("Init_Lot_1_1", 1)],
    )
    for seed in range(1, 8):
        sim = run(folder, seed=seed)
        assert done_minutes(sim) == [30.0 * (1 + sim.counters.reworks)]
    assert any(run(folder, seed=s).counters.reworks > 0 for s in range(1, 8))


def test_qtime_windows_are_measured(tmp_path):
    # Step 1 opens a 30-min window to step 2. Lot A: step 1 0-10, step 2 (one tool, busy with
    # the 100-min lot B until 100) starts at 100 > 10 + 30: a violation. Lot B's window is met.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch"), w.family("Litho")],
        steps=[
            w.step(1, "Etch", 10, STEP_CQT=2, CQT=30, CQTUNITS="min"),
            w.step(2, "Litho", 100),
        ],
        wip_lots=[w.wip("Init_Lot_1_1", 1), w.wip("Init_Lot_1_2", 2)],
    )
    sim = run(folder)
    assert (sim.counters.qtime_checked, sim.counters.qtime_violated) == (1, 1)
    assert done_minutes(sim) == [100.0, 200.0]


def test_lens_dedication_keeps_a_lot_on_its_tool(tmp_path):
    # Litho x2 (60 min), step 1 dedicates step 3 to its tool; Etch x1 (10 min) between.
    # L1→T1, L2→T2 at 0; L3→T1 at 60. L1 back at 70 must wait for T1 (free T2 is not allowed):
    # 120-180. L2 at 80 on T2: 80-140. L3 at 130 waits for T1: 180-240.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Litho", count=2), w.family("Etch")],
        steps=[
            w.step(1, "Litho", 60, SVESTN="yes", FORSTEP=3),
            w.step(2, "Etch", 10),
            w.step(3, "Litho", 60),
        ],
        wip_lots=[w.wip(f"Init_Lot_1_{n}", 1) for n in (1, 2, 3)],
    )
    sim = run(folder)
    assert done_minutes(sim) == [140.0, 180.0, 240.0]
