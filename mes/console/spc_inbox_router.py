"""The engineers' SPC inbox in the console: every open violation across charts (newest first),
with its chart, lot and tool, and the OCAP closure — acknowledge with a comment, optionally
returning the inhibited tool to standby — through the same service as
``POST /api/v1/quality/violations/{id}/acknowledge``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth import roles
from mes.console.actions import perform, read
from mes.console.actions_router import form_of, run_action
from mes.console.sessions import PostingUser, User
from mes.console.web import render
from mes.equipment.models import Equipment
from mes.errors import InvalidInput
from mes.lots.models import Lot
from mes.quality import ocap
from mes.quality.models import SpcChart, SpcViolation

router = APIRouter(prefix="/console", include_in_schema=False)

INBOX_SIZE = 200  # open violations shown; an inbox longer than this is a process problem


async def open_violations(session: AsyncSession) -> list[tuple[Any, ...]]:
    """(violation, chart code, lot code, tool code) of the open violations, newest first."""
    rows = await session.execute(
        select(SpcViolation, SpcChart.code, Lot.code, Equipment.code)
        .outerjoin(SpcChart, SpcChart.id == SpcViolation.chart_id)  # out of spec: no chart
        .join(Lot, Lot.id == SpcViolation.lot_id)
        .join(Equipment, Equipment.id == SpcViolation.equipment_id)
        .where(SpcViolation.acknowledged_at.is_(None))
        .order_by(SpcViolation.id.desc())
        .limit(INBOX_SIZE)
    )
    return [tuple(r) for r in rows.all()]


@router.get("/violations", response_class=HTMLResponse)
async def inbox(request: Request, user: User) -> Response:
    rows = await read(request, open_violations)
    return render(
        request,
        "spc_inbox.html",
        user,
        rows=rows,
        limit=INBOX_SIZE,
        may_acknowledge=user.may(roles.SPC_ACKNOWLEDGE),
        nav="spc",
    )


@router.post("/violations/{violation_id}/acknowledge", response_class=HTMLResponse)
async def acknowledge(
    request: Request,
    violation_id: Annotated[int, Path(ge=1, le=2**62)],
    user: PostingUser,
) -> Response:
    form = await form_of(request)
    comment = form.get("comment", "").strip()
    release_tool = form.get("release_tool") == "yes"

    async def work(session: AsyncSession) -> str:
        if len(comment) < 3:
            raise InvalidInput(
                "say what was found and done (3 characters or more)", code="spc.comment_required"
            )
        await ocap.acknowledge(
            session,
            violation_id,
            comment=comment,
            release_tool=release_tool,
            actor=user.principal.username,
            clock=request.app.state.clock,
        )
        released = " and its tool released" if release_tool else ""
        return f"Violation {violation_id} acknowledged{released}."

    return await run_action(request, user, "/console/violations", lambda: perform(
        request, user, roles.SPC_ACKNOWLEDGE, "quality.acknowledge", work, key=form.get("key")
    ))  # fmt: skip
