"""Engineering views of the console: E10 and OEE per tool group (a table and two server-drawn
SVG charts, ``metrics_svg``), from the same report as ``GET /api/v1/metrics/equipment``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.console import metrics_svg
from mes.console.actions import read
from mes.console.sessions import User
from mes.console.web import render
from mes.equipment import metrics
from mes.equipment.models import Equipment
from mes.equipment.states import E10State
from mes.fabs.models import Fab, ToolGroup
from mes.kit.api import CODE_PATTERN
from mes.reports import equipment_performance as performance

router = APIRouter(prefix="/console", include_in_schema=False)

Code = Annotated[str, Query(min_length=1, max_length=32, pattern=CODE_PATTERN)]
STATES = [E10State.PRD, E10State.SBY, E10State.ENG, E10State.SDT, E10State.UDT, E10State.NST]


@dataclass
class GroupFigures:
    tool_group: str
    tools: int
    share: dict[str, float]  # E10 state -> percent of the window
    e10: metrics.E10Metrics
    oee: metrics.Oee


async def _figures(
    session: AsyncSession, fab: str, hours: int, now: datetime
) -> list[GroupFigures]:
    start = now - timedelta(hours=hours)
    groups = list(
        await session.scalars(
            select(ToolGroup.code)
            .join(Equipment, Equipment.tool_group_id == ToolGroup.id)
            .join(Fab, Fab.id == Equipment.fab_id)
            .where(Fab.code == fab)
            .group_by(ToolGroup.code)
            .order_by(ToolGroup.code)
        )
    )
    found = []
    for group in groups:
        result = await performance.figures(
            session, performance.Scope(fab=fab, tool_group=group), start, now
        )
        total = result.e10.times.total or 1.0
        share = {s.value: result.e10.times[s] / total * 100 for s in STATES}
        found.append(GroupFigures(group, len(result.tools), share, result.e10, result.oee))
    return found


@router.get("/metrics", response_class=HTMLResponse)
async def e10_metrics(
    request: Request,
    user: User,
    fab: Code | None = None,
    hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24,
) -> Response:
    """E10 time per state, availability, MTBF, MTTR and OEE per tool group of a fab."""
    fabs = list(await read(request, lambda s: s.scalars(select(Fab.code).order_by(Fab.code))))
    chosen = fab or (fabs[0] if fabs else "")
    now = request.app.state.clock.now()
    rows = await read(request, lambda s: _figures(s, chosen, hours, now))
    states = [s.value for s in STATES]
    e10_chart = metrics_svg.e10_bars(
        [(r.tool_group, r.share, r.e10.times.total) for r in rows], states
    )
    oee_chart = metrics_svg.oee_bars(
        [(r.tool_group, r.oee.oee, r.oee.availability, r.oee.performance, r.oee.quality)
         for r in rows]
    )  # fmt: skip
    return render(
        request, "metrics.html", user, rows=rows, fab=chosen, fabs=fabs, hours=hours,
        states=states, e10_chart=e10_chart, oee_chart=oee_chart,
    )  # fmt: skip
