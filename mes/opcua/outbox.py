"""The adapter's outbox: jobs to send (requested ones, committed as sent before the call to the
tool), operator commands to carry out, and the job a tool refused."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.jobs import service as jobs_service
from mes.jobs.models import EquipmentJob
from mes.jobs.states import JobStatus
from mes.opcua.leases import owns
from mes.opcua.tools import ToolRef, principal_for


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
