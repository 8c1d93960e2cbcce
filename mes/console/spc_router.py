"""SPC pages of the console: the chart list (all, or those of a tool or a lot) and one chart
with its points, centre line, control and spec limits, violations and capability, drawn as
inline SVG on the server (no script library; a table of the points beside it for screen
readers and for copying)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.console import spc_svg
from mes.console.actions import read
from mes.console.sessions import User
from mes.console.web import render
from mes.equipment.models import Equipment
from mes.kit.api import CODE_PATTERN
from mes.lots.models import Lot
from mes.quality import charts as quality_charts
from mes.quality.models import EdcPlan, SpcChart, SpcLimits, SpcPoint, SpcViolation

router = APIRouter(prefix="/console", include_in_schema=False)

Code = Annotated[str, Query(min_length=1, max_length=32, pattern=CODE_PATTERN)]
LOT_CODE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"  # lot codes may hold dots (splits)
LotCode = Annotated[str, Query(min_length=1, max_length=64, pattern=LOT_CODE)]


@dataclass
class ChartRow:
    id: int
    code: str
    plan: str
    parameter: str
    context: dict[str, Any]
    kind: str
    active: bool
    limits: SpcLimits | None = None
    points: int = 0
    last_at: datetime | None = None
    open_violations: int = 0


async def chart_rows(
    session: AsyncSession, *, tool: str | None = None, lot: str | None = None
) -> list[ChartRow]:
    """Every chart (or those of a tool: charted for it or with its points; or with points of a
    lot), with its current limits, points and open violations: five queries whatever the count."""
    stmt = (
        select(SpcChart, EdcPlan.name)
        .join(EdcPlan, EdcPlan.id == SpcChart.plan_id)
        .order_by(SpcChart.code)
    )
    rows = (await session.execute(stmt)).all()
    if tool is not None:
        tool_id = await session.scalar(select(Equipment.id).where(Equipment.code == tool))
        with_points = set(
            await session.scalars(
                select(SpcPoint.chart_id).where(SpcPoint.equipment_id == tool_id).distinct()
            )
        )
        rows = [r for r in rows if r[0].id in with_points or r[0].context.get("tool") == tool]
    if lot is not None:
        lot_id = await session.scalar(select(Lot.id).where(Lot.code == lot))
        with_points = set(
            await session.scalars(
                select(SpcPoint.chart_id).where(SpcPoint.lot_id == lot_id).distinct()
            )
        )
        rows = [r for r in rows if r[0].id in with_points]
    found = {
        c.id: ChartRow(c.id, c.code, plan, c.parameter, c.context, c.kind, c.active)
        for c, plan in rows
    }
    ids = list(found)
    if not ids:
        return []
    newest = (
        select(SpcLimits.chart_id, func.max(SpcLimits.version).label("v"))
        .where(SpcLimits.chart_id.in_(ids))
        .group_by(SpcLimits.chart_id)
        .subquery()
    )
    for limits in await session.scalars(
        select(SpcLimits).join(
            newest, (newest.c.chart_id == SpcLimits.chart_id) & (newest.c.v == SpcLimits.version)
        )
    ):
        found[limits.chart_id].limits = limits
    for chart_id, count, last_at in await session.execute(
        select(SpcPoint.chart_id, func.count(), func.max(SpcPoint.collected_at))
        .where(SpcPoint.chart_id.in_(ids))
        .group_by(SpcPoint.chart_id)
    ):
        found[chart_id].points, found[chart_id].last_at = count, last_at
    for open_of, count in await session.execute(
        select(SpcViolation.chart_id, func.count())
        .where(SpcViolation.chart_id.in_(ids), SpcViolation.acknowledged_at.is_(None))
        .group_by(SpcViolation.chart_id)
    ):
        if open_of is not None:
            found[open_of].open_violations = count
    return list(found.values())


async def chart_links(
    session: AsyncSession, *, tool: str | None = None, lot: str | None = None
) -> list[tuple[int, str, str, int]]:
    """(id, code, parameter, open violations) of the charts that concern a tool or a lot: what
    the tool and lot pages link to."""
    return [
        (r.id, r.code, r.parameter, r.open_violations)
        for r in await chart_rows(session, tool=tool, lot=lot)
    ]


@router.get("/spc", response_class=HTMLResponse)
async def chart_list(
    request: Request, user: User, tool: Code | None = None, lot: LotCode | None = None
) -> Response:
    rows = await read(request, lambda s: chart_rows(s, tool=tool, lot=lot))
    return render(
        request, "spc_list.html", user, rows=rows, tool=tool or "", lot=lot or "", nav="spc"
    )


@router.get("/spc/{chart_id}", response_class=HTMLResponse)
async def chart_page(
    request: Request,
    user: User,
    chart_id: Annotated[int, Path(ge=1, le=2**62)],
    last: Annotated[int, Query(ge=5, le=500)] = 60,
) -> Response:
    async def load(session: AsyncSession) -> tuple[Any, list[tuple[Any, ...]]]:
        data = await quality_charts.chart_data(session, chart_id, last=last)
        violations = (
            await session.execute(
                select(SpcViolation, Lot.code, Equipment.code)
                .join(Lot, Lot.id == SpcViolation.lot_id)
                .join(Equipment, Equipment.id == SpcViolation.equipment_id)
                .where(SpcViolation.chart_id == chart_id)
                .order_by(SpcViolation.id.desc())
                .limit(30)
            )
        ).all()
        return data, [tuple(v) for v in violations]

    data, violations = await read(request, load)
    limits, spec = data.chart.limits, data.chart.spec
    drawing = spc_svg.draw(
        [
            spc_svg.PointIn(p.number, p.value, p.violations, p.out_of_spec, p.lot)
            for p in data.points
        ],
        center=limits.center if limits else None,
        ucl=limits.ucl if limits else None,
        lcl=limits.lcl if limits else None,
        usl=spec.get("usl"),
        lsl=spec.get("lsl"),
        target=spec.get("target"),
    )
    return render(
        request, "spc_chart.html", user, data=data, chart=data.chart, drawing=drawing,
        violations=violations, last=last, nav="spc",
    )  # fmt: skip
