"""Future actions armed on a step the lot never runs — skipped by sampling or jumped past —
fire where the lot goes next instead of staying open forever (and blocking its shipment)."""

from __future__ import annotations

from sqlalchemy import select, update

from mes.routes.models import RouteVersion, Step
from tests.api.test_lot_transactions import SIGNED, move, start


async def _arm(client, code: str, sequence: int, kind: str, reason: str) -> None:
    armed = await client.post(
        f"/api/v1/lots/{code}/future-actions",
        json={
            "step_sequence": sequence,
            "kind": kind,
            "hold_code": "ENGINEERING",
            "reason": reason,
        },
    )
    assert armed.status_code == 201, armed.text


async def _jump(client, code: str, to: int) -> dict:
    jumped = await client.post(
        f"/api/v1/lots/{code}/jump", json={"to_sequence": to, "signature": SIGNED}
    )
    assert jumped.status_code == 200, jumped.text
    return jumped.json()


async def test_actions_on_a_step_sampling_skips_fire_at_the_next_step(client, session):
    logic = select(RouteVersion.id).where(RouteVersion.route.has(code="R-LOGIC28"))
    await session.execute(
        update(Step)
        .where(Step.route_version_id.in_(logic), Step.sequence == 130)
        .values(sampling_rate=0.0)
    )
    await session.flush()
    code = (await start(client))["code"]
    await _jump(client, code, 120)
    await _arm(client, code, 130, "hold_on_arrival", "check the CD before etch")
    await _arm(client, code, 130, "hold_after_track_out", "review the metrology")

    after = await move(client, code)  # 120 → 130 is skipped → 140
    assert (after["state"], after["step"]["sequence"]) == ("OnHold", 140)
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    assert sorted(h["reason"] for h in lot["holds"]) == [
        "check the CD before etch",
        "review the metrology",
    ]
    assert (await client.get(f"/api/v1/lots/{code}/future-actions")).json() == []
    history = (await client.get(f"/api/v1/lots/{code}/history", params={"limit": 100})).json()
    track_out = [e for e in history["items"] if e["event_type"] == "TRACK_OUT"][-1]
    assert track_out["after"]["skipped"] == [130]
    assert len(track_out["after"]["future_actions_carried"]) == 2


async def test_a_jump_past_an_armed_step_fires_its_action_at_the_target(client):
    code = (await start(client))["code"]
    await _arm(client, code, 150, "hold_on_arrival", "engineering split at litho")
    await _arm(client, code, 200, "hold_on_arrival", "still ahead")
    jumped = await _jump(client, code, 170)
    assert (jumped["state"], jumped["step"]["sequence"]) == ("OnHold", 170)
    left = (await client.get(f"/api/v1/lots/{code}/future-actions")).json()
    assert [a["step_sequence"] for a in left] == [200]  # not passed: still armed


async def test_a_jump_back_leaves_actions_ahead_armed(client):
    code = (await start(client))["code"]
    await _jump(client, code, 100)
    await _arm(client, code, 150, "hold_on_arrival", "ahead either way")
    jumped = await _jump(client, code, 50)
    assert jumped["state"] == "Waiting"
    left = (await client.get(f"/api/v1/lots/{code}/future-actions")).json()
    assert [a["step_sequence"] for a in left] == [150]
