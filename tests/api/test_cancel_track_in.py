"""Cancel a track-in made by mistake: the lot waits at its step again, the tool, its counters
and the Q-time windows are as before the track-in; refused while a job for the lot is open."""

from __future__ import annotations

from sqlalchemy import select

from mes.equipment.models import Equipment
from mes.lots.models import Lot, QTimeWindow
from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import SIGNED, move, start, tools_for


async def _counter(session, tool: str) -> int:
    session.expire_all()
    return int(
        await session.scalar(select(Equipment.wafers_processed).where(Equipment.code == tool))
    )


async def test_a_supervisor_undoes_a_track_in_and_everything_it_changed(client, client_as, session):
    code = (await start(client))["code"]
    await client.post(f"/api/v1/lots/{code}/jump", json={"to_sequence": 110, "signature": SIGNED})
    await move(client, code)  # leaves 110: the 4-hour window to the furnace (120) opens
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    furnace = (await tools_for(client, lot))[0]
    before = await _counter(session, furnace)
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": furnace})
    assert tin.status_code == 200, tin.text
    assert await _counter(session, furnace) == before + 5

    async with client_as("t-operator") as operator:
        denied = await operator.post(
            f"/api/v1/lots/{code}/cancel-track-in", json={"signature": SIGNED}
        )
    assert_problem(denied, 403, "auth.forbidden")
    cancelled = await client.post(
        f"/api/v1/lots/{code}/cancel-track-in",
        json={"signature": {"reason": "wrong furnace"}},
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["state"], cancelled.json()["step"]["sequence"]) == ("Waiting", 120)
    tool = (await client.get(f"/api/v1/equipment/{furnace}")).json()
    assert tool["e10_state"] == "SBY"
    assert await _counter(session, furnace) == before
    windows = await session.scalars(
        select(QTimeWindow.status).join(Lot, Lot.id == QTimeWindow.lot_id).where(Lot.code == code)
    )
    assert [w.value for w in windows] == ["open"]  # the furnace must still start in time
    history = (await client.get(f"/api/v1/lots/{code}/history", params={"limit": 100})).json()
    last = history["items"][-1]
    assert (last["event_type"], last["reason"]) == ("TRACK_IN_CANCELLED", "wrong furnace")
    again = await client.post(f"/api/v1/lots/{code}/cancel-track-in", json={"signature": SIGNED})
    assert_problem(again, 409, "lot.not_running")


async def test_a_lot_in_an_open_job_is_not_cancelled_by_hand(client):
    code = (await start(client))["code"]
    job = await client.post(f"/api/v1/lots/{code}/jobs", json={"tool": "F1-WETC02"})
    assert job.status_code == 201, job.text
    refused = await client.post(f"/api/v1/lots/{code}/cancel-track-in", json={"signature": SIGNED})
    assert_problem(refused, 409, "lot.job_open")
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    assert lot["state"] == "Running"  # nothing of the cancel was kept
    assert [
        e["event_type"] for e in (await client.get(f"/api/v1/lots/{code}/history")).json()["items"]
    ].count("TRACK_IN_CANCELLED") == 0
