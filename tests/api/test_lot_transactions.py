"""Lot transactions through the API: start, moves, holds, split/merge, scrap, transfers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.api.problems import assert_problem

SIGNED = {"reason": "checked on the floor"}


async def start(client, **extra) -> dict:
    body = {"product": "LOGIC28", "fab": "F1", "wafer_count": 5, **extra}
    response = await client.post("/api/v1/lots", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def tools_for(client, lot: dict) -> list[str]:
    group = lot["step"]["tool_group"]
    listed = await client.get(
        "/api/v1/equipment", params={"fab": lot["fab"], "tool_group": group, "limit": 50}
    )
    return [t["code"] for t in listed.json()["items"]]


async def move(client, code: str, **out) -> dict:
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    tool = (await tools_for(client, lot))[0]
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool})
    assert tin.status_code == 200, tin.text
    tout = await client.post(f"/api/v1/lots/{code}/track-out", json=out)
    assert tout.status_code == 200, tout.text
    return tout.json()


async def test_start_assigns_codes_wafers_and_first_step(client):
    lot = await start(client, carrier="F1-FP0007", priority_class="hot")
    assert lot["code"].startswith("L26-")
    assert (lot["state"], lot["wafer_count"], lot["carrier"]) == ("Waiting", 5, "F1-FP0007")
    assert lot["step"]["sequence"] == 10
    detail = (await client.get(f"/api/v1/lots/{lot['code']}")).json()
    assert [w["slot"] for w in detail["wafers"]] == [1, 2, 3, 4, 5]
    second = await start(client)
    assert int(second["code"][-4:]) == int(lot["code"][-4:]) + 1
    in_use = await client.post(
        "/api/v1/lots", json={"product": "LOGIC28", "fab": "F1", "carrier": "F1-FP0007"}
    )
    assert_problem(in_use, 409, "carrier.not_available")


async def test_bulk_start(client):
    response = await client.post(
        "/api/v1/lots/bulk-start", json={"product": "ANALOG180", "fab": "F2", "count": 4}
    )
    assert response.status_code == 201, response.text
    lots = response.json()["lots"]
    assert len(lots) == 4
    assert len({lot["code"] for lot in lots}) == 4


async def test_track_in_returns_the_recipe_and_track_out_moves_on(client):
    lot = await start(client)
    tool = (await tools_for(client, lot))[0]
    tin = await client.post(f"/api/v1/lots/{lot['code']}/track-in", json={"tool": tool})
    assert tin.status_code == 200, tin.text
    result = tin.json()
    assert result["recipe"]["name"] == "WETC_PRECLEAN"
    assert result["recipe"]["version"] == 1
    assert result["lot"]["state"] == "Running"
    assert (await client.get(f"/api/v1/equipment/{tool}")).json()["e10_state"] == "PRD"
    again = await client.post(f"/api/v1/lots/{lot['code']}/track-in", json={"tool": tool})
    assert_problem(again, 409, "lot.running")
    out = await client.post(f"/api/v1/lots/{lot['code']}/track-out", json={})
    assert out.status_code == 200, out.text
    assert (out.json()["state"], out.json()["step"]["sequence"]) == ("Waiting", 20)
    assert (await client.get(f"/api/v1/equipment/{tool}")).json()["e10_state"] == "SBY"


async def test_track_in_refusals(client, client_as):
    lot = await start(client)
    code = lot["code"]
    wrong_group = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-LI9301"})
    assert_problem(wrong_group, 409, "tool.wrong_group")
    other_fab = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F2-WETC01"})
    assert_problem(other_fab, 409, "tool.other_fab")
    wrong_step = await client.post(
        f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01", "step_sequence": 20}
    )
    assert_problem(wrong_step, 409, "lot.wrong_step")
    stale = await client.post(
        f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01"}, headers={"If-Match": "99"}
    )
    assert_problem(stale, 409, "lot.stale_version")
    async with client_as("t-operator") as uncertified:
        refused = await uncertified.post(
            f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01"}
        )
    assert_problem(refused, 403, "user.not_certified")
    tool = (await client.get("/api/v1/equipment/F1-WETC02")).json()
    await client.post(
        "/api/v1/equipment/F1-WETC02/state", json={"version": tool["version"], "state": "UDT"}
    )
    down = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC02"})
    assert_problem(down, 409, "tool.not_available")
    await client.post(f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "x"})
    held = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01"})
    assert_problem(held, 409, "lot.on_hold")


async def test_holds_stack_and_release_needs_every_one(client, client_as):
    lot = await start(client)
    code = lot["code"]
    for hold_code in ("QUALITY", "OPERATOR"):
        held = await client.post(
            f"/api/v1/lots/{code}/hold", json={"hold_code": hold_code, "reason": "look"}
        )
        assert held.json()["state"] == "OnHold"
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    assert sorted(h["hold_code"] for h in detail["holds"]) == ["OPERATOR", "QUALITY"]
    async with client_as("t-operator") as operator:
        # An operator may release OPERATOR holds but not QUALITY ones (supervisor).
        refused = await operator.post(
            f"/api/v1/lots/{code}/release",
            json={
                "hold_code": "QUALITY",
                "signature": {**SIGNED, "password": "role-account-password"},
            },
        )
        assert_problem(refused, 403, "hold.release_role")
        partly = await operator.post(
            f"/api/v1/lots/{code}/release",
            json={
                "hold_code": "OPERATOR",
                "signature": {**SIGNED, "password": "role-account-password"},
            },
        )
    assert partly.status_code == 200, partly.text
    assert partly.json()["state"] == "OnHold"
    done = await client.post(f"/api/v1/lots/{code}/release", json={"signature": SIGNED})
    assert done.json()["state"] == "Waiting"
    holds = (await client.get("/api/v1/lots/holds", params={"fab": "F1"})).json()
    assert all(h["lot"] != code for h in holds["items"])
    unknown = await client.post(
        f"/api/v1/lots/{code}/hold", json={"hold_code": "NOPE", "reason": "x"}
    )
    assert_problem(unknown, 404, "hold.unknown_code")


async def test_idempotent_retry_applies_once(client):
    lot = await start(client)
    code = lot["code"]
    headers = {"Idempotency-Key": "retry-0001-abcdef"}
    first = await client.post(
        f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "r"}, headers=headers
    )
    second = await client.post(
        f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "r"}, headers=headers
    )
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replayed") == "true"
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    assert len(detail["holds"]) == 1
    reused = await client.post(
        f"/api/v1/lots/{code}/hold", json={"hold_code": "OPERATOR", "reason": "r"}, headers=headers
    )
    assert_problem(reused, 422, "idempotency.key_reused")


async def test_sampling_rework_and_completion(client):
    lot = await start(client, product="MONITOR", wafer_count=3)
    code = lot["code"]
    history = []
    for _ in range(10):
        current = (await client.get(f"/api/v1/lots/{code}")).json()
        if current["state"] == "Completed":
            break
        history.append(current["step"]["sequence"])
        await move(client, code)
    final = (await client.get(f"/api/v1/lots/{code}")).json()
    assert final["state"] == "Completed"
    assert final["ended_at"] is not None
    assert history == [10, 20, 30, 40, 50]


async def test_rework_returns_and_then_holds_at_the_limit(client):
    lot = await start(client)
    code = lot["code"]
    # Move to GATE_OVL (sequence 160), which reworks back to GATE_LITHO (150), limit 2.
    jumped = await client.post(
        f"/api/v1/lots/{code}/jump", json={"to_sequence": 160, "signature": SIGNED}
    )
    assert jumped.status_code == 200, jumped.text
    for expected in (150, 150):
        after = await move(client, code, outcome="rework")
        assert after["step"]["sequence"] == expected
        await move(client, code)  # litho again, back to 160
    limited = await move(client, code, outcome="rework")
    assert (limited["state"], limited["step"]["sequence"]) == ("OnHold", 160)
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    assert [h["hold_code"] for h in detail["holds"]] == ["REWORK_LIMIT"]


async def test_qtime_expiry_holds_the_lot_instead_of_track_in(client, clock):
    lot = await start(client)
    code = lot["code"]
    # GATE_OX_CLEAN (110) opens a 4-hour window to GATE_OX (120).
    await client.post(f"/api/v1/lots/{code}/jump", json={"to_sequence": 110, "signature": SIGNED})
    await move(client, code)
    clock.advance(timedelta(hours=5))
    furnace = (await client.get(f"/api/v1/lots/{code}")).json()
    tool = (await tools_for(client, furnace))[0]
    refused = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool})
    assert_problem(refused, 409, "lot.qtime_expired")
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    assert detail["state"] == "OnHold"
    assert [h["hold_code"] for h in detail["holds"]] == ["QTIME_EXPIRED"]


async def test_future_hold_fires_on_arrival(client):
    lot = await start(client)
    code = lot["code"]
    armed = await client.post(
        f"/api/v1/lots/{code}/future-actions",
        json={"step_sequence": 20, "hold_code": "ENGINEERING", "reason": "check oxide"},
    )
    assert armed.status_code == 201, armed.text
    assert len((await client.get(f"/api/v1/lots/{code}/future-actions")).json()) == 1
    after = await move(client, code)
    assert (after["state"], after["step"]["sequence"]) == ("OnHold", 20)
    assert (await client.get(f"/api/v1/lots/{code}/future-actions")).json() == []
    passed = await client.post(
        f"/api/v1/lots/{code}/future-actions",
        json={"step_sequence": 10, "hold_code": "ENGINEERING", "reason": "too late"},
    )
    assert_problem(passed, 422, "lot.step_passed")


async def test_split_and_merge_conserve_wafers_with_genealogy(client):
    lot = await start(client, wafer_count=6)
    code = lot["code"]
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    moving = [w["scribe_id"] for w in detail["wafers"][:2]]
    split = await client.post(f"/api/v1/lots/{code}/split", json={"wafers": moving})
    assert split.status_code == 201, split.text
    parent, child = split.json()["parent"], split.json()["child"]
    assert child["code"] == f"{code}.01"
    assert (parent["wafer_count"], child["wafer_count"]) == (4, 2)
    tree = (await client.get(f"/api/v1/lots/{child['code']}/genealogy")).json()
    assert [(a["parent"], a["relation"]) for a in tree["ancestors"]] == [(code, "split")]
    merged = await client.post(f"/api/v1/lots/{code}/merge", json={"source": child["code"]})
    assert merged.status_code == 200, merged.text
    assert merged.json()["wafer_count"] == 6
    ended = (await client.get(f"/api/v1/lots/{child['code']}")).json()
    assert (ended["state"], ended["wafer_count"]) == ("Terminated", 0)
    all_out = await client.post(
        f"/api/v1/lots/{code}/split",
        json={"wafers": [w["scribe_id"] for w in detail["wafers"]]},
    )
    assert_problem(all_out, 422, "lot.split_all")


async def test_merge_needs_the_same_step(client):
    one, two = await start(client), await start(client)
    await move(client, two["code"])
    response = await client.post(f"/api/v1/lots/{one['code']}/merge", json={"source": two["code"]})
    assert_problem(response, 409, "lot.merge_mismatch")


async def test_scrap_to_zero_scraps_the_lot(client):
    lot = await start(client, wafer_count=2)
    detail = (await client.get(f"/api/v1/lots/{lot['code']}")).json()
    wafers = [w["scribe_id"] for w in detail["wafers"]]
    bad = await client.post(
        f"/api/v1/lots/{lot['code']}/scrap",
        json={"wafers": wafers[:1], "reason_code": "WHATEVER", "signature": SIGNED},
    )
    assert_problem(bad, 422, "lot.unknown_scrap_code")
    one = await client.post(
        f"/api/v1/lots/{lot['code']}/scrap",
        json={"wafers": wafers[:1], "reason_code": "BROKEN", "signature": SIGNED},
    )
    assert (one.json()["state"], one.json()["wafer_count"]) == ("Waiting", 1)
    rest = await client.post(
        f"/api/v1/lots/{lot['code']}/scrap",
        json={"wafers": wafers[1:], "reason_code": "PARTICLES", "signature": SIGNED},
    )
    assert (rest.json()["state"], rest.json()["wafer_count"]) == ("Scrapped", 0)


async def test_bonus_priority_terminate(client):
    lot = await start(client, wafer_count=3)
    code = lot["code"]
    grown = await client.post(
        f"/api/v1/lots/{code}/bonus", json={"count": 2, "reason_code": "FOUND"}
    )
    assert grown.json()["wafer_count"] == 5
    hot = await client.post(
        f"/api/v1/lots/{code}/priority", json={"priority_class": "super_hot", "reason": "customer"}
    )
    assert hot.json()["priority_class"] == "super_hot"
    ended = await client.post(f"/api/v1/lots/{code}/terminate", json={"signature": SIGNED})
    assert ended.json()["state"] == "Terminated"
    late = await client.post(
        f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "x"}
    )
    assert_problem(late, 409, "lot.finished")


async def test_no_bonus_wafers_join_a_lot_on_a_tool_or_travelling(client):
    """Found by the state machine: a bonus during a run made the lot bigger than what the tool
    was charged for at track-in, and a partial track-out then gave back a negative count."""
    lot = await start(client, wafer_count=3)
    code = lot["code"]
    tool = (await tools_for(client, lot))[0]
    assert (await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool})).is_success
    bonus = {"count": 3, "reason_code": "FOUND"}
    assert_problem(await client.post(f"/api/v1/lots/{code}/bonus", json=bonus), 409, "lot.running")
    out = await client.post(f"/api/v1/lots/{code}/track-out", json={})
    assert out.json()["wafer_count"] == 3, out.text
    assert (await client.post(f"/api/v1/lots/{code}/ship", json={"to_fab": "F2"})).is_success
    travelling = await client.post(f"/api/v1/lots/{code}/bonus", json=bonus)
    assert_problem(travelling, 409, "lot.in_transit")
    received = await client.post(f"/api/v1/lots/{code}/receive", json={})
    grown = await client.post(f"/api/v1/lots/{code}/bonus", json=bonus)
    assert (received.status_code, grown.json()["wafer_count"]) == (200, 6), grown.text


async def test_ship_and_receive_between_fabs(client):
    lot = await start(client)
    code = lot["code"]
    shipped = await client.post(f"/api/v1/lots/{code}/ship", json={"to_fab": "F2"})
    assert shipped.json()["state"] == "InTransit"
    early = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F2-WETC01"})
    assert_problem(early, 409, "lot.in_transit")
    received = await client.post(f"/api/v1/lots/{code}/receive", json={})
    assert (received.json()["state"], received.json()["fab"]) == ("Waiting", "F2")
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F2-WETC01"})
    assert tin.status_code == 200, tin.text
    events = (await client.get(f"/api/v1/lots/{code}/history")).json()["items"]
    assert [e["event_type"] for e in events] == ["START", "SHIP", "RECEIVE", "TRACK_IN"]
    assert [e["fab"] for e in events] == ["F1", "F1", "F2", "F2"]


@pytest.mark.parametrize("field", ["state", "wafer_count", "step_id"])
async def test_history_snapshots_chain_to_the_current_state(client, field):
    from mes.lots.rules import fold

    lot = await start(client, wafer_count=4)
    code = lot["code"]
    await move(client, code)
    await client.post(f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "x"})
    events = (await client.get(f"/api/v1/lots/{code}/history")).json()["items"]
    folded = fold((e["before"], e["after"]) for e in events)
    current = (await client.get(f"/api/v1/lots/{code}")).json()
    assert folded["state"] == current["state"]
    assert folded["wafer_count"] == current["wafer_count"]
    assert field in folded
