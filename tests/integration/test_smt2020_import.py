"""Importing the tiny SMT2020 sample: master data, WIP, rule sets, and dispatching on it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from mes.dispatch.models import SetupChange, SetupMinRun
from mes.equipment.models import Equipment
from mes.errors import Conflict
from mes.fabs.models import ToolGroup
from mes.lots.models import Lot
from mes.routes.models import Step
from mes.smt2020 import importer, tables
from tests.conftest import NOW

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "smt2020_tiny"


@pytest.fixture
async def imported(session, clock):
    counts = await importer.import_testbed(
        session, tables.read_testbed(SAMPLE), fab_code="T1", clock=clock
    )
    await session.flush()
    return counts


async def test_import_counts(imported):
    assert imported == {
        "fabs": 1,
        "areas": 5,
        "tool_groups": 5,
        "tools": 7,  # 2 + 2 + 1 + 1 scanners, furnaces ... and one delay pseudo-tool
        "recipes": 8,  # 6 on r_1, r_2 shares 001_Oxide on Furnace_1 and adds two
        "qualifications": 11,
        "products": 2,
        "routes": 2,
        "steps": 9,
        "setup_changes": 5,
        "min_runs": 2,
        "rule_sets": 3,  # the fab default, Litho_1 and Implant_1 (least setup)
        "lots": 6,
        "wafers": 145,
    }


async def test_imported_rows(session, imported):
    delay = await session.scalar(select(Equipment).where(Equipment.code == "T1-Delay_9-01"))
    assert delay.max_lots == 50
    furnace = await session.scalar(select(Equipment).where(Equipment.code == "T1-Furnace_1-02"))
    assert furnace.max_lots == 4
    step5 = await session.scalar(
        select(Step).join(Step.tool_group).where(Step.operation == "005_Litho_B")
    )
    assert (step5.same_tool_as_sequence, step5.setup, step5.process_time_s) == (2, "SU_B", 900)
    lot = await session.scalar(select(Lot).where(Lot.code == "T1-Init_Lot_1_1"))
    # Time zero of the testbed maps to now: due 1 day 6 h later.
    assert lot.due_at == NOW + timedelta(days=1, hours=6)
    assert lot.step_entered_at == NOW
    hot = await session.scalar(select(Lot).where(Lot.code == "T1-Init_SuperHotLot_2_2"))
    assert hot.priority_class.value == "super_hot"
    changes = dict(
        ((a, b), t)
        for a, b, t in (
            await session.execute(
                select(SetupChange.from_setup, SetupChange.to_setup, SetupChange.time_s)
            )
        ).all()
    )
    assert changes[("*", "SU_A")] == 480
    assert changes[("GAS_1", "GAS_2")] == 4500
    assert await session.scalar(select(func.count()).select_from(SetupMinRun)) >= 2


async def test_a_second_fab_reuses_routes_and_recipes(session, imported, clock):
    again = await importer.import_testbed(
        session, tables.read_testbed(SAMPLE), fab_code="T2", clock=clock
    )
    assert again["tools"] == 7
    assert again["lots"] == 6
    assert "routes" not in again
    assert "recipes" not in again
    assert again["qualifications"] == 11
    with pytest.raises(Conflict):
        await importer.import_testbed(
            session, tables.read_testbed(SAMPLE), fab_code="T2", clock=clock
        )


async def test_dispatching_on_the_imported_fab(client, imported):
    furnace = (await client.get("/api/v1/dispatch/tools/T1-Furnace_1-01/list")).json()
    assert furnace["rule_set"] == "T1"
    assert [r["lot"] for r in furnace["ranked"]] == ["T1-Init_Lot_1_1", "T1-Init_Lot_1_2"]
    batch = {c["rule"]: c for c in furnace["ranked"][0]["contributions"]}
    implant = (await client.get("/api/v1/dispatch/tools/T1-Implant_1-01/list")).json()
    assert (implant["rule_set"], implant["rule_set_version"]) == ("T1/group/Implant_1", 1)
    assert [r["lot"] for r in implant["ranked"]] == ["T1-Init_HotLot_2_1", "T1-Init_Lot_1_3"]
    assert "setup" in batch
    where = (await client.get("/api/v1/dispatch/lots/T1-Init_Lot_1_4/where-next")).json()
    assert [o["tool"] for o in where["options"]] == ["T1-Litho_1-01", "T1-Litho_1-02"]


def test_the_command_line(tmp_path, monkeypatch):
    from mes.cli import app

    monkeypatch.setenv("MES_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["import", "smt2020", str(SAMPLE), "--fab", "CLI"])
    assert result.exit_code == 0, result.output
    assert '"lots": 6' in result.output
    refused = runner.invoke(app, ["import", "smt2020", str(tmp_path), "--fab", "CLI2"])
    assert refused.exit_code == 2


async def test_setup_qtime_and_dedication_along_an_imported_route(client, client_as, imported):
    """Runs one lot along r_1 on the imported fab as the equipment account (machines need no
    certification): the furnace opens a 4 h Q-time window to the scanner step, the scanner
    takes setup SU_A, and step 5 must come back to that scanner (SVESTN/FORSTEP)."""
    tool_account = client_as("t-equipment")
    lot = "T1-Init_Lot_1_1"

    async def run(tool: str) -> None:
        tin = await tool_account.post(f"/api/v1/lots/{lot}/track-in", json={"tool": tool})
        assert tin.status_code == 200, tin.text
        out = await tool_account.post(f"/api/v1/lots/{lot}/track-out", json={})
        assert out.status_code == 200, out.text

    await run("T1-Furnace_1-01")
    litho = (await client.get("/api/v1/dispatch/tools/T1-Litho_1-02/list")).json()
    mine = next(r for r in litho["ranked"] if r["lot"] == lot)
    assert {c["rule"]: c["why"] for c in mine["contributions"]}[
        "setup"
    ] == "setup change None→SU_A (8 min)"
    await run("T1-Litho_1-02")
    await run("T1-Implant_1-01")
    await run("T1-Delay_9-01")
    # Step 5: only the scanner that ran step 2.
    other = (await client.get("/api/v1/dispatch/tools/T1-Litho_1-01/list")).json()
    reasons = {e["lot"]: [r["code"] for r in e["reasons"]] for e in other["excluded"]}
    assert reasons[lot] == ["lot.dedicated_tool"]
    where = (await client.get(f"/api/v1/dispatch/lots/{lot}/where-next")).json()
    assert [o["tool"] for o in where["options"]] == ["T1-Litho_1-02"]
    refused = await tool_account.post(
        f"/api/v1/lots/{lot}/track-in", json={"tool": "T1-Litho_1-01"}
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "lot.dedicated_tool"
    # The scanner is still in SU_B's predecessor setup SU_A: the sequence-dependent change.
    same = (await client.get("/api/v1/dispatch/tools/T1-Litho_1-02/list")).json()
    mine = next(r for r in same["ranked"] if r["lot"] == lot)
    assert {c["rule"]: c["why"] for c in mine["contributions"]}["setup"] == (
        "setup change SU_A→SU_B (5 min)"
    )


async def test_qtime_window_from_the_furnace_shows_in_the_scanner_list(client, client_as, imported):
    tool_account = client_as("t-equipment")
    lot = "T1-Init_Lot_1_2"
    tin = await tool_account.post(f"/api/v1/lots/{lot}/track-in", json={"tool": "T1-Furnace_1-02"})
    assert tin.status_code == 200, tin.text
    out = await tool_account.post(f"/api/v1/lots/{lot}/track-out", json={})
    assert out.status_code == 200, out.text
    # The testbed's own rules measure Q-time but do not rank by it: an engineer adds it.
    published = await client_as("t-engineer").post(
        "/api/v1/dispatch/rule-sets",
        json={
            "fab": "T1",
            "tool_group": "Litho_1",
            "rules": [{"rule": "qtime", "weight": 100}, {"rule": "fifo"}],
        },
    )
    assert published.json()["version"] == 2
    litho = (await client.get("/api/v1/dispatch/tools/T1-Litho_1-01/list")).json()
    mine = next(r for r in litho["ranked"] if r["lot"] == lot)
    qtime = {c["rule"]: c for c in mine["contributions"]}["qtime"]
    # The window is 4 h; the clock has not moved: 240 min left, value 1 h / (1 h + 4 h).
    assert qtime["why"] == "Q-time window closes in 240 min"
    assert qtime["value"] == pytest.approx(0.2)


async def test_the_situation_counts_lots_and_tools_per_setup(session, imported, clock):
    """What ``setup_demand`` reads: per tool group, the waiting lots per setup their step needs
    and the tools up per setup they are in (a tool down is not counted)."""
    from mes.dispatch import snapshots
    from mes.equipment.states import E10State

    tools = {
        t.code: t
        for t in (await session.scalars(select(Equipment).where(Equipment.code.like("T1-%")))).all()
    }
    tools["T1-Litho_1-01"].current_setup = "SU_B"
    tools["T1-Litho_1-02"].current_setup = "SU_B"
    tools["T1-Implant_1-01"].current_setup = "SU_X"
    tools["T1-Implant_1-01"].e10_state = E10State.UDT
    await session.flush()
    loads = (await snapshots.situation(session, clock.now())).loads
    codes = dict((await session.execute(select(ToolGroup.id, ToolGroup.code))).all())
    by_group = {
        codes[group]: (load.queued_by_setup, load.tools_by_setup)
        for (_fab, group), load in loads.items()
        if load.queued_by_setup or load.tools_by_setup
    }
    # Init_Lot_1_4 waits at 005_Litho_B (SU_B); the hot lots at the implant steps (GAS_1, GAS_2).
    assert by_group == {
        "Litho_1": ({"SU_B": 1}, {"SU_B": 2}),
        "Implant_1": ({"GAS_1": 1, "GAS_2": 1}, {}),
    }
