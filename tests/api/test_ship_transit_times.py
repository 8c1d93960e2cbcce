"""Shipping checks the lot's open Q-time windows against the configured transfer time between
the two fabs (fab_transfer_time), not a fixed guess."""

from __future__ import annotations

from datetime import timedelta

from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import SIGNED, move, start


async def _waiting_in_a_qtime_window(client, clock) -> str:
    code = (await start(client))["code"]
    # GATE_OX_CLEAN (110) opens a 4-hour window to GATE_OX (120).
    await client.post(f"/api/v1/lots/{code}/jump", json={"to_sequence": 110, "signature": SIGNED})
    await move(client, code)
    clock.advance(timedelta(hours=1))  # 3 h left
    return code


async def _transfer_time(client, seconds: int) -> None:
    r = await client.put(
        "/api/v1/dispatch/transfer-times",
        json={"from_fab": "F1", "to_fab": "F2", "time_s": seconds},
    )
    assert r.status_code == 200, r.text


async def test_a_short_configured_transfer_fits_in_the_window(client, clock):
    code = await _waiting_in_a_qtime_window(client, clock)
    await _transfer_time(client, 30 * 60)
    shipped = await client.post(f"/api/v1/lots/{code}/ship", json={"to_fab": "F2"})
    assert shipped.status_code == 200, shipped.text
    assert shipped.json()["state"] == "InTransit"


async def test_a_long_configured_transfer_does_not(client, clock):
    code = await _waiting_in_a_qtime_window(client, clock)
    await _transfer_time(client, 3 * 3600 + 60)
    refused = await client.post(f"/api/v1/lots/{code}/ship", json={"to_fab": "F2"})
    assert_problem(refused, 409, "lot.qtime_at_risk")
