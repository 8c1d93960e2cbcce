"""The audit trail: written with every change, append-only, sealed into a verifiable chain."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from mes.audit import service as audit_service
from mes.audit.context import AuditContext, bind
from mes.audit.models import AuditEvent
from mes.audit.recorder import SignatureMissing, UnauditedChange
from mes.clock import FixedClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.products.models import Product
from tests.conftest import NOW
from tests.databases import create_database, drop_database

MES = [sys.executable, "-m", "mes.cli"]


async def _audit_rows(session, **where):
    stmt = select(AuditEvent).order_by(AuditEvent.id)
    for key, value in where.items():
        stmt = stmt.where(getattr(AuditEvent, key) == value)
    return list(await session.scalars(stmt))


async def test_a_change_and_its_audit_record_share_one_transaction(client, session):
    tool = {"code": "F2-AUD01", "name": "a", "fab": "F2", "area": "ETCH", "tool_group": "ETCH_POLY"}
    response = await client.post("/api/v1/equipment", json=tool, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "req-42"
    rows = await _audit_rows(session, target_id="F2-AUD01")
    assert len(rows) == 1
    record = rows[0]
    assert (record.actor, record.role, record.operation, record.action) == (
        "tester",
        "engineer",
        "equipment.create_equipment",
        "insert",
    )
    assert record.request_id == "req-42"
    assert record.after["e10_state"] == "SBY"
    assert record.fab_id is not None
    # The load ports came with it, each with its own record of the same operation.
    ports = await _audit_rows(session, target_type="load_port", request_id="req-42")
    assert len(ports) == 2

    before = await session.scalar(select(func.count()).select_from(AuditEvent))
    refused = await client.post("/api/v1/equipment", json=tool)
    assert refused.status_code == 409
    assert await session.scalar(select(func.count()).select_from(AuditEvent)) == before


async def test_updates_record_only_what_changed(client, session):
    tool = (await client.get("/api/v1/equipment/F1-WETC01")).json()
    await client.patch(
        "/api/v1/equipment/F1-WETC01", json={"version": tool["version"], "max_lots": 3}
    )
    (record,) = await _audit_rows(session, target_id="F1-WETC01", action="update")
    assert record.before == {"max_lots": 2, "version": tool["version"]}
    assert record.after == {"max_lots": 3, "version": tool["version"] + 1}


async def test_a_write_without_audit_context_is_refused(db):
    async with db.write_sessions() as session:
        session.add(Product(code="P-SNEAK", name="unaudited"))
        with pytest.raises(UnauditedChange):
            await session.flush()


async def test_an_operation_needing_a_signature_cannot_skip_it(db):
    async with db.write_sessions() as session:
        context = AuditContext(
            actor="x", role="engineer", operation="t.op", at=NOW, signature_required=True
        )
        bind(session, context)
        session.add(Product(code="P-UNSIGNED", name="n"))
        with pytest.raises(SignatureMissing):
            await session.flush()


async def test_the_database_refuses_to_edit_or_delete_audit_records(session):
    record_id = await session.scalar(select(func.min(AuditEvent.id)))
    for statement in (
        f"UPDATE audit_event SET actor = 'mallory' WHERE id = {record_id}",
        f"DELETE FROM audit_event WHERE id = {record_id}",
    ):
        with pytest.raises((DBAPIError, IntegrityError)):
            async with session.begin_nested():
                await session.execute(text(statement))


async def test_audit_api_filters_and_is_for_supervisors(client, client_as):
    await client.post("/api/v1/products", json={"code": "P-AUD", "name": "audited"})
    found = (await client.get("/api/v1/audit", params={"target_id": "P-AUD"})).json()
    assert found["total"] == 1
    assert found["items"][0]["operation"] == "products.create_product"
    by_fab = (await client.get("/api/v1/audit", params={"fab": "F1", "limit": 5})).json()
    assert by_fab["total"] > 0
    async with client_as("t-operator") as operator:
        assert (await operator.get("/api/v1/audit")).status_code == 403
    async with client_as("t-supervisor") as supervisor:
        assert (await supervisor.get("/api/v1/audit")).status_code == 200


def _cli(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MES_DATABASE_URL": url}
    return subprocess.run(MES + args, env=env, capture_output=True, text=True, timeout=180)


async def _tamper(engine, backend: str, statement: str) -> None:
    """What an attacker with the database owner's rights does: bypass the triggers."""
    async with engine.begin() as conn:
        if backend == "postgresql":
            await conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
            await conn.execute(text(statement))
            await conn.execute(text("ALTER TABLE audit_event ENABLE TRIGGER USER"))
        else:
            await conn.execute(text("DROP TRIGGER IF EXISTS audit_event_seal_only"))
            await conn.execute(text("DROP TRIGGER IF EXISTS audit_event_no_delete"))
            await conn.execute(text(statement))


async def test_verify_names_edited_and_deleted_records(tmp_path: Path, backend: str) -> None:
    url = await create_database(tmp_path, "tamper")
    engine = create_engine(Settings(database_url=url))
    try:
        for step in (["db", "upgrade"], ["seed", "example"], ["audit", "seal"]):
            done = await asyncio.to_thread(_cli, step, url)
            assert done.returncode == 0, done.stderr
        intact = await asyncio.to_thread(_cli, ["audit", "verify"], url)
        assert intact.returncode == 0, intact.stdout + intact.stderr
        assert "audit chain intact" in intact.stdout

        async with engine.connect() as conn:
            ids = (
                (await conn.execute(text("SELECT id FROM audit_event ORDER BY chain_seq")))
                .scalars()
                .all()
            )
        edited, deleted = ids[10], ids[20]
        await _tamper(
            engine, backend, f"UPDATE audit_event SET actor = 'mallory' WHERE id = {edited}"
        )
        await _tamper(engine, backend, f"DELETE FROM audit_event WHERE id = {deleted}")

        report = await asyncio.to_thread(_cli, ["audit", "verify"], url)
        assert report.returncode == 1
        assert f"record id={edited} (chain_seq 11) was altered" in report.stdout
        assert "chain_seq 21 missing" in report.stdout
    finally:
        await engine.dispose()
        await drop_database(url)


async def test_concurrent_writers_and_sealers_build_one_intact_chain(tmp_path: Path) -> None:
    url = await create_database(tmp_path, "sealers")
    engine = create_engine(Settings(database_url=url))
    db = Database(engine)
    clock = FixedClock(NOW)
    writers, per_writer = 4, 15
    try:
        await migrate.upgrade(engine)

        async def write(w: int) -> None:
            for i in range(per_writer):
                async with unit_of_work(db) as session:
                    bind(
                        session,
                        AuditContext(actor=f"w{w}", role="engineer", operation="t.write", at=NOW),
                    )
                    session.add(Product(code=f"P{w}-{i}", name="concurrent"))
                await asyncio.sleep(0)

        async def seal_repeatedly() -> int:
            sealed = 0
            for _ in range(25):
                async with unit_of_work(db) as session:
                    sealed += await audit_service.seal(session, clock=clock, batch=7)
                await asyncio.sleep(0.005)
            return sealed

        results = await asyncio.gather(
            *(write(w) for w in range(writers)), *(seal_repeatedly() for _ in range(3))
        )
        async with unit_of_work(db) as session:
            rest = await audit_service.seal(session, clock=clock)
        total = writers * per_writer
        assert sum(r for r in results if r is not None) + rest == total
        async with unit_of_work(db, write=False) as session:
            report = await audit_service.verify(session)
        assert report.ok, report.problems
        assert (report.checked, report.unsealed, report.head_seq) == (total, 0, total)
    finally:
        await engine.dispose()
        await drop_database(url)
