"""PM start against track-ins on the same tool, with real commits: never both.

Both lock the tool row (FOR NO KEY UPDATE on PostgreSQL; SQLite has one writer at a time), so
either the PM starts and no lot gets on the tool, or a lot gets on and the PM start is refused
as busy. Runs on a tool installed under a fresh code, like the lot races.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx

from tests.concurrency.test_lot_races import Fab, committed_db, fab  # noqa: F401

LOTS = 6


async def test_pm_start_and_track_ins_race_to_one_consistent_outcome(fab: Fab) -> None:  # noqa: F811
    lots = await fab.start(count=LOTS, wafer_count=3)
    (tool,) = await fab.install_tools(lots[0]["fab"], lots[0]["step"]["tool_group"], 1)
    plan = f"PM-RACE-{uuid.uuid4().hex[:8].upper()}"
    created = await fab.http.post(
        "/api/v1/pm/plans",
        json={
            "code": plan,
            "name": "race",
            "tool": tool,
            "trigger": "calendar",
            "interval": 30,
            "warning": 1,
        },
    )
    assert created.status_code == 201, created.text

    async def track_in(code: str) -> httpx.Response:
        return await fab.http.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool})

    async def pm_start() -> httpx.Response:
        return await fab.http.post(f"/api/v1/equipment/{tool}/pm/start", json={"plan": plan})

    jobs = [track_in(lot["code"]) for lot in lots]
    jobs.insert(LOTS // 2, pm_start())
    responses = await asyncio.gather(*jobs)
    pm = responses[LOTS // 2]
    ins = responses[: LOTS // 2] + responses[LOTS // 2 + 1 :]
    assert all(r.status_code in (200, 409) for r in responses), [r.text for r in responses]
    on_tool = await fab.lots_on(tool)
    state = (await fab.http.get(f"/api/v1/equipment/{tool}")).json()
    if pm.status_code == 200:
        # The PM won: nothing got on the tool after it, and it is in SDT.PM.
        assert on_tool == []
        assert (state["e10_state"], state["e10_substate"]) == ("SDT", "SDT.PM")
        assert {r.json()["code"] for r in ins} <= {"tool.not_available", "tool.full"}
        done = await fab.http.post(f"/api/v1/equipment/{tool}/pm/complete", json={})
        assert done.status_code == 200, done.text
    else:
        assert pm.json()["code"] == "pm.tool_busy"
        assert len(on_tool) == 1  # a single-lot tool
        assert state["e10_state"] == "PRD"
        outcome = Counter(r.status_code for r in ins)
        assert outcome[200] == 1
