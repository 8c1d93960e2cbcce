"""Bad messages from tools: kept in a dead-letter table and raised as an MES alarm on the tool,
so that one unreadable or unappliable message never stalls an adapter and is never lost."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.equipment.models import EquipmentAlarm
from mes.opcua.models import DeadLetter
from mes.opcua.tools import ToolRef

# Alarms the MES raises itself start with this; the tool never reports them, so a resync must
# not close them (alarms.close_unreported_alarms).
MES_ALARM_PREFIX = "MES_"
BAD_MESSAGE_ALARM = "MES_BAD_MESSAGE"
EVENTS_LOST_ALARM = "MES_EVENTS_LOST"


async def raise_mes_alarm(
    session: AsyncSession,
    tool: ToolRef,
    code: str,
    text: str,
    *,
    clock: Clock,
    actions: str = "recorded",
) -> bool:
    """Raise an alarm of the MES's own on the tool, once: while one with ``code`` is open,
    a repeat changes nothing (a flood of bad messages is one alarm, not thousands). True if
    raised now."""
    already = await session.scalar(
        select(EquipmentAlarm.id).where(
            EquipmentAlarm.equipment_id == tool.id,
            EquipmentAlarm.alarm_code == code,
            EquipmentAlarm.cleared_at.is_(None),
        )
    )
    if already is not None:
        return False
    session.add(
        EquipmentAlarm(
            fab_id=tool.fab_id,
            equipment_id=tool.id,
            alarm_code=code,
            text=text[:1000],
            severity=700,
            breaking=False,
            raised_at=clock.now(),
            acknowledged=False,
            actions=actions,
        )
    )
    await session.flush()
    return True


async def quarantine(
    session: AsyncSession, tool: ToolRef, *, kind: str, payload: str, error: str, clock: Clock
) -> str:
    now = clock.now()
    session.add(
        DeadLetter(
            fab_id=tool.fab_id,
            equipment_id=tool.id,
            received_at=now,
            kind=kind[:64],
            payload=payload,
            error=error,
        )
    )
    await raise_mes_alarm(
        session,
        tool,
        BAD_MESSAGE_ALARM,
        f"the MES refused a message from the tool: {error}",
        clock=clock,
        actions="quarantined",
    )
    await session.flush()
    return f"quarantined {kind}: {error}"


async def dead_letters(
    session: AsyncSession, tool_id: int, *, limit: int = 100
) -> list[DeadLetter]:
    return list(
        await session.scalars(
            select(DeadLetter)
            .where(DeadLetter.equipment_id == tool_id)
            .order_by(DeadLetter.id.desc())
            .limit(limit)
        )
    )
