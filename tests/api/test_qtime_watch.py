"""The Q-time watch: a lot whose window runs out while it waits is held QTIME_EXPIRED by the
watch itself (not only at a refused track-in), once; the windows about to run out are listed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mes.audit.context import AuditContext, bind
from mes.db.transaction import unit_of_work
from mes.lots import rules
from mes.lots.qtime import expire_windows, warn_windows
from mes.observability.instruments import QTIME_WARNINGS
from tests.api.test_lot_transactions import SIGNED, move, start


async def _watch(db, clock) -> list[str]:
    async with unit_of_work(db) as session:
        bind(
            session,
            AuditContext(
                actor="system", role="system", operation="lots.expire_qtime", at=clock.now()
            ),
        )
        return await expire_windows(session, clock)


async def test_the_watch_holds_a_waiting_lot_when_its_window_runs_out(client, db, clock):
    code = (await start(client))["code"]
    # GATE_OX_CLEAN (110) opens a 4-hour window to GATE_OX (120).
    await client.post(f"/api/v1/lots/{code}/jump", json={"to_sequence": 110, "signature": SIGNED})
    await move(client, code)
    other = (await start(client))["code"]  # no window: never touched

    clock.advance(timedelta(hours=3, minutes=50))
    assert await _watch(db, clock) == []
    soon = (await client.get("/api/v1/lots/qtime-windows", params={"within_s": 1800})).json()
    assert [(w["lot"], w["to_step_sequence"]) for w in soon] == [(code, 120)]
    assert soon[0]["remaining_s"] == 600
    later = (await client.get("/api/v1/lots/qtime-windows", params={"within_s": 300})).json()
    assert later == []

    clock.advance(timedelta(minutes=11))
    assert await _watch(db, clock) == [code]
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    assert lot["state"] == "OnHold"
    assert [h["hold_code"] for h in lot["holds"]] == ["QTIME_EXPIRED"]
    assert (await client.get(f"/api/v1/lots/{other}")).json()["state"] == "Waiting"
    # Once: the window is closed as expired, the next round finds nothing.
    assert await _watch(db, clock) == []
    assert (await client.get("/api/v1/lots/qtime-windows")).json() == []
    history = (await client.get(f"/api/v1/lots/{code}/history", params={"limit": 100})).json()
    assert history["items"][-1]["event_type"] == "QTIME_EXPIRED"


async def _warn(db, clock, warn_s: float = 1800) -> list[str]:
    async with unit_of_work(db) as session:
        bind(
            session,
            AuditContext(
                actor="system", role="system", operation="lots.expire_qtime", at=clock.now()
            ),
        )
        return await warn_windows(session, clock, warn_s)


def _warnings(fab: str) -> float:
    return QTIME_WARNINGS.labels(fab=fab)._value.get()


async def test_the_watch_warns_once_when_a_window_enters_its_last_half_hour(client, db, clock):
    code = (await start(client))["code"]
    await client.post(f"/api/v1/lots/{code}/jump", json={"to_sequence": 110, "signature": SIGNED})
    await move(client, code)  # opens the 4-hour window to 120
    fab = (await client.get(f"/api/v1/lots/{code}")).json()["fab"]
    counted = _warnings(fab)
    clock.advance(timedelta(hours=3, minutes=29))
    assert await _warn(db, clock) == []  # 31 minutes left
    clock.advance(timedelta(minutes=2))
    assert await _warn(db, clock) == [code]
    assert _warnings(fab) == counted + 1
    history = (await client.get(f"/api/v1/lots/{code}/history", params={"limit": 100})).json()
    warning = history["items"][-1]
    assert warning["event_type"] == "QTIME_WARNING"
    assert "step 120" in warning["reason"]
    assert "29 min left" in warning["reason"]
    assert (await client.get(f"/api/v1/lots/{code}")).json()["state"] == "Waiting"  # no hold
    clock.advance(timedelta(minutes=10))
    assert await _warn(db, clock) == []  # once per window
    assert await _warn(db, clock, warn_s=0) == []  # 0: warnings off


def test_a_warning_is_due_only_inside_the_warning_time():
    deadline = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert rules.qtime_warning_due(deadline, deadline - timedelta(seconds=1800), 1800)
    assert not rules.qtime_warning_due(deadline, deadline - timedelta(seconds=1801), 1800)
    assert not rules.qtime_warning_due(deadline, deadline + timedelta(seconds=1), 1800)
    assert not rules.qtime_warning_due(deadline, deadline - timedelta(seconds=60), 0)


async def test_voided_windows_are_in_the_audit_trail(client):
    code = (await start(client))["code"]
    await client.post(f"/api/v1/lots/{code}/jump", json={"to_sequence": 110, "signature": SIGNED})
    await move(client, code)  # opens the window to 120
    jumped = await client.post(
        f"/api/v1/lots/{code}/jump", json={"to_sequence": 130, "signature": SIGNED}
    )
    assert jumped.status_code == 200, jumped.text
    trail = (
        await client.get("/api/v1/audit", params={"target_type": "lot_qtime", "limit": 50})
    ).json()["items"]
    assert any((r.get("after") or {}).get("status") == "void" for r in trail), trail
