"""Concurrent writers of one tool: exactly one wins, the others get 409, nothing is lost.

These tests commit for real (no outer transaction), on the suite's own database, and remove
what they created.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm.exc import StaleDataError

from mes.audit.context import AuditContext, bind
from mes.clock import FixedClock
from mes.config import Settings
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.equipment.models import Equipment, EquipmentStateEvent
from mes.equipment.states import DEFAULT_SUBSTATES
from mes.main import create_app
from tests.conftest import NOW, TESTER, bearer

TOOL = "F1-RACE01"
WRITERS = 8


@pytest.fixture
async def committed_db(engine: AsyncEngine) -> AsyncIterator[Database]:
    db = Database(engine)
    yield db
    async with unit_of_work(db) as session:
        bind(session, AuditContext(actor="test", role="system", operation="test.cleanup", at=NOW))
        tool_id = await session.scalar(select(Equipment.id).where(Equipment.code == TOOL))
        if tool_id is not None:
            await session.execute(
                delete(EquipmentStateEvent).where(EquipmentStateEvent.equipment_id == tool_id)
            )
            await session.execute(delete(Equipment).where(Equipment.id == tool_id))


@pytest.fixture
async def live_client(
    settings: Settings, committed_db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, database=committed_db, clock=FixedClock(NOW))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mes.test", headers=bearer(TESTER)
    ) as client:
        created = await client.post(
            "/api/v1/equipment",
            json={
                "code": TOOL,
                "name": "race",
                "fab": "F1",
                "area": "ETCH",
                "tool_group": "ETCH_POLY",
                "chambers": ["PM1", "PM2"],
            },
        )
        assert created.status_code == 201, created.text
        yield client


async def test_concurrent_state_changes_on_one_version_apply_once(live_client):
    # Distinct substates from the seeded table, so the winner can be told apart.
    substates = sorted(DEFAULT_SUBSTATES)[:WRITERS]

    async def change(n: int) -> httpx.Response:
        code = substates[n]
        return await live_client.post(
            f"/api/v1/equipment/{TOOL}/state",
            json={"version": 1, "state": code[:3], "substate": code},
        )

    responses = await asyncio.gather(*(change(n) for n in range(WRITERS)))
    outcome = Counter(r.status_code for r in responses)
    assert outcome == {200: 1, 409: WRITERS - 1}, [r.text for r in responses]
    assert all(r.json()["code"] == "tool.stale_version" for r in responses if r.status_code == 409)

    winner = next(r for r in responses if r.status_code == 200).json()
    tool = (await live_client.get(f"/api/v1/equipment/{TOOL}")).json()
    assert tool["version"] == 2
    assert tool["e10_substate"] == winner["e10_substate"]
    history = (await live_client.get(f"/api/v1/equipment/{TOOL}/state-history")).json()
    # The install record plus exactly one change: the losers left no trace.
    assert history["total"] == 2


async def test_chamber_and_tool_writers_do_not_overwrite_each_other(live_client):
    bodies = [
        {"version": 1, "state": "SDT", "substate": "SDT.PM", "chamber": "PM1"},
        {"version": 1, "state": "UDT", "substate": "UDT.REPAIR"},
    ]
    responses = await asyncio.gather(
        *(live_client.post(f"/api/v1/equipment/{TOOL}/state", json=b) for b in bodies)
    )
    assert sorted(r.status_code for r in responses) == [200, 409]
    tool = (await live_client.get(f"/api/v1/equipment/{TOOL}")).json()
    assert tool["version"] == 2


@pytest.mark.usefixtures("live_client")
async def test_orm_version_guard_catches_a_writer_that_skipped_the_lock(backend, committed_db):
    """Even code that forgets SELECT … FOR UPDATE cannot lose an update: the version column
    turns the second write into a StaleDataError."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers with BEGIN IMMEDIATE; two open writers deadlock")
    async with committed_db.write_sessions() as first, committed_db.write_sessions() as second:
        for writer in (first, second):
            bind(writer, AuditContext(actor="test", role="system", operation="test.race", at=NOW))
        stmt = select(Equipment).where(Equipment.code == TOOL)
        a = (await first.scalars(stmt)).one()
        b = (await second.scalars(stmt)).one()
        a.name = "first"
        await first.commit()
        b.name = "second"
        with pytest.raises(StaleDataError):
            await second.commit()
    async with unit_of_work(committed_db, write=False) as session:
        assert (
            await session.scalars(select(Equipment.name).where(Equipment.code == TOOL))
        ).one() == "first"
