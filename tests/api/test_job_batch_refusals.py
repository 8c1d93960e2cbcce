"""A furnace batch (POST /jobs with several lots) is all or nothing — also when one lot's refusal
must leave a trace: the Q-time hold stays on that lot, and no other lot of the batch is left
tracked in on the tool without a job."""

from __future__ import annotations

from datetime import timedelta

from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import SIGNED, move, start, tools_for


async def test_one_expired_lot_refuses_the_batch_and_only_it_is_held(client, clock):
    ready = (await start(client))["code"]  # the lower code: tracked in first
    late = (await start(client))["code"]
    # GATE_OX_CLEAN (110) opens a 4-hour window to GATE_OX (120): only the late lot has one.
    await client.post(f"/api/v1/lots/{late}/jump", json={"to_sequence": 110, "signature": SIGNED})
    await move(client, late)
    await client.post(f"/api/v1/lots/{ready}/jump", json={"to_sequence": 120, "signature": SIGNED})
    clock.advance(timedelta(hours=5))
    furnace = (await tools_for(client, (await client.get(f"/api/v1/lots/{ready}")).json()))[0]

    refused = await client.post("/api/v1/jobs", json={"tool": furnace, "lots": [ready, late]})
    assert_problem(refused, 409, "lot.qtime_expired")

    ready_now = (await client.get(f"/api/v1/lots/{ready}")).json()
    assert ready_now["state"] == "Waiting"  # not left Running on the furnace without a job
    late_now = (await client.get(f"/api/v1/lots/{late}")).json()
    assert late_now["state"] == "OnHold"
    assert [h["hold_code"] for h in late_now["holds"]] == ["QTIME_EXPIRED"]
    tool = (await client.get(f"/api/v1/equipment/{furnace}")).json()
    assert tool["e10_state"] == "SBY"
    history = (await client.get(f"/api/v1/lots/{ready}/history", params={"limit": 100})).json()
    assert all(e["event_type"] != "TRACK_IN" for e in history["items"])
