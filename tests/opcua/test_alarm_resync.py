"""An alarm that cleared while the MES was not listening is closed at the next resync: the
tool replays what it still has (ConditionRefresh), and the MES closes what it did not replay."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from mes.db.transaction import unit_of_work
from mes.equipment.models import EquipmentAlarm

from .conftest import Fab, wait_for
from .test_adapter_faults import DEP, _ready, _state_is


async def _open_alarms(fab: Fab) -> list[str]:
    async with unit_of_work(fab.db, write=False) as session:
        rows = await session.scalars(
            select(EquipmentAlarm.alarm_code).where(EquipmentAlarm.cleared_at.is_(None))
        )
        return sorted(rows)


async def test_an_alarm_cleared_during_an_outage_is_closed_at_resync(fab: Fab) -> None:
    await _ready(fab, DEP)
    sim = fab.sims[DEP]
    await sim.raise_alarm("DOOR_OPEN", "load lock door open", severity=300)
    await sim.raise_alarm("LOW_N2", "nitrogen pressure low", severity=400)
    await wait_for(lambda: _opened(fab, ["DOOR_OPEN", "LOW_N2"]), "both alarms recorded")

    await sim.drop_connection(seconds=2.0)
    await wait_for(lambda: _not_connected(fab), "the adapter to notice the outage", within=15)
    # While nobody listens, the operator closes the door and acknowledges: the tool forgets it.
    await sim.command(lambda: sim.tool.clear_alarm("DOOR_OPEN"))
    await sim.command(lambda: sim.tool.acknowledge("DOOR_OPEN"))
    await wait_for(lambda: _state_is(fab, DEP, "connected"), "reconnected", within=30)
    await wait_for(lambda: _opened(fab, ["LOW_N2"]), "the stale alarm closed", within=15)
    await asyncio.sleep(0.5)
    assert await _open_alarms(fab) == ["LOW_N2"]  # the one still active stays open


async def _opened(fab: Fab, codes: list[str]) -> bool:
    return await _open_alarms(fab) == codes


async def _not_connected(fab: Fab) -> bool:
    return not await _state_is(fab, DEP, "connected")
