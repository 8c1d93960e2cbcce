"""The morning reports in the console: one page per report, the same figures as
``GET /api/v1/reports/...`` (fab or network, a range of days)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.console.actions import read
from mes.console.sessions import User
from mes.console.web import render
from mes.errors import InvalidInput
from mes.fabs.models import Fab
from mes.kit.api import CODE_PATTERN
from mes.reports import morning

router = APIRouter(prefix="/console/reports", include_in_schema=False)

REPORTS = {
    "moves": "Moves and turns",
    "wip": "WIP and cycle time",
    "holds": "Hold Pareto",
    "scrap": "Scrap and rework",
    "delivery": "On-time delivery",
}
FabParam = Annotated[str | None, Query(max_length=32, pattern=f"({CODE_PATTERN})|^$")]


def _day(value: str | None) -> date | None:
    # Empty form fields mean "the default"; a malformed date is refused like the API's range.
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(
            f"{value!r} is not a date (YYYY-MM-DD)", code="report.invalid_range"
        ) from exc


async def _figures(
    session: AsyncSession, name: str, w: morning.Window, escalate_after_h: float
) -> dict[str, Any]:
    if name == "moves":
        return {"rows": await morning.moves(session, w)}
    if name == "wip":
        steps, products = await morning.wip(session, w)
        return {"steps": steps, "products": products}
    if name == "holds":
        codes, escalated = await morning.holds(session, w, escalate_after_h)
        return {"codes": codes, "escalated": escalated, "escalate_after_h": escalate_after_h}
    if name == "scrap":
        by_reason, by_operation, rework = await morning.scrap_and_rework(session, w)
        return {"by_reason": by_reason, "by_operation": by_operation, "rework": rework}
    return {"rows": await morning.delivery(session, w)}


@router.get("", response_class=HTMLResponse)
async def reports_index() -> Response:
    return RedirectResponse("/console/reports/moves", status_code=307)


@router.get("/{name}", response_class=HTMLResponse)
async def report_page(
    request: Request,
    user: User,
    name: Annotated[str, Path(max_length=16)],
    fab: FabParam = None,
    first: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    last: Annotated[str | None, Query(alias="to", max_length=10)] = None,
) -> Response:
    """A morning report of a fab (or the network, fab empty) over a range of days."""
    if name not in REPORTS:
        return RedirectResponse("/console/reports/moves", status_code=303)
    fabs = list(await read(request, lambda s: s.scalars(select(Fab.code).order_by(Fab.code))))
    now = request.app.state.clock.now()
    threshold = request.app.state.settings.report_hold_escalation_h
    scope = fab or None

    async def work(session: AsyncSession) -> tuple[morning.Window, dict[str, Any]]:
        w = await morning.window(session, scope, _day(first), _day(last), now)
        return w, await _figures(session, name, w, threshold)

    w, figures = await read(request, work)
    return render(
        request, "reports.html", user, report=name, reports=REPORTS, fabs=fabs, fab=scope or "",
        w=w, **figures,
    )  # fmt: skip
