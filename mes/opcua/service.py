"""The adapter's transactions: leases, connection state, and applying tool events.

Each public function runs inside one ``unit_of_work`` opened by the adapter, so one tool event
is one transaction: the idempotency claim (a key from the tool's own ids), the lease check and
every change the event causes commit or roll back together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind
from mes.auth.roles import Role
from mes.auth.service import Principal
from mes.clock import Clock
from mes.equipment import service as equipment_service
from mes.equipment.models import Equipment, EquipmentAlarm, StateChangeSource
from mes.equipment.states import DEFAULT_SUBSTATE, E10State
from mes.jobs import service as jobs_service
from mes.jobs.models import EquipmentJob
from mes.jobs.states import FINAL, JobCommand, JobStatus
from mes.kit.idempotency import claim_key
from mes.lots import service as lots_service
from mes.lots.commands import Hold
from mes.lots.models import Lot
from mes.lots.states import LotState
from mes.opcua import mapping
from mes.opcua.mapping import AlarmEvent, AlarmRule, JobAction, JobEvent, JobResult, SubstrateEvent
from mes.opcua.models import AdapterLease, ConnectionState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolRef:
    id: int
    code: str
    fab_id: int
    endpoint: str


def principal_for(tool: ToolRef) -> Principal:
    """Who the adapter acts as: the tool itself (an equipment-role service identity)."""
    return Principal(
        user_id=0,
        username=f"opcua:{tool.code}"[:64],
        kind=AccountKind.SERVICE,
        roles=frozenset({Role.EQUIPMENT}),
        auth_time=None,
    )


def bind_adapter(session: AsyncSession, tool: ToolRef, operation: str, now: datetime) -> None:
    bind(
        session,
        AuditContext(
            actor=principal_for(tool).username, role="equipment", operation=operation, at=now
        ),
    )


# --- leases -------------------------------------------------------------------------------


async def tools_to_serve(
    session: AsyncSession, *, fab: str | None, shard: tuple[int, int]
) -> list[ToolRef]:
    """Tools with an OPC UA endpoint in the fab (all fabs: None) that fall in this shard."""
    from mes.fabs.models import Fab

    stmt = select(Equipment.id, Equipment.code, Equipment.fab_id, Equipment.opcua_endpoint).where(
        Equipment.opcua_endpoint.is_not(None)
    )
    if fab is not None:
        stmt = stmt.join(Fab, Fab.id == Equipment.fab_id).where(Fab.code == fab)
    index, count = shard
    return [
        ToolRef(id=i, code=c, fab_id=f, endpoint=e or "")
        for i, c, f, e in (await session.execute(stmt.order_by(Equipment.id))).all()
        if mapping.shard_of(c, count) == index
    ]


async def acquire(
    session: AsyncSession, equipment_id: int, owner: str, now: datetime, ttl: timedelta
) -> bool:
    """Take the tool's lease if it is free, expired or already ours."""
    taken = await session.execute(
        update(AdapterLease)
        .where(
            AdapterLease.equipment_id == equipment_id,
            (AdapterLease.owner == owner) | (AdapterLease.expires_at < now),
        )
        .values(
            owner=owner,
            acquired_at=now,
            renewed_at=now,
            expires_at=now + ttl,
            connection=ConnectionState.CONNECTING,
            connection_since=now,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount:  # type: ignore[attr-defined]
        return True
    exists = await session.scalar(
        select(AdapterLease.equipment_id).where(AdapterLease.equipment_id == equipment_id)
    )
    if exists is not None:
        return False
    session.add(
        AdapterLease(
            equipment_id=equipment_id,
            owner=owner,
            acquired_at=now,
            renewed_at=now,
            expires_at=now + ttl,
            connection=ConnectionState.CONNECTING,
            connection_since=now,
        )
    )
    await session.flush()
    return True


async def renew(
    session: AsyncSession,
    owner: str,
    equipment_ids: Iterable[int],
    now: datetime,
    ttl: timedelta,
    last_events: dict[int, datetime],
) -> set[int]:
    """Extend our unexpired leases; returns the ids we still hold."""
    ids = list(equipment_ids)
    if not ids:
        return set()
    await session.execute(
        update(AdapterLease)
        .where(
            AdapterLease.equipment_id.in_(ids),
            AdapterLease.owner == owner,
            AdapterLease.expires_at >= now,
        )
        .values(renewed_at=now, expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    held = set(
        await session.scalars(
            select(AdapterLease.equipment_id).where(
                AdapterLease.equipment_id.in_(ids),
                AdapterLease.owner == owner,
                AdapterLease.renewed_at == now,
            )
        )
    )
    stamps = [
        {"equipment_id": equipment_id, "last_event_at": at}
        for equipment_id, at in sorted(last_events.items())
        if equipment_id in held
    ]
    if stamps:  # one executemany: the refresh must hold SQLite's write lock only briefly
        await session.execute(update(AdapterLease), stamps)
    return held


async def stamp_signals(session: AsyncSession, equipment_ids: Iterable[int], now: datetime) -> None:
    """A tool whose adapter holds a healthy session is signalling (``last_signal_at``), even
    when nothing changes on it: the silence watchdog then only fires for tools nobody hears.

    Tools locked by a running transaction are skipped (SKIP LOCKED): the stamp can wait for the
    next lease refresh, a track-in should not wait for the stamp.
    """
    ids = sorted(equipment_ids)
    if not ids:
        return
    free = (
        select(Equipment.id)
        .where(Equipment.id.in_(ids))
        .order_by(Equipment.id)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    await session.execute(
        update(Equipment)
        .where(Equipment.id.in_(free))
        .values(last_signal_at=now)
        .execution_options(synchronize_session=False)
    )


async def release(
    session: AsyncSession, owner: str, equipment_ids: Iterable[int], now: datetime
) -> None:
    ids = list(equipment_ids)
    if ids:
        await session.execute(
            update(AdapterLease)
            .where(AdapterLease.equipment_id.in_(ids), AdapterLease.owner == owner)
            .values(
                expires_at=now,
                connection=ConnectionState.DISCONNECTED,
                connection_since=now,
            )
            .execution_options(synchronize_session=False)
        )


async def owns(session: AsyncSession, equipment_id: int, owner: str, now: datetime) -> bool:
    """Whether ``owner`` holds the tool's lease now (checked inside every adapter write)."""
    found = await session.scalar(
        select(AdapterLease.equipment_id).where(
            AdapterLease.equipment_id == equipment_id,
            AdapterLease.owner == owner,
            AdapterLease.expires_at >= now,
        )
    )
    return found is not None


async def publish_connection(
    session: AsyncSession,
    equipment_id: int,
    owner: str,
    state: ConnectionState,
    now: datetime,
    error: str | None = None,
) -> None:
    await session.execute(
        update(AdapterLease)
        .where(AdapterLease.equipment_id == equipment_id, AdapterLease.owner == owner)
        .values(
            connection=state,
            connection_since=now,
            last_error=error[:2000] if error else None,
        )
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class ConnectionView:
    tool: str
    state: ConnectionState
    owner: str | None
    since: datetime | None
    lease_expires_at: datetime | None
    last_event_at: datetime | None
    last_error: str | None


async def connection_of(session: AsyncSession, code: str, now: datetime) -> ConnectionView:
    tool = await equipment_service.get_equipment(session, code)
    lease = await session.get(AdapterLease, tool.id)
    if lease is None:
        return ConnectionView(code, ConnectionState.DISCONNECTED, None, None, None, None, None)
    expired = lease.expires_at < now
    return ConnectionView(
        tool=code,
        # An expired lease means its owner is gone: whatever it last published is history.
        state=ConnectionState.DISCONNECTED if expired else lease.connection,
        owner=None if expired else lease.owner,
        since=lease.expires_at if expired else lease.connection_since,
        lease_expires_at=lease.expires_at,
        last_event_at=lease.last_event_at,
        last_error=lease.last_error,
    )


# --- outbox -------------------------------------------------------------------------------


async def work_for_tool(session: AsyncSession, equipment_id: int) -> list[EquipmentJob]:
    """Jobs the adapter must act on: requested ones (send) and ones with an operator command."""
    return [
        j
        for j in await jobs_service.open_jobs_of_tool(session, equipment_id)
        if j.status is JobStatus.REQUESTED or j.command is not None
    ]


async def claim_send(
    session: AsyncSession, tool: ToolRef, job_order_id: str, owner: str, now: datetime
) -> EquipmentJob | None:
    """The outbox step: requested → sent, committed before the call to the tool."""
    if not await owns(session, tool.id, owner, now):
        return None
    job = await jobs_service.find_job(session, job_order_id)
    if job is None or not jobs_service.mark_sent(job, by=owner[:64], at=now):
        return None
    await session.flush()
    return job


async def clear_command(session: AsyncSession, job_order_id: str, error: str | None) -> None:
    job = await jobs_service.find_job(session, job_order_id)
    if job is not None:
        job.command = None
        if error:
            job.last_error = error[:2000]
        await session.flush()


# --- applying tool events -----------------------------------------------------------------


async def _claim(session: AsyncSession, tool: ToolRef, key: str, now: datetime) -> bool:
    return await claim_key(session, f"opcua:{tool.code}"[:64], key, now)


async def apply_job_event(
    session: AsyncSession,
    tool: ToolRef,
    event: JobEvent,
    *,
    clock: Clock,
    aborted_hold: bool,
    pv: mapping.ProcessValueBuffer | None = None,
) -> str:
    """One job status event: confirm, pause, track out, or send the lot back (per mapping)."""
    now = clock.now()
    key = mapping.event_key(tool.code, event.job_order_id, event.state, event.sequence)
    if not await _claim(session, tool, key, now):
        return "duplicate"
    job = await jobs_service.find_job(session, event.job_order_id)
    if job is None or job.equipment_id != tool.id:
        return "unknown job"
    try:
        result = mapping.parse_job_response(event.response)
    except (ValueError, TypeError):
        result = JobResult(event.state, event.substate, 0, ())
    return await _apply_job_state(
        session,
        tool,
        job,
        event.state,
        event.substate,
        result,
        clock=clock,
        aborted_hold=aborted_hold,
        pv=pv,
    )


async def _apply_job_state(
    session: AsyncSession,
    tool: ToolRef,
    job: EquipmentJob,
    state: str,
    substate: str,
    result: JobResult,
    *,
    clock: Clock,
    aborted_hold: bool,
    pv: mapping.ProcessValueBuffer | None,
) -> str:
    now = clock.now()
    action = mapping.job_action(state, substate)
    who = principal_for(tool)
    tool_state = f"{state}/{substate}" if substate else state
    if action is JobAction.CONFIRM:
        done = jobs_service.confirm_running(job, at=now, tool_state=tool_state)
    elif action is JobAction.PAUSED:
        done = jobs_service.paused(job, tool_state=tool_state)
    elif action is JobAction.COMPLETE:
        if pv is not None:
            await jobs_service.store_process_values(session, job, pv)
        done = await jobs_service.complete(session, job, result, principal=who, clock=clock)
    elif action is JobAction.CANCELLED:
        done = await jobs_service.end_without_run(
            session,
            job,
            JobStatus.FAILED,
            "cancelled on the tool before it started",
            hold=False,
            event_type="JOB_CANCELLED",
            principal=who,
            clock=clock,
            result=result,
        )
    elif action is JobAction.ABORT:
        if pv is not None:
            await jobs_service.store_process_values(session, job, pv)
        done = await jobs_service.end_without_run(
            session,
            job,
            JobStatus.ABORTED,
            f"aborted on the tool ({result.wafers_processed} of {len(result.wafers)} wafers "
            "processed)",
            hold=aborted_hold,
            event_type="JOB_ABORTED",
            principal=who,
            clock=clock,
            result=result,
        )
    else:
        done = False
    await session.flush()
    return f"{action.value}" if done else f"{action.value} (no change: job {job.status.value})"


async def apply_substrate_event(
    session: AsyncSession, tool: ToolRef, event: SubstrateEvent, *, clock: Clock
) -> str:
    now = clock.now()
    key = mapping.event_key(
        tool.code, event.job_order_id, f"{event.substrate_id}/{event.state}", event.sequence
    )
    if not await _claim(session, tool, key, now):
        return "duplicate"
    job = await jobs_service.find_job(session, event.job_order_id, for_update=False)
    if job is None or job.equipment_id != tool.id:
        return "unknown job"
    await jobs_service.record_wafers(
        session,
        job,
        [
            mapping.WaferReport(
                event.substrate_id, event.slot, event.state, event.chamber, event.measurements
            )
        ],
        now,
    )
    return "recorded"


async def apply_item_state(
    session: AsyncSession, tool: ToolRef, item_state: str, *, clock: Clock
) -> str:
    """The tool's MachineryItemState → an E10 transition (mapping.e10_transition)."""
    equipment = await equipment_service.get_equipment(session, tool.code, for_update=True)
    target = mapping.e10_transition(item_state, equipment.e10_state, equipment.e10_substate)
    if target is None:
        return "no change"
    now = clock.now()
    if target.state.value == "SBY" and await _lots_on(session, tool.id):
        target = mapping.E10Target(E10State.PRD, DEFAULT_SUBSTATE[E10State.PRD], target.reason)
    if (target.state, target.substate) == (equipment.e10_state, equipment.e10_substate):
        return "no change"
    equipment_service.record_state(
        session,
        equipment,
        target.state,
        target.substate,
        actor=principal_for(tool).username,
        at=now,
        recorded_at=now,
        source=StateChangeSource.TOOL,
        reason=target.reason,
    )
    equipment.last_signal_at = now
    await session.flush()
    return f"{target.substate}"


async def _lots_on(session: AsyncSession, equipment_id: int) -> int:
    return len(list(await session.scalars(select(Lot.id).where(Lot.equipment_id == equipment_id))))


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


async def reconcile_job(
    session: AsyncSession,
    tool: ToolRef,
    job_order_id: str,
    found: JobResult | None,
    *,
    clock: Clock,
    aborted_hold: bool,
) -> str:
    """After a (re)connect: what the tool says about a job the MES has on it.

    Unknown to the tool → the job is never resent (it may have run on a tool that lost its
    memory): ``sent`` becomes failed, running/paused becomes aborted, and the lot goes back to
    its step on hold EQUIPMENT for a person to check the wafers. Known → its state is applied
    as if the event had arrived (the job state machine ignores what was applied already).
    """
    job = await jobs_service.find_job(session, job_order_id)
    if job is None or job.status in FINAL:
        return "nothing to do"
    who = principal_for(tool)
    if found is None:
        lost_while = job.status
        target = JobStatus.FAILED if lost_while is JobStatus.SENT else JobStatus.ABORTED
        done = await jobs_service.end_without_run(
            session,
            job,
            target,
            f"job order not found on the tool after reconnect (MES had it {lost_while.value}); "
            "not resent",
            hold=True,
            event_type="JOB_LOST",
            principal=who,
            clock=clock,
        )
        return f"lost -> {target.value}" if done else "no change"
    return await _apply_job_state(
        session,
        tool,
        job,
        found.state,
        found.substate,
        found,
        clock=clock,
        aborted_hold=aborted_hold,
        pv=None,
    )


async def fail_job(
    session: AsyncSession, tool: ToolRef, job_order_id: str, error: str, *, clock: Clock
) -> str:
    """The tool refused the job (or its recipe): it never ran; the lot goes back to its step."""
    job = await jobs_service.find_job(session, job_order_id)
    if job is None:
        return "unknown job"
    done = await jobs_service.end_without_run(
        session,
        job,
        JobStatus.FAILED,
        error,
        hold=False,
        event_type="JOB_FAILED",
        principal=principal_for(tool),
        clock=clock,
    )
    return "failed" if done else "no change"


async def open_job_ids(session: AsyncSession, equipment_id: int) -> list[tuple[str, JobStatus]]:
    rows = await session.execute(
        select(EquipmentJob.job_order_id, EquipmentJob.status)
        .where(
            EquipmentJob.equipment_id == equipment_id,
            EquipmentJob.status.in_([JobStatus.SENT, JobStatus.RUNNING, JobStatus.PAUSED]),
        )
        .order_by(EquipmentJob.id)
    )
    return [(j, st) for j, st in rows.all()]


__all__ = ["selectinload"]
