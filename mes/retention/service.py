"""Delete rows older than their table's retention, in small batches (short transactions, so the
pruning never holds locks that requests wait on), and the loop the service runs it in.

What each table keeps, and why it may go:

* ``dispatch_decision``: the dispatcher's reasoning, for diagnosis and compliance reports of the
  recent past; one row per tool per cycle, the fastest-growing table of a running fab.
* ``idempotency_record``: the first answer to each ``Idempotency-Key``; a retry older than the
  retention is applied as a new request (clients retry within minutes, not days).
* ``equipment_state_event``: the E10 history behind the metrics; off by default (0: kept
  forever). When on, each tool's latest event always stays: it says since when the tool is in
  its current state.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.config import Settings
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.dispatch.models import DispatchDecision
from mes.equipment.models import EquipmentStateEvent
from mes.kit.idempotency import IdempotencyRecord

log = logging.getLogger(__name__)

BATCH = 5000


@dataclass(frozen=True)
class Rule:
    table: str
    model: Any
    time_column: Any
    days: float  # 0: keep forever


def rules(settings: Settings) -> list[Rule]:
    return [
        Rule(
            "dispatch_decision",
            DispatchDecision,
            DispatchDecision.cycle_at,
            settings.retention_dispatch_decisions_days,
        ),
        Rule(
            "idempotency_record",
            IdempotencyRecord,
            IdempotencyRecord.created_at,
            settings.retention_idempotency_days,
        ),
        Rule(
            "equipment_state_event",
            EquipmentStateEvent,
            EquipmentStateEvent.occurred_at,
            settings.retention_state_events_days,
        ),
    ]


async def _prune_batch(session: AsyncSession, rule: Rule, cutoff: datetime, batch: int) -> int:
    old = select(rule.model.id).where(rule.time_column < cutoff)
    if rule.model is EquipmentStateEvent:
        latest = select(func.max(EquipmentStateEvent.id)).group_by(
            EquipmentStateEvent.equipment_id, EquipmentStateEvent.chamber_id
        )
        old = old.where(EquipmentStateEvent.id.not_in(latest))
    ids = list(await session.scalars(old.order_by(rule.model.id).limit(batch)))
    if ids:
        await session.execute(
            delete(rule.model)
            .where(rule.model.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
    return len(ids)


async def prune(
    db: Database, settings: Settings, now: datetime, *, batch: int = BATCH
) -> dict[str, int]:
    """Delete what is past retention in every table; returns rows deleted per table."""
    deleted: dict[str, int] = {}
    for rule in rules(settings):
        if rule.days <= 0:
            continue
        cutoff = now - timedelta(days=rule.days)
        total = 0
        while True:
            async with unit_of_work(db) as session:
                n = await _prune_batch(session, rule, cutoff, batch)
            total += n
            if n < batch:
                break
        deleted[rule.table] = total
    return deleted


async def prune_forever(db: Database, clock: Clock, settings: Settings) -> None:
    """Prune every ``retention_interval_s`` (the service's background loop)."""
    while True:
        try:
            deleted = await prune(db, settings, clock.now())
            if any(deleted.values()):
                log.info("retention: pruned %s", deleted)
        except Exception:  # keep pruning after a transient database error
            log.exception("retention pruning failed; retrying")
        await asyncio.sleep(settings.retention_interval_s)
