"""Applying what a tool reports: job status and substrate events, and its MachineryItemState.

Each event is claimed first with an idempotency key made of the tool's own ids, so a duplicated
or replayed event is applied once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.equipment import service as equipment_service
from mes.equipment.models import StateChangeSource
from mes.equipment.states import DEFAULT_SUBSTATE, E10State
from mes.jobs import service as jobs_service
from mes.jobs.models import EquipmentJob, EquipmentJobLot
from mes.jobs.states import FINAL, JobStatus
from mes.kit.idempotency import claim_key
from mes.lots.models import Lot, Wafer
from mes.lots.states import WaferState
from mes.opcua import mapping
from mes.opcua.mapping import JobAction, JobEvent, JobResult, SubstrateEvent
from mes.opcua.quarantine import quarantine
from mes.opcua.tools import ToolRef, principal_for

log = logging.getLogger(__name__)


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
        return _unknown(tool, event.job_order_id, event.state)
    try:
        result = mapping.parse_job_response(event.response)
        processed_max = await _wafers_of(session, job)
        if result.wafers_processed > processed_max:
            raise ValueError(
                f"WafersProcessed {result.wafers_processed} is more than the job's "
                f"{processed_max} wafers"
            )
    except (ValueError, TypeError) as exc:
        # Unreadable: kept in quarantine, and read as "nothing processed", so the lot is held
        # (partial run) instead of passing on a result nobody could read.
        await quarantine(
            session,
            tool,
            kind="JobResponse",
            payload=event.response[:4000],
            error=f"{type(exc).__name__}: {exc}"[:2000],
            clock=clock,
        )
        result = JobResult(event.state, event.substate, 0, ())
    return await apply_job_state(
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


async def apply_job_state(
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
    """A job state the tool reports (by event, or when asked after a reconnect) applied to the
    job and its lots (per ``mapping.job_action``)."""
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
    # A wafer event reads and writes only the job's own row and its wafer results: per wafer
    # and state, so the job's related rows are not loaded.
    job = await jobs_service.find_job(session, event.job_order_id, for_update=False, related=False)
    if job is None or job.equipment_id != tool.id:
        return _unknown(tool, event.job_order_id, event.state)
    if job.status in FINAL:
        # Late (out of order): the job was settled by its end event or a reconciliation, and
        # the wafers' results with it; what came after must not rewrite them.
        log.info(
            "%s: substrate event %s/%s after job %s ended (%s): ignored",
            tool.code,
            event.substrate_id,
            event.state,
            job.job_order_id,
            job.status.value,
        )
        return f"late: job {job.status.value}"
    if not await _wafer_of_job(session, job, event.substrate_id):
        raise ValueError(
            f"substrate {event.substrate_id!r} is not a wafer of job {job.job_order_id}"
        )
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


async def apply_control_state(session: AsyncSession, tool: ToolRef, control_state: str) -> str:
    """Record the tool's E30 control state, so the dispatcher offers only tools that take
    remote jobs (OnlineRemote)."""
    equipment = await equipment_service.get_equipment(session, tool.code, for_update=True)
    if equipment.control_state == control_state[:16]:
        return "no change"
    equipment.control_state = control_state[:16]
    await session.flush()
    return f"control state {control_state}"


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


def _unknown(tool: ToolRef, job_order_id: str, state: str) -> str:
    # A job the MES did not send (started on the tool by hand, or a tool's mistake): nothing
    # of the MES's changes, but people should be able to see that it happened.
    log.warning(
        "%s: %s event for job %r, which the MES did not send there", tool.code, state, job_order_id
    )
    return "unknown job"


async def _wafers_of(session: AsyncSession, job: EquipmentJob) -> int:
    """The active wafers of the job's lots: a tool cannot have processed more."""
    return int(
        await session.scalar(
            select(func.count(Wafer.id))
            .join(EquipmentJobLot, EquipmentJobLot.lot_id == Wafer.lot_id)
            .where(EquipmentJobLot.job_id == job.id, Wafer.state == WaferState.ACTIVE)
        )
        or 0
    )


async def _wafer_of_job(session: AsyncSession, job: EquipmentJob, substrate_id: str) -> bool:
    found = await session.scalar(
        select(Wafer.id)
        .join(EquipmentJobLot, EquipmentJobLot.lot_id == Wafer.lot_id)
        .where(EquipmentJobLot.job_id == job.id, Wafer.scribe_id == substrate_id)
        .limit(1)
    )
    return found is not None
