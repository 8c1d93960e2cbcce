"""Event-driven dispatch: a committed change that gives the dispatcher something to do (a lot
waiting at a step, a tool freed or back up) wakes the fab's dispatcher at once; a refused
change wakes nobody; on PostgreSQL the wake-up reaches other processes by NOTIFY."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch.scheduler import Dispatcher, Mode
from mes.kit import wakeups
from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import start
from tests.databases import BACKEND


@pytest.fixture
def woken():
    seen: list[frozenset[int]] = []
    unsubscribe = wakeups.subscribe(seen.append)
    yield seen
    unsubscribe()


async def test_a_lot_ready_to_run_wakes_its_fab_and_a_refusal_does_not(client, woken):
    lot = await start(client)
    assert woken, "starting a lot (Waiting at its first step) asks for the dispatcher"
    (fabs,) = set(woken)
    woken.clear()
    tin = await client.post(f"/api/v1/lots/{lot['code']}/track-in", json={"tool": "F1-WETC01"})
    assert tin.status_code == 200, tin.text
    assert woken == []  # a track-in gives the dispatcher nothing new to do
    again = await client.post(f"/api/v1/lots/{lot['code']}/track-in", json={"tool": "F1-WETC02"})
    assert_problem(again, 409, "lot.running")
    assert woken == []  # refused and rolled back: no wake-up
    out = await client.post(f"/api/v1/lots/{lot['code']}/track-out", json={})
    assert out.status_code == 200, out.text
    assert woken == [fabs]  # the wet bench is free and the lot waits at its next step


async def test_a_tool_coming_back_up_wakes_its_fab(client, woken):
    tool = (await client.get("/api/v1/equipment/F1-WETC01")).json()
    body = {"version": tool["version"], "state": "UDT", "reason": "leak"}
    assert (await client.post("/api/v1/equipment/F1-WETC01/state", json=body)).status_code == 200
    assert woken == []  # going down frees nothing
    tool = (await client.get("/api/v1/equipment/F1-WETC01")).json()
    body = {"version": tool["version"], "state": "SBY", "reason": "fixed"}
    assert (await client.post("/api/v1/equipment/F1-WETC01/state", json=body)).status_code == 200
    assert len(woken) == 1


async def test_the_dispatcher_decides_on_a_wake_up_not_a_whole_interval_later(client, db, clock):
    dispatcher = Dispatcher(
        db,
        clock,
        {"F1": Mode.AUTO},
        owner="t-wake",
        interval_s=3600,
        lease_ttl_s=7200,
        min_gap_s=0,
    )
    # The app and the dispatcher share the test's one connection: they take turns (the
    # test touches the database only while the dispatcher waits).
    running = asyncio.create_task(dispatcher.run())
    try:
        for _ in range(200):  # the first (periodic) cycle: nothing to do yet
            if dispatcher.cycles:
                break
            await asyncio.sleep(0.05)
        assert dispatcher.leading == {"F1"}
        clock.advance(timedelta(seconds=1))
        lot = await start(client, priority_class="hot")
        for _ in range(200):  # an hour-long interval: only a wake-up runs a second cycle
            if dispatcher.cycles >= 2:
                break
            await asyncio.sleep(0.05)
        assert dispatcher.wakeups == 1
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    jobs = (await client.get(f"/api/v1/lots/{lot['code']}/jobs")).json()
    assert [j["requested_by"] for j in jobs] == ["dispatcher"]


@pytest.mark.skipif(BACKEND != "postgresql", reason="NOTIFY is PostgreSQL's")
async def test_a_wake_up_reaches_another_process_by_notify(engine):
    heard: asyncio.Queue[frozenset[int]] = asyncio.Queue()
    listening = asyncio.create_task(
        wakeups.listen_for_wakeups(engine, lambda fabs: heard.put_nowait(frozenset(fabs)))
    )
    try:
        await asyncio.sleep(0.5)  # LISTEN is in place
        async with AsyncSession(engine) as session:
            wakeups.request(session, 41)
            wakeups.request(session, 42)
            await session.rollback()  # nothing committed: nothing sent
        async with AsyncSession(engine) as session:
            wakeups.request(session, 7)
            await session.commit()
        async with asyncio.timeout(5):
            assert await heard.get() == frozenset({7})
        assert heard.empty()
    finally:
        listening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listening
