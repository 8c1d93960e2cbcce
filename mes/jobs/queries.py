"""Equipment jobs as read: one by its job order id (locked or not), a lot's jobs, a tool's open
jobs, and the API's view of a job. ``mes.jobs.service`` re-exports them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.jobs import schemas as s
from mes.jobs import states
from mes.jobs.models import EquipmentJob, EquipmentJobLot
from mes.kit.lookup import get_by_key
from mes.lots import service as lots_service
from mes.lots.models import Lot
from mes.recipes.models import RecipeVersion

JOB_OPTIONS = (
    selectinload(EquipmentJob.equipment),
    selectinload(EquipmentJob.lot),
    selectinload(EquipmentJob.members).selectinload(EquipmentJobLot.lot),
    selectinload(EquipmentJob.recipe_version).selectinload(RecipeVersion.recipe),
)


async def get_job(
    session: AsyncSession, job_order_id: str, *, for_update: bool = False
) -> EquipmentJob:
    return await get_by_key(
        session,
        EquipmentJob,
        EquipmentJob.job_order_id,
        job_order_id,
        code="job.not_found",
        what="job",
        options=JOB_OPTIONS,
        for_update=for_update,
    )


async def find_job(
    session: AsyncSession, job_order_id: str, *, for_update: bool = True, related: bool = True
) -> EquipmentJob | None:
    """``related=False``: the job row alone, without its tool, lots and recipe (five reads
    fewer); for a caller that needs only the job's own columns, such as a wafer event."""
    stmt = select(EquipmentJob).where(EquipmentJob.job_order_id == job_order_id)
    if related:
        stmt = stmt.options(*JOB_OPTIONS)
    if for_update:
        stmt = stmt.with_for_update(key_share=True)
    return (await session.scalars(stmt)).one_or_none()


async def jobs_of_lot(session: AsyncSession, code: str | Lot) -> list[EquipmentJob]:
    """Every job order the lot was part of (alone or in a batch), oldest first (a lot already
    read may be given instead of its code)."""
    lot = code if isinstance(code, Lot) else await lots_service.get_lot(session, code)
    return list(
        await session.scalars(
            select(EquipmentJob)
            .options(*JOB_OPTIONS)
            .join(EquipmentJobLot, EquipmentJobLot.job_id == EquipmentJob.id)
            .where(EquipmentJobLot.lot_id == lot.id)
            .order_by(EquipmentJob.id)
        )
    )


async def open_jobs_of_tool(session: AsyncSession, equipment_id: int) -> list[EquipmentJob]:
    """Jobs of a tool the MES has not finished with (requested, on the tool, or with a command)."""
    return list(
        await session.scalars(
            select(EquipmentJob)
            .options(*JOB_OPTIONS)
            .where(
                EquipmentJob.equipment_id == equipment_id,
                EquipmentJob.status.not_in(sorted(states.FINAL)),
            )
            .order_by(EquipmentJob.id)
        )
    )


def job_read(job: EquipmentJob) -> s.JobRead:
    return s.JobRead(
        job_order_id=job.job_order_id,
        lot=job.lot.code,
        lots=[m.lot.code for m in job.members],
        tool=job.equipment.code,
        recipe=job.recipe_version.recipe.name,
        recipe_version=job.recipe_version.version,
        attempt=job.attempt,
        status=job.status,
        command=job.command,
        requested_by=job.requested_by,
        requested_at=job.requested_at,
        sent_at=job.sent_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        wafers_processed=job.wafers_processed,
        tool_state=job.tool_state,
        last_error=job.last_error,
    )
