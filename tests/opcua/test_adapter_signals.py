"""What a connected adapter means for the tool's record, operator pause/resume, and which
process values it keeps.

A tool whose adapter holds a healthy session is signalling even when nothing changes on it, so
the silence watchdog (``detect_silent_tools``) leaves it alone; when the tool dies it goes to
UDT.NO_SIGNAL from its last signal, and the reconnect after the tool is back ends that state.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import select

from mes.audit.context import AuditContext, bind
from mes.clock import SystemClock
from mes.db.transaction import unit_of_work
from mes.equipment import service as equipment_service
from mes.jobs.models import ProcessValueSummary

from .conftest import Fab, wait_for
from .test_adapter_faults import DEP, _at_dep_step, _ready, _state_is


async def _watchdog(fab: Fab, silence_s: float) -> list[str]:
    clock = SystemClock()
    async with unit_of_work(fab.db) as session:
        bind(
            session,
            AuditContext(actor="system", role="system", operation="test.watchdog", at=clock.now()),
        )
        return await equipment_service.detect_silent_tools(session, clock, silence_s)


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


async def test_a_connected_quiet_tool_is_signalling_and_a_dead_one_goes_no_signal(
    fab: Fab,
) -> None:
    await _ready(fab, DEP)  # registry refresh every lease_ttl/3 = 1 s stamps the signal
    tool = await fab.tool(DEP)
    assert tool["e10_state"] == "SBY"
    first = _at(tool.get("last_signal_at"))
    await wait_for(
        lambda: _signal_after(fab, first), "the adapter to stamp the tool's signal", within=10
    )
    await asyncio.sleep(2.5)
    # Idle, connected: no E10 change for seconds, yet not silent.
    assert DEP not in await _watchdog(fab, silence_s=2.0)
    assert (await fab.tool(DEP))["e10_state"] == "SBY"

    await fab.stop_sim(DEP)  # the tool dies: nobody hears it any more
    await wait_for(lambda: _state_is(fab, DEP, "disconnected"), "the adapter to notice", within=15)
    last = _at((await fab.tool(DEP)).get("last_signal_at"))
    await asyncio.sleep(2.5)
    assert await _watchdog(fab, silence_s=2.0) == [DEP]
    down = await fab.tool(DEP)
    assert (down["e10_state"], down["e10_substate"]) == ("UDT", "UDT.NO_SIGNAL")
    assert last is not None
    assert _at(down["state_since"]) == last  # silent from the last signal

    await fab.start_sim(DEP)  # back: the resynchronisation reads the item state
    await wait_for(lambda: _state_is(fab, DEP, "connected"), "reconnected", within=20)
    await wait_for(lambda: _e10_is(fab, DEP, "SBY"), "the tool available again", within=10)
    history = (await fab.api.get(f"/api/v1/equipment/{DEP}/state-history")).json()["items"]
    assert [h["substate"] for h in history[:2]] == ["SBY.NO_PRODUCT", "UDT.NO_SIGNAL"]


async def test_a_silent_tool_goes_no_signal_and_is_back_when_it_speaks_again(fab: Fab) -> None:
    """Connected but silent (the server answers, the tool publishes nothing): no signal
    stamps, so the watchdog puts it into NO_SIGNAL; when it publishes again the adapter
    re-reads its state without a reconnect, and that ends the NO_SIGNAL."""
    await _ready(fab, DEP)
    await fab.sims[DEP].go_silent()
    await wait_for(lambda: _state_is(fab, DEP, "stale"), "the adapter to call it stale", within=15)
    await asyncio.sleep(2.5)
    assert DEP in await _watchdog(fab, silence_s=2.0)  # (with the tools no sim stands in for)
    assert (await fab.tool(DEP))["e10_substate"] == "UDT.NO_SIGNAL"
    registry = fab.registries[0][0]
    adapter = next(a for a in registry.adapters.values() if a.tool.code == DEP)

    await fab.sims[DEP].resume_updates()
    await wait_for(lambda: _state_is(fab, DEP, "connected"), "connected again", within=15)
    await wait_for(lambda: _e10_is(fab, DEP, "SBY"), "the tool available again", within=10)
    assert adapter.sessions == 1  # the same session throughout: no reconnect


async def _signal_after(fab: Fab, before: datetime | None) -> bool:
    now = _at((await fab.tool(DEP)).get("last_signal_at"))
    return now is not None and (before is None or now > before)


async def _e10_is(fab: Fab, code: str, state: str) -> bool:
    return bool((await fab.tool(code))["e10_state"] == state)


async def test_operator_pause_and_resume_through_the_api(fab: Fab) -> None:
    await _ready(fab, DEP, speed=20)  # 5 wafers: about 10 s, time to pause and resume
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    order = job["job_order_id"]
    await fab.wait_job(order, "running")

    r = await fab.api.post(f"/api/v1/jobs/{order}/commands", json={"command": "pause"})
    assert r.status_code == 200, r.text
    paused = await fab.wait_job(order, "paused", "completed")
    assert paused["status"] == "paused"
    assert fab.sims[DEP].tool.jobs[order].state.value == "Interrupted"
    wafers_then = fab.sims[DEP].tool.wafers_processed_total
    await asyncio.sleep(1.0)
    assert fab.sims[DEP].tool.wafers_processed_total == wafers_then  # really held
    assert (await fab.lot(lot))["state"] == "Running"  # a paused job keeps its lot

    r = await fab.api.post(f"/api/v1/jobs/{order}/commands", json={"command": "resume"})
    assert r.status_code == 200, r.text
    await fab.wait_job(order, "running", "completed")
    done = await fab.wait_job(order, "completed", within=60)
    assert done["status"] == "completed"
    detail = await fab.lot(lot)
    assert (detail["state"], detail["step"]["sequence"]) == ("Waiting", 30)
    history = await fab.history(lot)
    assert sum(1 for e in history if e["event_type"] == "TRACK_OUT") == 2
    assert list(fab.sims[DEP].tool.jobs) == [order]  # started once


async def test_only_the_selected_process_values_are_kept(fab: Fab) -> None:
    await fab.start_sim(DEP, speed=60)
    registry = fab.start_adapter(process_values=("Chamber*",))
    await wait_for(lambda: _state_is(fab, DEP, "connected"), f"{DEP} connected", within=20)
    adapter = next(a for a in registry.adapters.values() if a.tool.code == DEP)
    assert adapter._session is not None
    assert adapter._session.process_value_names == {"ChamberTemperature", "ChamberPressure"}
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    await fab.wait_job(job["job_order_id"], "completed")
    async with unit_of_work(fab.db, write=False) as session:
        names = set(
            await session.scalars(
                select(ProcessValueSummary.name).where(ProcessValueSummary.substrate_id == "")
            )
        )
    assert names == {"ChamberTemperature", "ChamberPressure"}
