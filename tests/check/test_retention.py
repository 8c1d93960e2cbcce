"""Retention: rows past their table's age are pruned, newer ones and each tool's latest state
event stay, and a table set to 0 days is never pruned."""

from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr
from sqlalchemy import func, select, text

from mes.config import Settings
from mes.db.engine import Database
from mes.dispatch.models import DispatchDecision
from mes.equipment.models import EquipmentStateEvent
from mes.kit.idempotency import IdempotencyRecord
from mes.retention.service import prune
from tests.conftest import NOW

OLD, NEW = NOW - timedelta(days=3), NOW - timedelta(hours=1)


async def _count(session, model, *where) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_prune_deletes_what_is_past_retention_and_keeps_the_rest(
    db: Database, session
) -> None:
    tool, fab = (
        await session.execute(text("SELECT id, fab_id FROM equipment ORDER BY id"))
    ).first()
    for at, n in ((OLD, 7), (NEW, 2)):
        for i in range(n):
            session.add(
                DispatchDecision(
                    fab_id=fab,
                    equipment_id=tool,
                    cycle_at=at,
                    rule_set="r",
                    rule_set_version=1,
                    top={},
                    excluded={},
                    outcome="none",
                    owner="o",
                )
            )
            session.add(
                IdempotencyRecord(actor="a", key=f"k-{at:%d}-{i}", fingerprint="f", created_at=at)
            )
    # Old state events recorded last for this tool: the last of them stays (the latest record).
    for i in range(3):
        session.add(
            EquipmentStateEvent(
                fab_id=fab,
                equipment_id=tool,
                to_state="SBY",
                substate="SBY.NO_PRODUCT",
                occurred_at=OLD + timedelta(minutes=i),
                recorded_at=OLD,
                source="system",
                actor="t",
            )
        )
    await session.flush()
    tools = await _count(session, EquipmentStateEvent)
    settings = Settings(
        database_url="sqlite+aiosqlite://", jwt_secret=SecretStr("x" * 32),
        retention_dispatch_decisions_days=1, retention_idempotency_days=1,
        retention_state_events_days=0,
    )  # fmt: skip
    deleted = await prune(db, settings, NOW, batch=3)  # batches smaller than the work
    assert deleted == {"dispatch_decision": 7, "idempotency_record": 7}
    assert await _count(session, DispatchDecision) == 2
    assert await _count(session, IdempotencyRecord, IdempotencyRecord.created_at < NEW) == 0
    assert await _count(session, EquipmentStateEvent) == tools  # 0 days: kept forever

    on = settings.model_copy(update={"retention_state_events_days": 1})
    deleted = await prune(db, on, NOW)
    tool_level = (
        EquipmentStateEvent.equipment_id == tool,
        EquipmentStateEvent.chamber_id.is_(None),
    )
    old = EquipmentStateEvent.occurred_at < NOW - timedelta(days=1)
    assert await _count(session, EquipmentStateEvent, *tool_level, old) == 1, "the latest stays"
    latest = await session.scalar(
        select(EquipmentStateEvent.occurred_at)
        .where(*tool_level)
        .order_by(EquipmentStateEvent.id.desc())
    )
    assert latest.replace(tzinfo=None) == (OLD + timedelta(minutes=2)).replace(tzinfo=None)
    assert deleted["equipment_state_event"] >= 2
