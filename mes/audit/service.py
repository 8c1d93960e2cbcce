"""Sealing the audit chain, verifying it, and querying the trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.chain import CHAINED_FIELDS, GENESIS_HASH, ChainProblem, ChainVerifier, record_hash
from mes.audit.models import AuditChainHead, AuditEvent
from mes.clock import Clock
from mes.observability import instruments

# Key of the PostgreSQL advisory lock that makes one sealer run at a time (SQLite needs none:
# the sealer's BEGIN IMMEDIATE already excludes other writers).
SEAL_LOCK_KEY = 0x4D45_5341  # "MESA"
SEAL_BATCH = 2000
AUDIT_TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]
_COLUMNS = [AUDIT_TABLE.c[name] for name in (*CHAINED_FIELDS, "prev_hash", "hash")]


async def seal(session: AsyncSession, *, clock: Clock, batch: int = SEAL_BATCH) -> int:
    """Link up to ``batch`` committed, unsealed records into the chain; returns how many."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(SEAL_LOCK_KEY)))
    head = await session.get(AuditChainHead, 1, with_for_update=True)
    rows = (
        (
            await session.execute(
                select(*_COLUMNS)
                .where(AuditEvent.chain_seq.is_(None))
                .order_by(AuditEvent.id)
                .limit(batch)
            )
        )
        .mappings()
        .all()
    )
    now = clock.now()
    if not rows:
        instruments.audit_sealed(0, 0.0)
        return 0
    instruments.audit_sealed(len(rows), _age_s(rows[0]["occurred_at"], now))
    seq = head.chain_seq if head else 0
    prev = head.hash if head else GENESIS_HASH
    sealed = []
    for row in rows:
        seq += 1
        record = dict(row, chain_seq=seq)
        digest = record_hash(prev, record)
        sealed.append({"b_id": row["id"], "b_seq": seq, "b_prev": prev, "b_hash": digest})
        prev = digest
    table = AUDIT_TABLE
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            chain_seq=bindparam("b_seq"), prev_hash=bindparam("b_prev"), hash=bindparam("b_hash")
        ),
        sealed,
    )
    if head is None:
        session.add(AuditChainHead(id=1, chain_seq=seq, hash=prev, sealed_at=now))
    else:
        head.chain_seq, head.hash, head.sealed_at = seq, prev, now
    await session.flush()
    return len(sealed)


def _age_s(occurred_at: datetime, now: datetime) -> float:
    if occurred_at.tzinfo is None:  # stored as UTC
        occurred_at = occurred_at.replace(tzinfo=UTC)
    return (now - occurred_at).total_seconds()


@dataclass(frozen=True)
class VerificationReport:
    checked: int
    unsealed: int
    head_seq: int | None
    head_hash: str | None
    problems: list[ChainProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(session: AsyncSession, *, page: int = 5000) -> VerificationReport:
    """Walk the sealed chain in order and report every record that does not fit."""
    head = await session.get(AuditChainHead, 1)
    verifier = ChainVerifier()
    after = 0
    while True:
        rows = (
            (
                await session.execute(
                    select(*_COLUMNS)
                    .where(AuditEvent.chain_seq > after)
                    .order_by(AuditEvent.chain_seq)
                    .limit(page)
                )
            )
            .mappings()
            .all()
        )
        for row in rows:
            verifier.feed(dict(row))
        if len(rows) < page:
            break
        after = int(rows[-1]["chain_seq"])
    unsealed = await session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.chain_seq.is_(None))
    )
    problems = verifier.finish(head.chain_seq if head else None, head.hash if head else None)
    return VerificationReport(
        checked=verifier.checked,
        unsealed=int(unsealed or 0),
        head_seq=head.chain_seq if head else None,
        head_hash=head.hash if head else None,
        problems=problems,
    )


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    operation: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    fab_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None


def audit_query(flt: AuditFilter) -> Select[AuditEvent]:
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    conditions: list[Any] = []
    if flt.actor is not None:
        conditions.append(AuditEvent.actor == flt.actor)
    if flt.operation is not None:
        conditions.append(AuditEvent.operation == flt.operation)
    if flt.target_type is not None:
        conditions.append(AuditEvent.target_type == flt.target_type)
    if flt.target_id is not None:
        conditions.append(AuditEvent.target_id == flt.target_id)
    if flt.fab_id is not None:
        conditions.append(AuditEvent.fab_id == flt.fab_id)
    if flt.since is not None:
        conditions.append(AuditEvent.occurred_at >= flt.since)
    if flt.until is not None:
        conditions.append(AuditEvent.occurred_at < flt.until)
    return stmt.where(*conditions)
