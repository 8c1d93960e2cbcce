"""A retried request gets the first answer back — a refusal included. A refusal that commits what
it did (the Q-time hold placed at a refused track-in) is replayed as the same problem, never as
an empty success, and the retry changes nothing."""

from __future__ import annotations

from datetime import timedelta

from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import SIGNED, move, start, tools_for


async def test_a_retried_refusal_that_kept_its_changes_is_replayed_as_the_same_problem(
    client, clock
):
    lot = await start(client)
    code = lot["code"]
    await client.post(f"/api/v1/lots/{code}/jump", json={"to_sequence": 110, "signature": SIGNED})
    await move(client, code)
    clock.advance(timedelta(hours=5))  # the 4 h window to GATE_OX has run out
    waiting = (await client.get(f"/api/v1/lots/{code}")).json()
    tool = (await tools_for(client, waiting))[0]
    headers = {"Idempotency-Key": "track-in-after-qtime-0001"}

    first = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool}, headers=headers)
    assert_problem(first, 409, "lot.qtime_expired")
    retry = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool}, headers=headers)
    assert_problem(retry, 409, "lot.qtime_expired")
    assert retry.json()["detail"] == first.json()["detail"]
    assert retry.headers.get("idempotent-replayed") == "true"
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    assert [h["hold_code"] for h in detail["holds"]] == ["QTIME_EXPIRED"]  # one hold, not two


async def test_a_refusal_that_changed_nothing_runs_again_on_retry(client):
    lot = await start(client)
    code = lot["code"]
    headers = {"Idempotency-Key": "hold-unknown-code-0001"}
    body = {"hold_code": "NOPE", "reason": "r"}
    first = await client.post(f"/api/v1/lots/{code}/hold", json=body, headers=headers)
    assert_problem(first, 404, "hold.unknown_code")
    # Nothing was kept, the claim rolled back with it: the retry is judged afresh.
    retry = await client.post(f"/api/v1/lots/{code}/hold", json=body, headers=headers)
    assert_problem(retry, 404, "hold.unknown_code")
    assert retry.headers.get("idempotent-replayed") is None
