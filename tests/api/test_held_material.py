"""Held material never escapes: a lot with an active hold does not complete at its last step,
and a lot that ends otherwise (terminated, scrapped) closes its holds in a recorded event."""

from __future__ import annotations

from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import SIGNED, move, start, tools_for


async def to_last_step(client) -> dict:
    """A MONITOR lot (steps 10-50) at its last step, running on a tool."""
    lot = await start(client, product="MONITOR", wafer_count=3, carrier="F1-FP0011")
    code = lot["code"]
    for _ in range(4):
        await move(client, code)
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    assert lot["step"]["sequence"] == 50
    tool = (await tools_for(client, lot))[0]
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool})
    assert tin.status_code == 200, tin.text
    return tin.json()["lot"]


async def test_a_lot_held_while_running_its_last_step_stays_on_hold_until_released(client):
    lot = await to_last_step(client)
    code = lot["code"]
    held = await client.post(
        f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "suspect etch"}
    )
    assert held.status_code == 200, held.text
    assert held.json()["state"] == "Running"

    out = await client.post(f"/api/v1/lots/{code}/track-out", json={})
    assert out.status_code == 200, out.text
    after = (await client.get(f"/api/v1/lots/{code}")).json()
    assert after["state"] == "OnHold"
    assert after["step"]["sequence"] == 50
    assert after["ended_at"] is None
    assert after["carrier"] == "F1-FP0011"  # the material stays in its carrier
    assert [h["hold_code"] for h in after["holds"]] == ["QUALITY"]
    # It has run its last step: it cannot run it again.
    tool = (await tools_for(client, after))[0]
    again = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool})
    assert_problem(again, 409, "lot.on_hold")

    released = await client.post(f"/api/v1/lots/{code}/release", json={"signature": SIGNED})
    assert released.status_code == 200, released.text
    done = (await client.get(f"/api/v1/lots/{code}")).json()
    assert done["state"] == "Completed"
    assert done["ended_at"] is not None
    assert done["holds"] == []
    assert done["carrier"] is None
    history = (await client.get(f"/api/v1/lots/{code}/history", params={"limit": 100})).json()
    last = history["items"][-1]
    assert last["event_type"] == "RELEASE"
    assert last["after"]["state"] == "Completed"


async def test_a_hold_armed_after_the_last_track_out_keeps_the_lot(client):
    lot = await start(client, product="MONITOR", wafer_count=2)
    code = lot["code"]
    armed = await client.post(
        f"/api/v1/lots/{code}/future-actions",
        json={
            "step_sequence": 50,
            "kind": "hold_after_track_out",
            "hold_code": "ENGINEERING",
            "reason": "review the monitor before it is closed",
        },
    )
    assert armed.status_code == 201, armed.text
    for _ in range(5):
        await move(client, code)
    after = (await client.get(f"/api/v1/lots/{code}")).json()
    assert (after["state"], after["step"]["sequence"]) == ("OnHold", 50)
    assert [h["hold_code"] for h in after["holds"]] == ["ENGINEERING"]


async def test_releasing_one_of_two_holds_at_the_end_keeps_the_lot_held(client):
    lot = await to_last_step(client)
    code = lot["code"]
    for hold_code in ("QUALITY", "OPERATOR"):
        await client.post(f"/api/v1/lots/{code}/hold", json={"hold_code": hold_code, "reason": "r"})
    await client.post(f"/api/v1/lots/{code}/track-out", json={})
    partly = await client.post(
        f"/api/v1/lots/{code}/release", json={"hold_code": "OPERATOR", "signature": SIGNED}
    )
    assert partly.json()["state"] == "OnHold"
    done = await client.post(f"/api/v1/lots/{code}/release", json={"signature": SIGNED})
    assert done.json()["state"] == "Completed"


async def test_a_terminated_lot_closes_its_holds_in_the_terminate_event(client):
    lot = await start(client)
    code = lot["code"]
    await client.post(f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "r"})
    ended = await client.post(
        # (No "reason": a terminate takes none; unknown fields are refused, not dropped.)
        f"/api/v1/lots/{code}/terminate",
        json={"signature": SIGNED},
    )
    assert ended.status_code == 200, ended.text
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    assert detail["state"] == "Terminated"
    assert detail["holds"] == []
    history = (await client.get(f"/api/v1/lots/{code}/history", params={"limit": 100})).json()
    last = history["items"][-1]
    assert last["event_type"] == "TERMINATE"
    assert last["after"]["active_holds"] == 0
    assert len(last["after"]["closed_holds"]) == 1
    holds = (await client.get("/api/v1/lots/holds", params={"fab": "F1"})).json()
    assert all(h["lot"] != code for h in holds["items"])


async def test_a_manual_track_out_with_wafers_missing_holds_the_lot_at_the_step(client):
    lot = await start(client)
    code = lot["code"]
    tool = (await tools_for(client, lot))[0]
    await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool})
    out = await client.post(f"/api/v1/lots/{code}/track-out", json={"wafers_processed": 3})
    assert out.status_code == 200, out.text
    after = (await client.get(f"/api/v1/lots/{code}")).json()
    assert (after["state"], after["step"]["sequence"]) == ("OnHold", 10)
    [hold] = after["holds"]
    assert hold["hold_code"] == "PARTIAL_RUN"
    assert "3 of 5 wafers processed" in hold["reason"]
    # The tool is free again; the lot waits for an engineer's disposition.
    assert (await client.get(f"/api/v1/equipment/{tool}")).json()["e10_state"] == "SBY"
    released = await client.post(f"/api/v1/lots/{code}/release", json={"signature": SIGNED})
    assert (released.json()["state"], released.json()["step"]["sequence"]) == ("Waiting", 10)


async def test_a_full_track_out_passes(client):
    lot = await start(client)
    out = await move(client, lot["code"], wafers_processed=5)
    assert (out["state"], out["step"]["sequence"]) == ("Waiting", 20)


async def test_a_lot_on_the_road_can_be_held_and_arrives_on_hold(client):
    lot = await start(client)
    code = lot["code"]
    await client.post(f"/api/v1/lots/{code}/ship", json={"to_fab": "F2"})
    held = await client.post(
        f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "excursion"}
    )
    assert held.status_code == 200, held.text
    assert held.json()["state"] == "InTransit"  # still travelling
    received = await client.post(f"/api/v1/lots/{code}/receive", json={})
    assert (received.json()["state"], received.json()["fab"]) == ("OnHold", "F2")
    holds = (await client.get("/api/v1/lots/holds", params={"fab": "F2"})).json()["items"]
    assert [h["lot"] for h in holds] == [code]


async def test_mass_hold_takes_travelling_lots_and_reports_what_it_skipped(client):
    travelling = (await start(client))["code"]
    await client.post(f"/api/v1/lots/{travelling}/ship", json={"to_fab": "F2"})
    waiting = (await start(client))["code"]
    body = {"hold_code": "QUALITY", "reason": "excursion on LOGIC28", "product": "LOGIC28"}
    first = await client.post("/api/v1/lots/mass-hold", json=body)
    assert first.status_code == 200, first.text
    assert sorted(lot["code"] for lot in first.json()["lots"]) == sorted([travelling, waiting])
    assert first.json()["skipped"] == []
    again = await client.post("/api/v1/lots/mass-hold", json=body)
    assert again.json()["lots"] == []
    assert again.json()["skipped"] == [
        {"lot": code, "reason": "already on hold QUALITY"} for code in sorted([travelling, waiting])
    ]


async def test_a_scrapped_wafer_frees_its_slot_for_a_bonus_wafer(client):
    lot = await start(client, wafer_count=25)
    code = lot["code"]
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    broken = next(w["scribe_id"] for w in detail["wafers"] if w["slot"] == 7)
    scrapped = await client.post(
        f"/api/v1/lots/{code}/scrap",
        json={"wafers": [broken], "reason_code": "BROKEN", "signature": SIGNED},
    )
    assert scrapped.json()["wafer_count"] == 24
    bonus = await client.post(
        f"/api/v1/lots/{code}/bonus", json={"count": 1, "reason_code": "FOUND"}
    )
    assert bonus.status_code == 200, bonus.text
    wafers = (await client.get(f"/api/v1/lots/{code}")).json()["wafers"]
    active = [w for w in wafers if w["state"] == "active"]
    assert sorted(w["slot"] for w in active) == list(range(1, 26))
    [gone] = [w for w in wafers if w["state"] == "scrapped"]
    assert (gone["scribe_id"], gone["slot"]) == (broken, None)
