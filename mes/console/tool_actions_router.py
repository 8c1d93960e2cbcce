"""Console actions on a tool (POST, CSRF-checked): E10 state, jobs, preventive maintenance.

Each runs the API's service function through ``actions.perform``, as ``actions_router`` does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth import roles
from mes.console.actions import perform
from mes.console.actions_router import form_of, run_action
from mes.console.sessions import PostingUser
from mes.equipment import service as equipment_service
from mes.equipment.models import Equipment
from mes.equipment.schemas import StateChange
from mes.equipment.states import E10State
from mes.errors import InvalidInput
from mes.jobs import schemas as job_schemas
from mes.jobs import service as jobs_service
from mes.jobs.states import JobCommand
from mes.kit.api import CODE_PATTERN
from mes.lots import service as lots_service

router = APIRouter(prefix="/console", include_in_schema=False)

Code = Annotated[str, Path(min_length=1, max_length=32, pattern=CODE_PATTERN)]
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


def _back(tool: str) -> str:
    return f"/console/tools/{tool}"


@router.post("/tools/{tool}/state", response_class=HTMLResponse)
async def change_state(request: Request, tool: Code, user: PostingUser) -> Response:
    form = await form_of(request)

    async def work(session: AsyncSession) -> str:
        try:
            change = StateChange(
                state=E10State(form.get("state", "")),
                substate=form.get("substate") or None,
                reason=form.get("reason", "").strip() or None,
                version=int(form.get("version", "0")),
            )
        except (ValidationError, ValueError) as exc:
            raise InvalidInput(
                "choose a state (and a substate of it)", code="request.invalid"
            ) from exc
        changed = await equipment_service.change_state(
            session, tool, change, actor=user.username, clock=request.app.state.clock
        )
        return f"{tool} is now {changed.e10_state.value} ({changed.e10_substate})."

    return await run_action(request, user, _back(tool), lambda: perform(
        request, user, roles.EQUIPMENT_STATE, "equipment.change_state", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/tools/{tool}/jobs", response_class=HTMLResponse)
async def request_job(request: Request, tool: Code, user: PostingUser) -> Response:
    """Run a lot on this tool: track it in and queue the job for the tool's adapter."""
    form = await form_of(request)
    lot = form.get("lot", "")

    async def work(session: AsyncSession) -> str:
        job = await jobs_service.request_job(
            session,
            lot,
            job_schemas.JobRequest(tool=tool),
            principal=user.principal,
            clock=request.app.state.clock,
        )
        return f"Job {job.job_order_id} requested: lot {lot} on {tool}."

    return await run_action(request, user, _back(tool), lambda: perform(
        request, user, roles.LOT_MOVE, "jobs.request_job", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/tools/{tool}/jobs/{job}/{command}", response_class=HTMLResponse)
async def command_job(
    request: Request, tool: Code, job: JobId, command: JobCommand, user: PostingUser
) -> Response:
    """Abort, pause or resume a job: the owning adapter carries it out on the tool."""
    form = await form_of(request)

    async def work(session: AsyncSession) -> str:
        await jobs_service.request_command(
            session, job, command, principal=user.principal, clock=request.app.state.clock
        )
        return f"{command.value.capitalize()} requested for job {job}."

    return await run_action(request, user, _back(tool), lambda: perform(
        request, user, roles.LOT_MOVE, "jobs.command_job", work, key=form.get("key")
    ))  # fmt: skip


async def _lots_on(session: AsyncSession, tool: Equipment) -> int:
    # Asked of the lots domain (equipment sits below it), as the API's PM start does.
    running = lots_service.lot_query(lots_service.LotFilter(tool=tool.code)).order_by(None)
    return int(await session.scalar(select(func.count()).select_from(running.subquery())) or 0)


@router.post("/tools/{tool}/pm/start", response_class=HTMLResponse)
async def start_pm(request: Request, tool: Code, user: PostingUser) -> Response:
    form = await form_of(request)
    plan = form.get("plan", "")

    async def work(session: AsyncSession) -> str:
        await equipment_service.start_pm(
            session, tool, plan, lots_on_tool=_lots_on, actor=user.username,
            clock=request.app.state.clock,
        )  # fmt: skip
        return f"PM {plan} started on {tool}: the tool is in SDT.PM."

    return await run_action(request, user, _back(tool), lambda: perform(
        request, user, roles.PM_PERFORM, "equipment.start_pm", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/tools/{tool}/pm/complete", response_class=HTMLResponse)
async def complete_pm(request: Request, tool: Code, user: PostingUser) -> Response:
    form = await form_of(request)

    async def work(session: AsyncSession) -> str:
        notes = form.get("notes", "").strip() or None
        await equipment_service.complete_pm(
            session, tool, notes, actor=user.username, clock=request.app.state.clock
        )
        return f"PM completed on {tool}: the tool is back in standby."

    return await run_action(request, user, _back(tool), lambda: perform(
        request, user, roles.PM_PERFORM, "equipment.complete_pm", work, key=form.get("key")
    ))  # fmt: skip
