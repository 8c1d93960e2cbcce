"""Split and merge keep the lot's plans: a child inherits armed future actions and the rework
already spent; a merged lot keeps both lots' plans and the tighter Q-time deadline."""

from __future__ import annotations

from datetime import timedelta

from tests.api.test_lot_transactions import SIGNED, move, start


async def _wafers(client, code: str) -> list[str]:
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    return [w["scribe_id"] for w in detail["wafers"] if w["state"] == "active"]


async def test_a_split_child_inherits_future_actions_and_rework_counts(client):
    code = (await start(client, wafer_count=6))["code"]
    armed = await client.post(
        f"/api/v1/lots/{code}/future-actions",
        json={"step_sequence": 200, "hold_code": "ENGINEERING", "reason": "check the gate stack"},
    )
    assert armed.status_code == 201, armed.text
    # GATE_OVL (160) reworks back to GATE_LITHO (150), limit 2: spend both reworks.
    await client.post(f"/api/v1/lots/{code}/jump", json={"to_sequence": 160, "signature": SIGNED})
    for _ in range(2):
        await move(client, code, outcome="rework")
        await move(client, code)
    split = await client.post(
        f"/api/v1/lots/{code}/split", json={"wafers": (await _wafers(client, code))[:2]}
    )
    child = split.json()["child"]["code"]
    actions = (await client.get(f"/api/v1/lots/{child}/future-actions")).json()
    assert [(a["step_sequence"], a["hold_code"]) for a in actions] == [(200, "ENGINEERING")]
    # No fresh rework budget for the child: its next rework at 160 hits the limit.
    limited = await move(client, child, outcome="rework")
    assert limited["state"] == "OnHold"
    detail = (await client.get(f"/api/v1/lots/{child}")).json()
    assert [h["hold_code"] for h in detail["holds"]] == ["REWORK_LIMIT"]


async def test_a_merge_keeps_both_plans_and_the_tighter_qtime_deadline(client, clock):
    early, late = (await start(client))["code"], (await start(client))["code"]
    for code in (early, late):
        await client.post(
            f"/api/v1/lots/{code}/jump", json={"to_sequence": 110, "signature": SIGNED}
        )
    await move(client, early)  # opens its 4 h window to GATE_OX (120) now
    clock.advance(timedelta(hours=1))
    await move(client, late)  # ... and this one an hour later
    await client.post(
        f"/api/v1/lots/{early}/future-actions",
        json={"step_sequence": 200, "hold_code": "QUALITY", "reason": "inspect"},
    )
    merged = await client.post(f"/api/v1/lots/{late}/merge", json={"source": early})
    assert merged.status_code == 200, merged.text
    windows = (await client.get("/api/v1/lots/qtime-windows")).json()
    assert [(w["lot"], w["remaining_s"]) for w in windows] == [(late, 3 * 3600)]
    actions = (await client.get(f"/api/v1/lots/{late}/future-actions")).json()
    assert [(a["step_sequence"], a["hold_code"]) for a in actions] == [(200, "QUALITY")]
