"""Reconciliation after a (re)connect: the MES's open jobs on a tool against what the tool
says about each of them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.jobs import service as jobs_service
from mes.jobs.models import EquipmentJob
from mes.jobs.states import FINAL, JobStatus
from mes.opcua.events import apply_job_state
from mes.opcua.mapping import JobResult, ProcessValueBuffer
from mes.opcua.tools import ToolRef, principal_for


async def reconcile_job(
    session: AsyncSession,
    tool: ToolRef,
    job_order_id: str,
    found: JobResult | None,
    *,
    clock: Clock,
    aborted_hold: bool,
    pv: ProcessValueBuffer | None = None,
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
    return await apply_job_state(
        session,
        tool,
        job,
        found.state,
        found.substate,
        found,
        clock=clock,
        aborted_hold=aborted_hold,
        pv=pv,  # what the adapter sampled before the session ended: kept, not lost
    )


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
