"""Tool and reticle usage counts only what ran: a job withdrawn or refused before the tool
processed anything gives back the wafers its track-in counted (PM plans by wafer count and
reticle limits measure against these counters)."""

from __future__ import annotations

from sqlalchemy import select

from mes.equipment.models import Equipment
from tests.api.test_lot_transactions import start


async def _wafers_on(session, tool: str) -> int:
    session.expire_all()
    return int(
        await session.scalar(select(Equipment.wafers_processed).where(Equipment.code == tool))
    )


async def test_a_withdrawn_job_leaves_no_phantom_usage_on_the_tool(client, session):
    before = await _wafers_on(session, "F1-WETC01")
    code = (await start(client, wafer_count=7))["code"]
    job = await client.post("/api/v1/jobs", json={"tool": "F1-WETC01", "lots": [code]})
    assert job.status_code == 201, job.text
    assert await _wafers_on(session, "F1-WETC01") == before + 7  # counted at track-in
    withdrawn = await client.post(
        f"/api/v1/jobs/{job.json()['job_order_id']}/commands", json={"command": "abort"}
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert (await client.get(f"/api/v1/lots/{code}")).json()["state"] == "Waiting"
    assert await _wafers_on(session, "F1-WETC01") == before
    history = (await client.get(f"/api/v1/lots/{code}/history", params={"limit": 50})).json()
    assert history["items"][-1]["after"]["usage_given_back"] == 7


async def test_a_manual_run_keeps_its_usage(client, session):
    before = await _wafers_on(session, "F1-WETC01")
    code = (await start(client, wafer_count=4))["code"]
    await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01"})
    await client.post(f"/api/v1/lots/{code}/track-out", json={})
    assert await _wafers_on(session, "F1-WETC01") == before + 4
