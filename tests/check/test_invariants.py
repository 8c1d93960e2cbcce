"""The invariant checker: a fab the API worked on passes; each kind of corruption, planted with
raw SQL behind the service's back, is reported with the rows involved."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from mes.audit import service as audit_service
from mes.check.invariants import check, check_database
from mes.clock import FixedClock
from mes.config import Settings
from mes.db import migrate, throwaway
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.seed import loader
from tests.conftest import NOW

API = "/api/v1"


async def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


async def _tool_for(client: httpx.AsyncClient, lot: dict[str, Any]) -> str:
    listed = await _ok(
        await client.get(
            f"{API}/equipment", params={"fab": lot["fab"], "tool_group": lot["step"]["tool_group"]}
        )
    )
    return str(sorted(t["code"] for t in listed["items"])[0])


async def _work_the_fab(client: httpx.AsyncClient) -> dict[str, Any]:
    """Starts, moves, a split and a merge, scrap, bonus, a hold; one lot left running."""
    start = {"product": "LOGIC28", "fab": "F1", "wafer_count": 6}
    a = await _ok(await client.post(f"{API}/lots", json=start))
    b = await _ok(await client.post(f"{API}/lots", json={**start, "wafer_count": 4}))
    for lot in (a, b):
        tool = await _tool_for(client, lot)
        await _ok(await client.post(f"{API}/lots/{lot['code']}/track-in", json={"tool": tool}))
        await _ok(await client.post(f"{API}/lots/{lot['code']}/track-out", json={}))
    detail = await _ok(await client.get(f"{API}/lots/{a['code']}"))
    wafers = [w["scribe_id"] for w in detail["wafers"]]
    split = await _ok(
        await client.post(f"{API}/lots/{a['code']}/split", json={"wafers": wafers[:2]})
    )
    child = split["child"]["code"]
    sig = {"reason": "invariant test"}
    scrap = {"wafers": [wafers[0]], "reason_code": "BROKEN", "signature": sig}
    await _ok(await client.post(f"{API}/lots/{child}/scrap", json=scrap))
    await _ok(await client.post(f"{API}/lots/{a['code']}/merge", json={"source": child}))
    bonus = {"count": 2, "reason_code": "FOUND"}
    await _ok(await client.post(f"{API}/lots/{b['code']}/bonus", json=bonus))
    hold = {"hold_code": "QUALITY", "reason": "look"}
    await _ok(await client.post(f"{API}/lots/{b['code']}/hold", json=hold))
    lot_a = await _ok(await client.get(f"{API}/lots/{a['code']}"))
    tool = await _tool_for(client, lot_a)
    await _ok(await client.post(f"{API}/lots/{a['code']}/track-in", json={"tool": tool}))
    return {"running": a["code"], "held": b["code"], "tool": tool}


async def test_a_fab_the_api_worked_on_holds_every_invariant(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await _work_the_fab(client)
    report = await check(session)
    assert report.ok, [v.as_dict() for v in report.violations]
    assert report.counts["lot"] >= 3
    assert report.counts["lot_event"] >= 10


async def _scalar(session: AsyncSession, sql: str, **params: Any) -> Any:
    return (await session.execute(text(sql), params)).scalar_one()


async def _lot_id(session: AsyncSession, code: str) -> int:
    return int(await _scalar(session, "SELECT id FROM lot WHERE code = :c", c=code))


async def _expect(session: AsyncSession, kind: str, needle: str) -> None:
    report = await check(session)
    found = [v for v in report.violations if v.kind == kind and needle in v.message]
    assert found, [v.as_dict() for v in report.violations]
    assert all(v.rows for v in found)


async def test_a_lost_wafer_count_is_reported(client, session) -> None:
    fab = await _work_the_fab(client)
    lot = await _lot_id(session, fab["held"])
    await session.execute(
        text("UPDATE lot SET wafer_count = wafer_count - 1 WHERE id = :i"), {"i": lot}
    )
    await _expect(session, "wafers", f"lot {fab['held']} counts")
    await _expect(session, "history", f"lot {fab['held']}")


async def test_a_wafer_scrapped_behind_the_service_is_reported(client, session) -> None:
    fab = await _work_the_fab(client)
    lot = await _lot_id(session, fab["held"])
    await session.execute(
        text(
            "UPDATE wafer SET state = 'scrapped' WHERE id = "
            "(SELECT min(id) FROM wafer WHERE lot_id = :i AND state = 'active')"
        ),
        {"i": lot},
    )
    await _expect(session, "wafers", "still holds slot")
    await _expect(session, "wafers", f"lot {fab['held']} counts")


async def test_a_wafer_that_appeared_from_nowhere_is_reported(client, session) -> None:
    fab = await _work_the_fab(client)
    lot = await _lot_id(session, fab["held"])
    await session.execute(
        text(
            "INSERT INTO wafer (scribe_id, lot_id, fab_id, slot, state, created_at, updated_at) "
            "SELECT 'GHOST-1', id, fab_id, 25, 'active', started_at, started_at FROM lot "
            "WHERE id = :i"
        ),
        {"i": lot},
    )
    await session.execute(
        text("UPDATE lot SET wafer_count = wafer_count + 1 WHERE id = :i"), {"i": lot}
    )
    await _expect(session, "wafers", "were started or added as bonus")


async def test_a_lot_at_a_step_of_another_route_is_reported(client, session) -> None:
    fab = await _work_the_fab(client)
    lot = await _lot_id(session, fab["held"])
    await session.execute(
        text(
            "UPDATE lot SET current_step_id = (SELECT min(s.id) FROM step s "
            "WHERE s.route_version_id <> lot.route_version_id) WHERE id = :i"
        ),
        {"i": lot},
    )
    await _expect(session, "lot_step", "of another route version")


async def test_a_lot_on_a_tool_of_another_fab_and_an_idle_busy_tool_are_reported(
    client, session
) -> None:
    fab = await _work_the_fab(client)
    lot = await _lot_id(session, fab["running"])
    await session.execute(
        text(
            "UPDATE lot SET equipment_id = (SELECT min(e.id) FROM equipment e JOIN fab f "
            "ON f.id = e.fab_id WHERE f.code = 'F2') WHERE id = :i"
        ),
        {"i": lot},
    )
    await _expect(session, "lot_tool", "runs on a tool of another fab")
    await _expect(session, "tool_wip", f"tool {fab['tool']} is PRD with no lot on it")
    await _expect(session, "tool_wip", "is SBY with 1 lots on it")


async def test_a_tool_over_its_capacity_is_reported(client, session) -> None:
    fab = await _work_the_fab(client)
    await session.execute(
        text("UPDATE equipment SET max_lots = 1 WHERE code = :t"), {"t": fab["tool"]}
    )
    other = await _lot_id(session, fab["held"])
    tool = await _scalar(session, "SELECT id FROM equipment WHERE code = :t", t=fab["tool"])
    # A second lot on the tool behind the service's back (state and tool together, as the
    # table's constraint wants).
    await session.execute(
        text("UPDATE lot SET state = 'Running', equipment_id = :t WHERE id = :i"),
        {"t": tool, "i": other},
    )
    await _expect(session, "tool_wip", f"tool {fab['tool']} holds 2 lots of 1")


async def test_a_change_without_its_event_breaks_the_history_fold(client, session) -> None:
    fab = await _work_the_fab(client)
    lot = await _lot_id(session, fab["held"])
    await session.execute(text("UPDATE lot SET priority_class = 'hot' WHERE id = :i"), {"i": lot})
    await _expect(session, "history", "priority_class")
    # An event that does not start where the one before it ended.
    await session.execute(
        text(
            "UPDATE lot_event SET before = NULL, after = :a WHERE id = "
            "(SELECT min(id) FROM lot_event WHERE lot_id = :i AND event_type = 'BONUS')"
        ),
        {"i": lot, "a": '{"state": "Waiting"}'},
    )
    await _expect(session, "history", f"lot {fab['held']}")


async def _plant_job(session, lot: int, n: int, status: str, sent: bool, started: bool) -> None:
    await session.execute(
        text(
            "INSERT INTO equipment_job (job_order_id, fab_id, equipment_id, lot_id, step_id, "
            "recipe_version_id, attempt, status, requested_by, requested_at, sent_at, started_at, "
            "created_at, updated_at) SELECT :jo, l.fab_id, l.equipment_id, l.id, "
            "l.current_step_id, (SELECT min(id) FROM recipe_version), 1, :st, 'x', "
            "l.tracked_in_at, :sent, :started, l.tracked_in_at, l.tracked_in_at FROM lot l "
            "WHERE l.id = :i"
        ),
        {
            "jo": f"PLANTED-{n}",
            "st": status,
            "i": lot,
            "sent": NOW if sent else None,
            "started": NOW if started else None,
        },
    )
    await session.execute(
        text(
            "INSERT INTO equipment_job_lot (job_id, lot_id, position) "
            "SELECT id, :i, 1 FROM equipment_job WHERE job_order_id = :jo"
        ),
        {"jo": f"PLANTED-{n}", "i": lot},
    )


async def test_two_live_jobs_of_one_attempt_started_twice_are_reported(client, session) -> None:
    fab = await _work_the_fab(client)
    lot = await _lot_id(session, fab["running"])
    await _plant_job(session, lot, 1, "running", sent=True, started=True)
    report = await check(session)
    assert not [v for v in report.violations if v.kind == "jobs"], report.violations
    await _plant_job(session, lot, 2, "running", sent=False, started=True)
    await _expect(session, "jobs", "live jobs")
    await _expect(session, "jobs", "jobs ['PLANTED-1', 'PLANTED-2'] for attempt 1")
    await _expect(session, "jobs", "started but was never sent")
    await _expect(session, "jobs", "was started twice at one step")


async def test_a_live_job_whose_lot_is_elsewhere_is_reported(client, session) -> None:
    fab = await _work_the_fab(client)
    lot = await _lot_id(session, fab["running"])
    await _plant_job(session, lot, 3, "sent", sent=True, started=False)
    held = await _lot_id(session, fab["held"])
    await session.execute(
        text("UPDATE equipment_job_lot SET lot_id = :h WHERE lot_id = :i"), {"h": held, "i": lot}
    )
    await _expect(session, "tool_wip", "job PLANTED-3 is sent but its lot")


async def test_broken_leases_and_two_leaders_at_once_are_reported(client, session) -> None:
    await session.execute(
        text(
            "INSERT INTO adapter_lease (equipment_id, owner, acquired_at, renewed_at, expires_at, "
            "connection, connection_since) SELECT min(id), 'a:1', :t, :t, :early, 'connected', :t "
            "FROM equipment"
        ),
        {"t": NOW, "early": NOW.replace(hour=7)},
    )
    await _expect(session, "leases", "owner or times are not sane")
    await session.execute(text("DELETE FROM adapter_lease"))
    # A hand-over and back (host:1's lease lapsed, host:2 took it and died) is no violation.
    await _decisions(session, ((0, "host:1"), (5, "host:2"), (10, "host:1")))
    assert not [v for v in (await check(session)).violations if v.kind == "leases"]
    # Decisions that go on alternating are two leaders at once.
    await _decisions(session, ((15, "host:2"),))
    await _expect(session, "leases", "at once (their decisions interleave)")


async def _decisions(session: AsyncSession, made: tuple[tuple[int, str], ...]) -> None:
    for second, owner in made:
        await session.execute(
            text(
                "INSERT INTO dispatch_decision (fab_id, equipment_id, cycle_at, rule_set, "
                "rule_set_version, top, excluded, outcome, owner) SELECT e.fab_id, e.id, :at, "
                "'default', 1, '{}', '{}', 'none', :o FROM equipment e WHERE e.id = "
                "(SELECT min(id) FROM equipment)"
            ),
            {"at": NOW.replace(second=second), "o": owner},
        )


async def _tamper_audit(session: AsyncSession, backend: str, statement: str) -> None:
    # Bypassing the append-only triggers, inside the test's transaction (rolled back after).
    if backend == "postgresql":
        await session.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
        await session.execute(text(statement))
        await session.execute(text("ALTER TABLE audit_event ENABLE TRIGGER USER"))
    else:
        await session.execute(text("DROP TRIGGER IF EXISTS audit_event_seal_only"))
        await session.execute(text(statement))


async def test_an_edited_audit_record_is_reported(client, session, backend) -> None:
    await _work_the_fab(client)
    assert await audit_service.seal(session, clock=FixedClock(NOW)) > 0
    assert (await check(session)).ok
    await _tamper_audit(
        session,
        backend,
        "UPDATE audit_event SET actor = 'mallory' WHERE chain_seq = "
        "(SELECT max(chain_seq) FROM audit_event)",
    )
    await _expect(session, "audit", "was altered after sealing")


def _cli(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MES_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "mes.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


async def test_mes_check_passes_a_clean_database_and_exits_1_naming_the_rows(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    # The suite's own database (the backend under test): committed example fab, clean.
    clean = await asyncio.to_thread(_cli, ["check", "--json"], database_url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["ok"] is True
    assert (await check_database(Database(engine))).ok
    # A database of its own to break (SQLite: cheap to build on either backend's run).
    url = throwaway.sqlite_database(tmp_path, "check")
    broken_engine = create_engine(Settings(database_url=url))
    try:
        await migrate.upgrade(broken_engine)
        async with unit_of_work(Database(broken_engine)) as session:
            await loader.load(session, loader.read_example(), clock=FixedClock(NOW))
        async with broken_engine.begin() as conn:
            # A tool that says it is producing, with nothing on it.
            code = (await conn.execute(text("SELECT min(code) FROM equipment"))).scalar_one()
            await conn.execute(
                text("UPDATE equipment SET e10_state = 'PRD' WHERE code = :c"), {"c": code}
            )
    finally:
        await broken_engine.dispose()
    broken = await asyncio.to_thread(_cli, ["check"], url)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"VIOLATION [tool_wip] tool {code} is PRD with no lot on it" in broken.stdout
    assert f'"tool": "{code}"' in broken.stdout
