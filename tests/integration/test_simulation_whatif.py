"""What-if from the live MES: a fab in the database (the tiny SMT2020 sample imported, one lot
running, one tool down) read into the simulator and run ahead under two rule sets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mes.equipment.models import Equipment
from mes.equipment.states import E10State
from mes.lots.models import Lot
from mes.lots.states import LotState
from mes.routes.models import Step
from mes.simulation import engine, model, runner, state, whatif
from mes.simulation.cli import choose
from mes.simulation.rulesets import RuleChoiceError, SimRules
from mes.smt2020 import importer, tables
from tests.conftest import NOW

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "smt2020_tiny"


@pytest.fixture
async def live(session, clock):
    await importer.import_testbed(session, tables.read_testbed(SAMPLE), fab_code="W1", clock=clock)
    # Init_Lot_1_3 runs step 3 (Implant, 40 min) on the implanter since 10 min ago.
    lot = await session.scalar(select(Lot).where(Lot.code == "W1-Init_Lot_1_3"))
    implanter = await session.scalar(select(Equipment).where(Equipment.code == "W1-Implant_1-01"))
    lot.state, lot.equipment_id = LotState.RUNNING, implanter.id
    lot.tracked_in_at = NOW - timedelta(minutes=10)
    scanner = await session.scalar(select(Equipment).where(Equipment.code == "W1-Litho_1-02"))
    scanner.e10_state = E10State.UDT
    await session.flush()
    return await whatif.read_fab(session, "W1", NOW)


async def test_the_live_fab_is_read_with_positions_and_states(live, session):
    assert live.counts["lots"] == 6
    assert live.counts["lots_running"] == 1
    assert live.counts["tools_down"] == 1
    fam, n, until = live.initial.running["W1-Init_Lot_1_3"]
    assert (fam, n) == ("Implant_1", 1)
    assert until == (NOW + timedelta(minutes=30)).timestamp()  # 40 min from 10 min ago
    assert live.initial.tools[("Litho_1", 2)].down_for_s == 2 * 3600
    assert live.testbed.families["Delay_9"].is_delay
    assert live.testbed.families["Litho_1"].count == 2
    step5 = await session.scalar(select(Step).where(Step.operation == "005_Litho_B"))
    route = live.testbed.routes[f"rv{step5.route_version_id}"]
    # Dedication runs forward in the tables: step 2 names step 5.
    assert next(s for s in route if s.step == 2).same_tool_for_step == 5
    # The imported rule sets: the implanter's least-setup set, the fab default elsewhere.
    implant = model.build(live.testbed).family_by_name["Implant_1"]
    weights = {r.name: r.weight for r in live.production.for_family(implant).rules}
    assert weights["setup"] == 200


async def test_the_live_fab_runs_ahead_under_two_rule_sets(live):
    fab = model.build(live.testbed)
    rules = choose("production,fifo", live.production)
    results = runner.run_start(fab, rules, seeds=1, days=5, initial=live.initial)
    assert set(results) == {"production", "fifo"}
    for (run,) in results.values():
        # No releases: the six lots of WIP finish within five days.
        assert len(run.lots) + run.wip_end == 6
        assert run.wip_end == 0
    # The running lot leaves the implanter at +30 min: it is busy until then.
    sim = engine.Simulation(fab, rules[1], days=0.02, initial=live.initial).run()
    implanter = next(t for t in sim.tools if t.code == "Implant_1-01")
    assert [job.end for job in implanter.jobs] == [(NOW + timedelta(minutes=30)).timestamp()]
    assert next(t for t in sim.tools if t.code == "Litho_1-02").status == state.BROKEN


def test_rule_set_choices_for_what_if():
    production = SimRules("production")
    assert [r.name for r in choose("production, cr", production)] == ["production", "cr"]
    with pytest.raises(RuleChoiceError):
        choose("fifo,fifo", production)
