"""SPC charts, their points and limits, violations with their acknowledgement (the OCAP
closure), notifications, and the values collected for a lot."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import JSONResponse
from sqlalchemy import Select, select

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.equipment.models import Equipment
from mes.kit.api import ClockDep, CodeStr, Page, PageQuery, fetch_page
from mes.kit.idempotency import OnceDep
from mes.lots.models import Lot
from mes.quality import charts, ocap
from mes.quality import schemas as s
from mes.quality.models import (
    EdcPlan,
    EdcValue,
    QualityNotification,
    SpcChart,
    SpcLimits,
    SpcViolation,
)

router = APIRouter(prefix="/quality", tags=["quality"])

ChartWriter = Annotated[Principal, requires(roles.SPC_CHART)]
Acknowledger = Annotated[Principal, requires(roles.SPC_ACKNOWLEDGE)]
IdPath = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/charts", response_model=list[s.ChartRead])
async def list_charts(
    session: ReadSession,
    plan: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> list[s.ChartRead]:
    """Every chart (optionally of one plan), with its current limits."""
    stmt = select(SpcChart).order_by(SpcChart.code)
    if plan is not None:
        stmt = stmt.join(EdcPlan, EdcPlan.id == SpcChart.plan_id).where(EdcPlan.name == plan)
    return [await charts.chart_read(session, c) for c in await session.scalars(stmt)]


@router.post("/charts", response_model=s.ChartRead, status_code=status.HTTP_201_CREATED)
async def create_chart(
    body: s.ChartCreate, by: ChartWriter, session: WriteSession, once: OnceDep
) -> s.ChartRead | JSONResponse:
    """Chart a plan parameter in a context (the keys given: product, operation, tool,
    chamber); its first ``baseline_points`` points set its limits."""

    async def op() -> s.ChartRead:
        return await charts.chart_read(
            session, await charts.create_chart(session, body, actor=by.username)
        )

    return await once.run(op)


@router.get("/charts/{chart_id}", response_model=s.ChartData)
async def get_chart(
    chart_id: IdPath,
    session: ReadSession,
    last: Annotated[int, Query(ge=1, le=2000, description="points, newest last")] = 200,
) -> s.ChartData:
    """The chart: points (with their limits, zone and the rules they broke), zones of the
    current limits, capability (Cp, Cpk, Pp, Ppk)."""
    return await charts.chart_data(session, chart_id, last=last)


@router.patch("/charts/{chart_id}", response_model=s.ChartRead)
async def update_chart(
    chart_id: IdPath, body: s.ChartUpdate, _by: ChartWriter, session: WriteSession
) -> s.ChartRead:
    """Switch run rules, change OCAP actions, or (de)activate the chart."""
    return await charts.chart_read(session, await charts.update_chart(session, chart_id, body))


@router.get("/charts/{chart_id}/limits", response_model=list[s.LimitsRead])
async def limits_history(chart_id: IdPath, session: ReadSession) -> list[s.LimitsRead]:
    """Every limits version of the chart, oldest first."""
    chart = await charts.get_chart(session, chart_id)
    rows = await session.scalars(select(SpcLimits).where(SpcLimits.chart_id == chart.id))
    return [charts.limits_read(chart, r) for r in sorted(rows, key=lambda r: r.version)]


@router.post(
    "/charts/{chart_id}/limits", response_model=s.LimitsRead, status_code=status.HTTP_201_CREATED
)
async def set_limits(
    chart_id: IdPath,
    body: s.LimitsSet,
    by: ChartWriter,
    session: WriteSession,
    clock: ClockDep,
    once: OnceDep,
) -> s.LimitsRead | JSONResponse:
    """New limits (a new version, with a reason): set by hand, or from a baseline window."""

    async def op() -> s.LimitsRead:
        row = await charts.set_limits(session, chart_id, body, actor=by.username, clock=clock)
        return charts.limits_read(await charts.get_chart(session, chart_id), row)

    return await once.run(op)


def _violation_read(
    v: SpcViolation, chart: str | None, plan: str, lot: str, tool: str
) -> s.ViolationRead:
    return s.ViolationRead(
        id=v.id,
        chart=chart,
        plan=plan,
        parameter=v.parameter,
        rule=v.rule,
        point_number=v.point_number,
        points=v.points,
        lot=lot,
        tool=tool,
        chamber=v.chamber,
        detail=v.detail,
        actions=v.actions,
        detected_at=v.detected_at,
        acknowledged_by=v.acknowledged_by,
        acknowledged_at=v.acknowledged_at,
        comment=v.comment,
    )


def _violations_query() -> Select[SpcViolation, str, str, str, str]:
    return (
        select(SpcViolation, SpcChart.code, EdcPlan.name, Lot.code, Equipment.code)
        .outerjoin(SpcChart, SpcChart.id == SpcViolation.chart_id)
        .join(EdcPlan, EdcPlan.id == SpcViolation.plan_id)
        .join(Lot, Lot.id == SpcViolation.lot_id)
        .join(Equipment, Equipment.id == SpcViolation.equipment_id)
    )


@router.get("/violations", response_model=Page[s.ViolationRead])
async def list_violations(
    session: ReadSession,
    page: PageQuery,
    open_only: Annotated[bool, Query(alias="open", description="unacknowledged only")] = False,
    tool: Annotated[CodeStr | None, Query()] = None,
    lot: Annotated[CodeStr | None, Query()] = None,
    chart_id: Annotated[int | None, Query(alias="chart", ge=1, le=2**62)] = None,
) -> Page[s.ViolationRead]:
    """The engineers' inbox: violations, newest first."""
    stmt = _violations_query().order_by(SpcViolation.id.desc())
    if open_only:
        stmt = stmt.where(SpcViolation.acknowledged_at.is_(None))
    if tool is not None:
        stmt = stmt.where(Equipment.code == tool)
    if lot is not None:
        stmt = stmt.where(Lot.code == lot)
    if chart_id is not None:
        stmt = stmt.where(SpcViolation.chart_id == chart_id)
    rows, total = await fetch_page(session, stmt, page, scalars=False)
    return Page(items=[_violation_read(*r) for r in rows], total=total, **page.model_dump())


@router.post("/violations/{violation_id}/acknowledge", response_model=s.ViolationRead)
async def acknowledge(
    violation_id: IdPath,
    body: s.Acknowledge,
    by: Acknowledger,
    session: WriteSession,
    clock: ClockDep,
) -> s.ViolationRead:
    """Close a violation with a comment; ``release_tool`` returns the tool (or chamber) it
    inhibited to standby. The lot's hold is released on the lot."""
    await ocap.acknowledge(
        session,
        violation_id,
        comment=body.comment,
        release_tool=body.release_tool,
        actor=by.username,
        clock=clock,
    )
    v, chart, plan, lot, tool = (
        await session.execute(_violations_query().where(SpcViolation.id == violation_id))
    ).one()
    return _violation_read(v, chart, plan, lot, tool)


@router.get("/notifications", response_model=list[s.NotificationRead])
async def notifications(
    session: ReadSession,
    after: Annotated[int, Query(ge=0, le=2**62, description="ids after this one")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[s.NotificationRead]:
    """What the ``notify`` action recorded, oldest first: a reader keeps the last id it saw."""
    rows = await session.scalars(
        select(QualityNotification)
        .where(QualityNotification.id > after)
        .order_by(QualityNotification.id)
        .limit(limit)
    )
    return [
        s.NotificationRead(
            id=n.id, violation_id=n.violation_id, message=n.message, created_at=n.created_at
        )
        for n in rows
    ]


@router.get("/values", response_model=list[s.ValueRead])
async def lot_values(session: ReadSession, lot: Annotated[CodeStr, Query()]) -> list[s.ValueRead]:
    """The values collected for a lot, with their context."""
    rows = await session.execute(
        select(EdcValue, EdcPlan.name, Equipment.code)
        .join(Lot, Lot.id == EdcValue.lot_id)
        .join(EdcPlan, EdcPlan.id == EdcValue.plan_id)
        .join(Equipment, Equipment.id == EdcValue.equipment_id)
        .where(Lot.code == lot)
        .order_by(EdcValue.id)
    )
    return [
        s.ValueRead(
            plan=plan,
            parameter=v.parameter,
            slot=v.slot,
            scribe_id=v.scribe_id,
            site=v.site,
            value=v.value,
            operation=v.operation,
            tool=tool,
            chamber=v.chamber,
            source=v.source,
            collected_at=v.collected_at,
        )
        for v, plan, tool in rows.all()
    ]
