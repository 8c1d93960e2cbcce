"""Jobs on tools: start a lot's job through the tool's adapter, follow it, abort/pause/resume."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mes.auth import roles
from mes.auth.dependencies import requires, sign
from mes.auth.roles import Role
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.jobs import schemas as s
from mes.jobs import service
from mes.kit.api import ClockDep, CodePath
from mes.kit.idempotency import KeyHeader, idempotent
from mes.lots.commands import EngineeringRun
from mes.lots.type_rules import Release

lot_jobs_router = APIRouter(prefix="/lots", tags=["jobs"])
router = APIRouter(prefix="/jobs", tags=["jobs"])

Mover = Annotated[Principal, requires(roles.LOT_MOVE)]
JobPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
]


@lot_jobs_router.post("/{lot}/jobs", response_model=s.JobRead, status_code=201)
async def request_job(
    request: Request,
    lot: CodePath,
    body: s.JobRequest,
    by: Mover,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
) -> JSONResponse | BaseModel:
    """Track the lot in on the tool and queue its job order (state ``requested``) in the same
    transaction; the adapter owning the tool then downloads and selects the recipe and starts
    the job, and tracks the lot out when the tool reports the job ended. An engineering lot's
    run on an ENG tool or an unreleased recipe version takes ``engineering`` (e-signature of
    an engineer), as at track-in."""

    async def op() -> s.JobRead:
        engineering = None
        if body.engineering is not None:
            # As at track-in: the caller signs, and must be an engineer for the run to go.
            await sign(request, session, by, body.engineering.signature)
            engineering = EngineeringRun(
                Release(by.username, signer_is_engineer=Role.ENGINEER in by.roles),
                body.engineering.recipe_version,
            )
        job = await service.request_job(
            session, lot, body, principal=by, clock=clock, engineering=engineering
        )
        return service.job_read(await service.get_job(session, job.job_order_id))

    return await idempotent(request, session, key, by.username, clock.now(), op, status_code=201)


@lot_jobs_router.get("/{lot}/jobs", response_model=list[s.JobRead])
async def lot_jobs(lot: CodePath, session: ReadSession) -> list[s.JobRead]:
    """Every job order of the lot, oldest first."""
    return [service.job_read(j) for j in await service.jobs_of_lot(session, lot)]


@router.post("", response_model=s.JobRead, status_code=201)
async def request_batch(
    request: Request,
    body: s.JobBatchRequest,
    by: Mover,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
) -> JSONResponse | BaseModel:
    """Track several lots in on a batch tool (furnace, wet bench) and queue one job order that
    runs them together; all or nothing. The tool's batch limits and compatibility are checked
    as at track-in, and every lot must resolve to the same recipe version."""

    async def op() -> s.JobRead:
        job = await service.request_batch(
            session,
            body.tool,
            body.lots,
            step_sequence=body.step_sequence,
            principal=by,
            clock=clock,
        )
        return service.job_read(await service.get_job(session, job.job_order_id))

    return await idempotent(request, session, key, by.username, clock.now(), op, status_code=201)


@router.get("/{job_order_id}", response_model=s.JobRead)
async def get_job(job_order_id: JobPath, session: ReadSession) -> s.JobRead:
    """One job order: where it is, what the tool last said, the last error."""
    return service.job_read(await service.get_job(session, job_order_id))


@router.post("/{job_order_id}/commands", response_model=s.JobRead)
async def command_job(
    job_order_id: JobPath,
    body: s.JobCommandRequest,
    by: Mover,
    session: WriteSession,
    clock: ClockDep,
) -> s.JobRead:
    """Ask the tool's adapter to abort, pause or resume the job (a job not yet sent is
    withdrawn at once on abort, its lots back to Waiting)."""
    job = await service.request_command(
        session, job_order_id, body.command, principal=by, clock=clock
    )
    return service.job_read(job)
