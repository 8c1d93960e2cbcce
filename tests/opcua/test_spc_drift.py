"""A drifting metrology tool is caught by its SPC chart and stopped, with nobody at the keyboard
(real OPC UA to a simulated tool, the real adapter and dispatcher): the dispatcher sends lots to
the tool, the adapter brings each wafer's measured sites into the step's data collection plan,
the chart freezes its baseline, then a drift switched on in the simulator trips a run rule; the
lot is held, the tool goes to UDT.SPC and the dispatcher sends it nothing more. The engineer's
acknowledgement (after recalibrating the tool) and the lot's release bring the line back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import select

from mes.audit.context import AuditContext, bind
from mes.clock import FixedClock, SystemClock
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.dispatch.scheduler import Dispatcher, Mode
from mes.equipment.models import Equipment
from mes.jobs.models import EquipmentJob
from mes.quality import charts, plans
from mes.quality.schemas import ChartCreate, ParameterIn, PlanBody, PlanCreate
from tests.conftest import START

from .conftest import Fab, wait_for
from .test_adapter_faults import _ready

MET = "T1-MET01"
BASELINE_LOTS = 3  # 2 sampled wafers each: the chart's 6 baseline points
# The drift must be caught before this many lots have run on the drifting tool.
CAUGHT_WITHIN = 3


async def _arrange(fab: Fab) -> int:
    """The plan (written by one engineer, approved by another) and its chart."""
    async with unit_of_work(fab.db) as session:
        bind(session, AuditContext(actor="eng-a", role="engineer", operation="test", at=START))
        thk = ParameterIn(
            name="THK", unit="nm", source="metrology", wafers=[1, 3], sites=5, lsl=90, usl=110
        )
        await plans.create_plan(
            session,
            PlanCreate(name="THK-PLAN", operation="THK", body=PlanBody(parameters=[thk])),
            actor="eng-a",
        )
        await plans.approve_version(session, "THK-PLAN", 1, actor="eng-b", clock=FixedClock(START))
        chart = await charts.create_chart(
            session,
            ChartCreate(
                code="THK-MET01",
                plan="THK-PLAN",
                parameter="THK",
                context={"tool": MET},
                baseline_points=2 * BASELINE_LOTS,
                actions={"*": ["hold_lot", "inhibit_tool", "notify"]},
            ),
            actor="eng-a",
        )
        return chart.id


async def _only_metrology_connected(fab: Fab) -> None:
    """The other tools are run by hand here: no adapter session to tools without a simulator."""
    async with unit_of_work(fab.db) as session:
        bind(session, AuditContext(actor="test", role="system", operation="test", at=START))
        for tool in await session.scalars(select(Equipment).where(Equipment.code != MET)):
            tool.opcua_endpoint = None


async def _at_thk_step(fab: Fab) -> str:
    """A lot of 3 wafers waiting at step 30 (THK): steps 10 and 20 moved by hand."""
    lot = await fab.start_lot(wafers=3)
    for tool in ("T1-WET01", "T1-DEP01"):
        r = await fab.api.post(f"/api/v1/lots/{lot}/track-in", json={"tool": tool})
        assert r.status_code == 200, r.text
        r = await fab.api.post(f"/api/v1/lots/{lot}/track-out", json={})
        assert r.status_code == 200, r.text
    return lot


async def _step(fab: Fab, lot: str) -> tuple[str, int]:
    found = await fab.lot(lot)
    return found["state"], found["step"]["sequence"]


async def _met_jobs(fab: Fab) -> list[str]:
    async with unit_of_work(fab.db, write=False) as session:
        rows = await session.scalars(
            select(EquipmentJob.job_order_id)
            .join(Equipment, Equipment.id == EquipmentJob.equipment_id)
            .where(Equipment.code == MET)
            .order_by(EquipmentJob.id)
        )
        return list(rows)


async def test_a_drifting_tool_is_caught_and_stopped_before_it_runs_many_lots(fab: Fab) -> None:
    await _only_metrology_connected(fab)
    await _ready(fab, MET)
    chart_id = await _arrange(fab)
    baseline = [await _at_thk_step(fab) for _ in range(BASELINE_LOTS)]
    drifting = [await _at_thk_step(fab) for _ in range(CAUGHT_WITHIN + 1)]
    sim = fab.sims[MET]

    async with contextlib.AsyncExitStack() as stack:
        # Baseline: the lots run on the tool, the chart freezes its limits.
        for lot in drifting:  # these wait until the baseline is in
            r = await fab.api.post(
                f"/api/v1/lots/{lot}/hold",
                json={"hold_code": "ENGINEERING", "reason": "after the baseline"},
            )
            assert r.status_code == 200, r.text
        await stack.enter_async_context(_dispatching(fab))
        for lot in baseline:
            await wait_for(lambda lot=lot: _step_is(fab, lot, 40), f"{lot} measured", within=60)
        data = (await fab.api.get(f"/api/v1/quality/charts/{chart_id}")).json()
        assert data["chart"]["limits"]["source"] == "baseline"
        # The sampled wafers' sites, as the tool measured them, with their context.
        values = (await fab.api.get("/api/v1/quality/values", params={"lot": baseline[0]})).json()
        assert [(v["slot"], v["site"]) for v in values] == [
            (slot, site) for slot in (1, 3) for site in range(1, 6)
        ]
        assert {(v["tool"], v["operation"], v["source"]) for v in values} == {(MET, "THK", "tool")}
        assert len(data["points"]) == 2 * BASELINE_LOTS

        # The tool starts to drift: +0.4 nm per wafer measured.
        await sim.inject("set_drift", per_wafer=0.4)
        ran_before = len(await _met_jobs(fab))
        for lot in drifting:
            r = await fab.api.post(
                f"/api/v1/lots/{lot}/release",
                json={"hold_code": "ENGINEERING", "signature": {"reason": "baseline in"}},
            )
            assert r.status_code == 200, r.text

        async def caught() -> bool:
            tool = await fab.tool(MET)
            return tool["e10_substate"] == "UDT.SPC"

        await wait_for(caught, "the tool inhibited by SPC", within=60)
        violations = await fab.api.get("/api/v1/quality/violations", params={"open": True})
        (first, *_) = sorted(violations.json()["items"], key=lambda v: v["id"])
        assert first["rule"].startswith("nelson_")
        held = first["lot"]
        assert await _step(fab, held) == ("OnHold", 30)
        ran = (await _met_jobs(fab))[ran_before:]
        assert 1 <= len(ran) <= CAUGHT_WITHIN, ran
        # The dispatcher sends the inhibited tool nothing more: the other lots wait at step 30.
        await asyncio.sleep(1.0)  # five dispatch cycles
        assert (await _met_jobs(fab))[ran_before:] == ran
        waiting = [lot for lot in drifting if await _step(fab, lot) == ("Waiting", 30)]
        assert len(waiting) == len(drifting) - len(ran)
        listing = (await fab.api.get(f"/api/v1/dispatch/tools/{MET}/list")).json()
        assert listing["tool_blocked"] is not None

        # The engineer recalibrates the tool, closes the violation (the tool returns) and
        # releases the lot: the line runs again, every lot measured and moved on.
        await sim.inject("set_drift", per_wafer=0.0)
        await sim.inject("shift_mean", offset=0.0)
        for v in violations.json()["items"]:
            ack = await fab.api.post(
                f"/api/v1/quality/violations/{v['id']}/acknowledge",
                json={"comment": "drift: tool recalibrated", "release_tool": True},
            )
            assert ack.status_code == 200, ack.text
        assert (await fab.tool(MET))["e10_state"] == "SBY"
        r = await fab.api.post(
            f"/api/v1/lots/{held}/release",
            json={"hold_code": "SPC", "signature": {"reason": "OCAP"}},
        )
        assert r.status_code == 200, r.text
        for lot in [*waiting, held]:
            await wait_for(lambda lot=lot: _step_is(fab, lot, 40), f"{lot} measured", within=60)
    history = await fab.history(held)
    track_outs = [e for e in history if e["event_type"] == "TRACK_OUT"]
    holds = [h["hold_code"] for e in track_outs for h in e["after"].get("quality_holds", [])]
    assert holds == ["SPC"]


async def _step_is(fab: Fab, lot: str, sequence: int) -> bool:
    found = await fab.lot(lot)
    return bool(found["step"] and found["step"]["sequence"] == sequence)


@contextlib.asynccontextmanager
async def _dispatching(fab: Fab) -> AsyncIterator[None]:
    db = Database(create_engine(fab.settings))
    dispatcher = Dispatcher(db, SystemClock(), {"T1": Mode.AUTO}, owner="spc-test", interval_s=0.2)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.dispose()
