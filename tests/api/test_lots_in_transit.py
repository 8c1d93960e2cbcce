"""Lots on their way to another fab: in the destination's WIP (with the expected arrival from
the transfer time), queue and dispatch lists (never started before received); and a shipment
recalled before it is received."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import start


async def _ship(client, code: str, to_fab: str = "F2") -> None:
    shipped = await client.post(f"/api/v1/lots/{code}/ship", json={"to_fab": to_fab})
    assert shipped.status_code == 200, shipped.text


async def _transfer_time(client, seconds: int) -> None:
    r = await client.put(
        "/api/v1/dispatch/transfer-times",
        json={"from_fab": "F1", "to_fab": "F2", "time_s": seconds},
    )
    assert r.status_code == 200, r.text


async def _f2_wetc_option(client, code: str) -> dict:
    answer = (await client.get(f"/api/v1/dispatch/lots/{code}/where-next")).json()
    (option,) = [o for o in answer["options"] if o["tool"] == "F2-WETC01"]
    return option


async def test_a_shipped_lot_is_arriving_wip_of_the_destination(client, clock):
    await _transfer_time(client, 2 * 3600)
    other = (await start(client))["code"]  # an F1 lot at WET_CLEAN, to look at F2's queue
    queue_before = (await _f2_wetc_option(client, other))["queue_s"]
    code = (await start(client))["code"]
    await _ship(client, code)
    clock.advance(timedelta(minutes=30))

    arriving = (await client.get("/api/v1/lots/in-transit?fab=F2&direction=arriving")).json()
    (entry,) = [a for a in arriving if a["lot"] == code]
    assert (entry["from_fab"], entry["to_fab"], entry["step_sequence"]) == ("F1", "F2", 10)
    shipped_at = datetime.fromisoformat(entry["shipped_at"])
    arrival = datetime.fromisoformat(entry["expected_arrival_at"])
    assert arrival - shipped_at == timedelta(hours=2)  # the configured transfer time
    assert entry["remaining_s"] == 1.5 * 3600
    # The origin sees it leaving, not arriving.
    leaving = (await client.get("/api/v1/lots/in-transit?fab=F1&direction=leaving")).json()
    assert code in {a["lot"] for a in leaving}
    assert code not in {
        a["lot"]
        for a in (await client.get("/api/v1/lots/in-transit?fab=F1&direction=arriving")).json()
    }

    # The destination's dispatcher sees it coming, never starts it before it is received.
    listing = (await client.get("/api/v1/dispatch/tools/F2-WETC01/list")).json()
    assert code not in {r["lot"] for r in listing["ranked"]}
    (excluded,) = [e for e in listing["excluded"] if e["lot"] == code]
    (reason,) = excluded["reasons"]
    assert reason["code"] == "lot.in_transit"
    assert "arrives about" in reason["detail"]
    assert "once received" in reason["detail"]
    # ... and where-next counts it in F2's queue for the group (one 40-minute step, one tool).
    assert (await _f2_wetc_option(client, other))["queue_s"] == queue_before + 2400

    received = await client.post(f"/api/v1/lots/{code}/receive", json={})
    assert received.status_code == 200, received.text
    listing = (await client.get("/api/v1/dispatch/tools/F2-WETC01/list")).json()
    assert code in {r["lot"] for r in listing["ranked"]}
    assert code not in {
        a["lot"] for a in (await client.get("/api/v1/lots/in-transit?fab=F2")).json()
    }


async def test_a_shipment_is_recalled_before_it_is_received(client, client_as):
    lot = await start(client)
    code = lot["code"]
    await _ship(client, code)
    no_reason = await client.post(f"/api/v1/lots/{code}/recall", json={})
    assert_problem(no_reason, 422, "request.invalid")
    # Operators ship and receive; they may call a shipment back too (lot.transfer).
    recalled = await client_as("t-operator").post(
        f"/api/v1/lots/{code}/recall", json={"reason": "wrong destination"}
    )
    assert recalled.status_code == 200, recalled.text
    answer = recalled.json()
    assert (answer["state"], answer["fab"], answer["step"]["sequence"]) == ("Waiting", "F1", 10)
    assert code not in {a["lot"] for a in (await client.get("/api/v1/lots/in-transit")).json()}
    events = (await client.get(f"/api/v1/lots/{code}/history")).json()["items"]
    assert [e["event_type"] for e in events] == ["START", "SHIP", "RECALL"]
    assert events[-1]["reason"] == "wrong destination"
    assert events[-1]["after"]["to_fab"] == "F2"
    assert events[-1]["actor"] == "t-operator"
    # Nothing to recall any more; it runs at home again.
    again = await client.post(f"/api/v1/lots/{code}/recall", json={"reason": "twice"})
    assert_problem(again, 409, "lot.not_in_transit")
    listing = (await client.get("/api/v1/dispatch/tools/F1-WETC01/list")).json()
    assert code in {r["lot"] for r in listing["ranked"]}
    # The audit trail has the shipment row's change, by whom and why.
    audit = await client.get(
        "/api/v1/audit", params={"target_type": "lot_transfer", "actor": "t-operator"}
    )
    assert audit.status_code == 200, audit.text
    (row,) = audit.json()["items"]
    assert (row["action"], row["after"]["recall_reason"]) == ("update", "wrong destination")

    # Shipped again, it travels on a new shipment: receiving it takes that one.
    await _ship(client, code)
    received = await client.post(f"/api/v1/lots/{code}/receive", json={})
    assert (received.json()["state"], received.json()["fab"]) == ("Waiting", "F2")
    late = await client.post(f"/api/v1/lots/{code}/recall", json={"reason": "too late"})
    assert_problem(late, 409, "lot.not_in_transit")


async def test_a_lot_held_on_the_road_comes_back_held(client):
    code = (await start(client))["code"]
    await _ship(client, code)
    held = await client.post(
        f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "check"}
    )
    assert held.status_code == 200, held.text
    recalled = await client.post(f"/api/v1/lots/{code}/recall", json={"reason": "inspect"})
    assert recalled.status_code == 200, recalled.text
    assert (recalled.json()["state"], recalled.json()["fab"]) == ("OnHold", "F1")
