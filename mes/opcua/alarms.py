"""Tool alarms: one open record per tool and alarm code, and what a new alarm does by the
alarm rules (``mapping.alarm_rule``): take the tool down, abort its jobs, hold their lots."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.equipment import service as equipment_service
from mes.equipment.models import EquipmentAlarm, StateChangeSource
from mes.equipment.states import E10State
from mes.jobs import service as jobs_service
from mes.jobs.states import JobCommand, JobStatus
from mes.lots import service as lots_service
from mes.lots.commands import Hold
from mes.lots.states import LotState
from mes.opcua import mapping
from mes.opcua.mapping import AlarmEvent, AlarmRule
from mes.opcua.quarantine import MES_ALARM_PREFIX
from mes.opcua.tools import ToolRef, principal_for


async def close_unreported_alarms(
    session: AsyncSession, tool: ToolRef, reported: set[str], *, clock: Clock
) -> list[str]:
    """After a ConditionRefresh: the tool replayed every alarm it still has; an alarm the MES
    holds open that was not among them cleared while nobody listened. Close it."""
    stale = [
        alarm
        for alarm in await session.scalars(
            select(EquipmentAlarm)
            .where(EquipmentAlarm.equipment_id == tool.id, EquipmentAlarm.cleared_at.is_(None))
            .with_for_update(key_share=True)
        )
        if alarm.alarm_code not in reported and not alarm.alarm_code.startswith(MES_ALARM_PREFIX)
    ]
    for alarm in stale:
        alarm.cleared_at = clock.now()
        alarm.actions = (alarm.actions + " resync-cleared").strip()[:64]
    await session.flush()
    return sorted(a.alarm_code for a in stale)


async def apply_alarm(
    session: AsyncSession,
    tool: ToolRef,
    alarm: AlarmEvent,
    *,
    rules: Sequence[AlarmRule],
    clock: Clock,
) -> str:
    """Record the alarm (one open record per tool and code) and act on a new one by the rules."""
    now = clock.now()
    open_alarm = (
        await session.scalars(
            select(EquipmentAlarm)
            .where(
                EquipmentAlarm.equipment_id == tool.id,
                EquipmentAlarm.alarm_code == alarm.code[:64],
                EquipmentAlarm.cleared_at.is_(None),
            )
            .with_for_update(key_share=True)
        )
    ).first()
    if not alarm.active:
        if open_alarm is None:
            return "no open alarm"
        open_alarm.cleared_at = now
        open_alarm.acknowledged = alarm.acked
        await session.flush()
        return "cleared"
    if open_alarm is not None:
        open_alarm.acknowledged = alarm.acked
        await session.flush()
        return "already open"
    rule = mapping.alarm_rule(
        alarm.code, breaking=alarm.breaking, severity=alarm.severity, rules=rules
    )
    actions: list[str] = []
    record = EquipmentAlarm(
        fab_id=tool.fab_id,
        equipment_id=tool.id,
        alarm_code=alarm.code[:64],
        text=alarm.text or alarm.code,
        severity=alarm.severity,
        breaking=alarm.breaking,
        raised_at=now,  # the tool clock may differ from ours: MES time of receipt
        acknowledged=alarm.acked,
        actions="",
    )
    session.add(record)
    who = principal_for(tool).username
    if rule is not None and rule.udt:
        equipment = await equipment_service.get_equipment(session, tool.code, for_update=True)
        if equipment.e10_state.value != "UDT":
            equipment_service.record_state(
                session,
                equipment,
                E10State.UDT,
                mapping.ALARM_SUBSTATE,
                actor=who,
                at=now,
                recorded_at=now,
                source=StateChangeSource.TOOL,
                reason=f"alarm {alarm.code}: {alarm.text}"[:2000],
            )
            equipment.last_signal_at = now
        actions.append("udt")
    if rule is not None and (rule.abort_job or rule.hold_lot):
        jobs = [
            j
            for j in await jobs_service.open_jobs_of_tool(session, tool.id)
            if j.status in (JobStatus.SENT, JobStatus.RUNNING, JobStatus.PAUSED)
        ]
        for job in jobs:
            if rule.abort_job:
                job.command = JobCommand.ABORT
                job.last_error = f"abort requested by alarm {alarm.code}"
                actions.append("abort")
            elif rule.hold_lot:
                for lot in await jobs_service.member_lots(session, job):
                    if lot.state != LotState.RUNNING:
                        continue
                    await lots_service.hold(
                        session,
                        lot.code,
                        Hold(
                            hold_code="EQUIPMENT",
                            reason=f"alarm {alarm.code} on {tool.code}: {alarm.text}"[:2000],
                        ),
                        actor=principal_for(tool),
                        clock=clock,
                    )
                    actions.append("hold")
    record.actions = ",".join(dict.fromkeys(actions))[:64]
    await session.flush()
    return f"raised ({record.actions or 'recorded'})"
