"""Tools: master data, E10 state changes and state history."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.equipment import metrics, pm_rules, service
from mes.equipment.models import (
    Equipment,
    EquipmentStateCorrection,
    EquipmentStateEvent,
    EquipmentSubstate,
    PmPlan,
    PmRecord,
)
from mes.equipment.schemas import (
    ChamberRead,
    CorrectionCreate,
    CorrectionRead,
    EquipmentCreate,
    EquipmentRead,
    EquipmentUpdate,
    IntervalRead,
    LoadPortRead,
    MetricsRead,
    OeeRead,
    PmComplete,
    PmPlanChange,
    PmPlanCreate,
    PmPlanRead,
    PmRecordRead,
    PmStart,
    PmStateRead,
    SignalReport,
    StateChange,
    StateEventRead,
    SubstateCreate,
    SubstateRead,
)
from mes.equipment.states import E10State
from mes.errors import InvalidInput
from mes.kit.api import ClockDep, CodePath, CodeStr, Page, PageQuery, Timestamp, fetch_page
from mes.kit.idempotency import KeyHeader, OnceDep, idempotent
from mes.lots import service as lots_service
from mes.quality import ocap
from mes.reports import equipment_performance as performance

router = APIRouter(prefix="/equipment", tags=["equipment"])
substates_router = APIRouter(prefix="/e10-substates", tags=["equipment"])
pm_router = APIRouter(prefix="/pm", tags=["equipment"])
metrics_router = APIRouter(prefix="/metrics", tags=["equipment"])

EquipmentWriter = Annotated[Principal, requires(roles.EQUIPMENT_WRITE)]
StateReporter = Annotated[Principal, requires(roles.EQUIPMENT_STATE)]
SubstateWriter = Annotated[Principal, requires(roles.EQUIPMENT_SUBSTATE)]
Corrector = Annotated[Principal, requires(roles.EQUIPMENT_CORRECT)]
PmPlanner = Annotated[Principal, requires(roles.PM_PLAN)]
PmPerformer = Annotated[Principal, requires(roles.PM_PERFORM)]


def to_read(tool: Equipment) -> EquipmentRead:
    return EquipmentRead(
        code=tool.code,
        name=tool.name,
        fab=tool.fab.code,
        area=tool.area.code,
        tool_group=tool.tool_group.code,
        vendor=tool.vendor,
        model=tool.model,
        opcua_endpoint=tool.opcua_endpoint,
        max_lots=tool.max_lots,
        e10_state=tool.e10_state,
        e10_substate=tool.e10_substate,
        state_since=tool.state_since,
        control_state=tool.control_state,
        last_signal_at=tool.last_signal_at,
        version=tool.version,
        chambers=[
            ChamberRead(name=c.name, e10_state=c.e10_state, e10_substate=c.e10_substate)
            for c in tool.chambers
        ],
        load_ports=[
            LoadPortRead(port_number=p.port_number, transfer_state=p.transfer_state)
            for p in tool.load_ports
        ],
    )


def _event_read(event: EquipmentStateEvent, chamber: str | None) -> StateEventRead:
    return StateEventRead(
        chamber=chamber,
        from_state=event.from_state,
        to_state=event.to_state,
        substate=event.substate,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        source=event.source,
        actor=event.actor,
        reason=event.reason,
    )


@router.get("", response_model=Page[EquipmentRead])
async def list_equipment(
    session: ReadSession,
    page: PageQuery,
    fab: Annotated[CodeStr | None, Query()] = None,
    area: Annotated[CodeStr | None, Query()] = None,
    tool_group: Annotated[CodeStr | None, Query()] = None,
    state: E10State | None = None,
) -> Page[EquipmentRead]:
    """Tools, filterable by fab, area, tool group and E10 state."""
    flt = service.EquipmentFilter(fab=fab, area=area, tool_group=tool_group, state=state)
    rows, total = await fetch_page(session, service.equipment_query(flt), page)
    return Page(items=[to_read(t) for t in rows], total=total, **page.model_dump())


@router.post("", response_model=EquipmentRead, status_code=status.HTTP_201_CREATED)
async def create_equipment(
    body: EquipmentCreate,
    by: EquipmentWriter,
    session: WriteSession,
    clock: ClockDep,
    once: OnceDep,
) -> EquipmentRead | JSONResponse:
    """Install a tool."""

    async def op() -> EquipmentRead:
        return to_read(
            await service.create_equipment(session, body, actor=by.username, clock=clock)
        )

    return await once.run(op)


@router.get("/{tool}", response_model=EquipmentRead)
async def get_equipment(tool: CodePath, session: ReadSession) -> EquipmentRead:
    """One tool with its chambers and load ports."""
    return to_read(await service.get_equipment(session, tool))


@router.patch("/{tool}", response_model=EquipmentRead)
async def update_equipment(
    tool: CodePath, body: EquipmentUpdate, _by: EquipmentWriter, session: WriteSession
) -> EquipmentRead:
    """Change a tool's master data; send the version you read."""
    return to_read(await service.update_equipment(session, tool, body))


@router.post("/{tool}/state", response_model=EquipmentRead)
async def change_state(
    request: Request,
    tool: CodePath,
    body: StateChange,
    by: StateReporter,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
) -> EquipmentRead | JSONResponse:
    """Put a tool or one of its chambers into an E10 state; send the version you read.

    Tool adapters retry: with an ``Idempotency-Key`` a retry answers the first result.
    """

    async def op() -> EquipmentRead:
        await ocap.refuse_release_by_hand(session, tool, body.chamber, body.state)
        return to_read(
            await service.change_state(session, tool, body, actor=by.username, clock=clock)
        )

    return await idempotent(request, session, key, by.username, clock.now(), op)


@router.get("/{tool}/state-history", response_model=Page[StateEventRead])
async def state_history(
    tool: CodePath, session: ReadSession, page: PageQuery, since: Timestamp | None = None
) -> Page[StateEventRead]:
    """The tool's E10 state changes, newest first."""
    rows, total = await service.state_history(session, tool, page, since=since)
    return Page(items=[_event_read(e, c) for e, c in rows], total=total, **page.model_dump())


@router.post("/{tool}/signal", response_model=EquipmentRead)
async def report_signal(
    tool: CodePath, body: SignalReport, by: StateReporter, session: WriteSession, clock: ClockDep
) -> EquipmentRead:
    """A sign of life from the tool's adapter; a breaking alarm puts the tool into UDT.ALARM."""
    return to_read(await service.report_signal(session, tool, body, actor=by.username, clock=clock))


def _correction_read(fix: EquipmentStateCorrection, tool: Equipment) -> CorrectionRead:
    chamber = next((c.name for c in tool.chambers if c.id == fix.chamber_id), None)
    return CorrectionRead(
        chamber=chamber,
        start_at=fix.start_at,
        end_at=fix.end_at,
        state=fix.state,
        substate=fix.substate,
        recorded_at=fix.recorded_at,
        actor=fix.actor,
        reason=fix.reason,
    )


@router.post(
    "/{tool}/state-corrections", response_model=CorrectionRead, status_code=status.HTTP_201_CREATED
)
async def qualify_time(
    tool: CodePath,
    body: CorrectionCreate,
    by: Corrector,
    session: WriteSession,
    clock: ClockDep,
    once: OnceDep,
) -> CorrectionRead | JSONResponse:
    """Re-qualify a past interval of the tool (or a chamber), e.g. its NO_SIGNAL time.

    The state history is not edited: the correction is recorded beside it, and history reads
    and metrics apply it (later corrections over earlier ones).
    """

    async def op() -> CorrectionRead:
        fix = await service.qualify_time(session, tool, body, actor=by.username, clock=clock)
        return _correction_read(fix, await service.get_equipment(session, tool))

    return await once.run(op)


@router.get("/{tool}/state-corrections", response_model=list[CorrectionRead])
async def list_corrections(tool: CodePath, session: ReadSession) -> list[CorrectionRead]:
    """The corrections recorded for the tool, newest first."""
    equipment = await service.get_equipment(session, tool)
    return [_correction_read(f, equipment) for f in await service.corrections(session, tool)]


def _window(
    start: datetime | None, end: datetime | None, now: datetime, default: timedelta
) -> tuple[datetime, datetime]:
    end = end or now
    start = start or end - default
    if end <= start:
        raise InvalidInput("the window must end after it starts", code="metrics.invalid_window")
    return start, end


def _interval_read(iv: metrics.Interval) -> IntervalRead:
    return IntervalRead(
        start_at=iv.start, end_at=iv.end, state=iv.state, substate=iv.substate, seconds=iv.seconds
    )


@router.get("/{tool}/unexplained-time", response_model=list[IntervalRead])
async def unexplained_time(
    tool: CodePath,
    session: ReadSession,
    clock: ClockDep,
    start: Timestamp | None = None,
    end: Timestamp | None = None,
) -> list[IntervalRead]:
    """NO_SIGNAL time not yet qualified by a correction (default: the last 7 days)."""
    lo, hi = _window(start, end, clock.now(), timedelta(days=7))
    return [
        _interval_read(iv) for iv in await service.unexplained_time(session, tool, start=lo, end=hi)
    ]


@router.get("/{tool}/intervals", response_model=list[IntervalRead])
async def intervals(
    tool: CodePath,
    session: ReadSession,
    clock: ClockDep,
    start: Timestamp | None = None,
    end: Timestamp | None = None,
    chamber: Annotated[str | None, Query(max_length=16)] = None,
) -> list[IntervalRead]:
    """The tool's (or a chamber's) E10 intervals in the window, corrections applied."""
    lo, hi = _window(start, end, clock.now(), timedelta(days=1))
    equipment = await service.get_equipment(session, tool)
    ch = service.chamber_of(equipment, chamber)
    history = await service.history(session, equipment.id, None if ch is None else ch.id, lo, hi)
    return [_interval_read(iv) for iv in metrics.clip(history, lo, hi)]


# --- substates ------------------------------------------------------------------------------


def _substate_read(row: EquipmentSubstate) -> SubstateRead:
    return SubstateRead(
        code=row.code,
        state=row.state,
        description=row.description,
        retired_at=row.retired_at,
        retired_by=row.retired_by,
    )


@substates_router.get("", response_model=list[SubstateRead])
async def list_substates(session: ReadSession) -> list[SubstateRead]:
    """The E10 substates (reason codes); a state change may name those not retired."""
    return [_substate_read(r) for r in await service.list_substates(session)]


@substates_router.post("", response_model=SubstateRead, status_code=status.HTTP_201_CREATED)
async def create_substate(
    body: SubstateCreate, _by: SubstateWriter, session: WriteSession, once: OnceDep
) -> SubstateRead | JSONResponse:
    """Add a substate such as ``SDT.CHAMBER_CLEAN``; its prefix names the E10 state."""

    async def op() -> SubstateRead:
        return _substate_read(await service.create_substate(session, body))

    return await once.run(op)


SubstatePath = Annotated[
    str, Path(min_length=5, max_length=48, pattern=r"^[A-Z]{3}\.[A-Z0-9_]{1,40}$")
]


@substates_router.post("/{code}/retire", response_model=SubstateRead)
async def retire_substate(
    code: SubstatePath, by: SubstateWriter, session: WriteSession, clock: ClockDep
) -> SubstateRead:
    """Retire a substate: the state history keeps naming it, new state changes are refused
    (``tool.substate_retired``). The MES's own substates cannot be retired."""
    return _substate_read(
        await service.retire_substate(session, code, actor=by.username, clock=clock)
    )


# --- preventive maintenance -----------------------------------------------------------------


def _plan_read(plan: PmPlan) -> PmPlanRead:
    return PmPlanRead(
        code=plan.code,
        name=plan.name,
        tool=None if plan.equipment is None else plan.equipment.code,
        tool_group=None if plan.tool_group is None else plan.tool_group.code,
        trigger=plan.trigger,
        interval=plan.interval_value,
        warning=plan.warning_value,
        unit=pm_rules.UNITS[plan.trigger],
        starts_at=plan.starts_at,
        active=plan.active,
    )


def _record_read(record: PmRecord, tool: str) -> PmRecordRead:
    return PmRecordRead(
        plan=record.pm_plan.code,
        tool=tool,
        started_at=record.started_at,
        started_by=record.started_by,
        completed_at=record.completed_at,
        completed_by=record.completed_by,
        notes=record.notes,
    )


def _state_read(tool: Equipment, st: pm_rules.PmState, in_progress: bool) -> PmStateRead:
    return PmStateRead(
        plan=st.plan.code,
        tool=tool.code,
        fab=tool.fab.code,
        trigger=st.plan.trigger,
        status=st.status,
        used=round(st.used, 6),
        interval=st.plan.interval,
        remaining=round(st.remaining, 6),
        unit=pm_rules.UNITS[st.plan.trigger],
        due_at=st.due_at,
        in_progress=in_progress,
    )


@pm_router.get("/plans", response_model=list[PmPlanRead])
async def list_plans(session: ReadSession) -> list[PmPlanRead]:
    """Every PM plan."""
    return [_plan_read(p) for p in await service.list_plans(session)]


@pm_router.post("/plans", response_model=PmPlanRead, status_code=status.HTTP_201_CREATED)
async def create_plan(
    body: PmPlanCreate, by: PmPlanner, session: WriteSession, clock: ClockDep, once: OnceDep
) -> PmPlanRead | JSONResponse:
    """Define a PM plan for a tool or a tool group: by calendar days, wafers or process hours."""

    async def op() -> PmPlanRead:
        return _plan_read(await service.create_plan(session, body, actor=by.username, clock=clock))

    return await once.run(op)


@pm_router.patch("/plans/{plan}", response_model=PmPlanRead)
async def change_plan(
    plan: CodePath, body: PmPlanChange, by: PmPlanner, session: WriteSession
) -> PmPlanRead:
    """Edit a PM plan's name, interval or warning, or deactivate/reactivate it (audited)."""
    return _plan_read(await service.change_plan(session, plan, body))


@pm_router.get("/due", response_model=list[PmStateRead])
async def pm_due(
    session: ReadSession,
    clock: ClockDep,
    fab: Annotated[CodeStr | None, Query()] = None,
    include_ok: bool = False,
) -> list[PmStateRead]:
    """PMs due and upcoming (inside their warning window) across fabs, most urgent first."""
    include = (
        list(pm_rules.PmStatus)
        if include_ok
        else [
            pm_rules.PmStatus.DUE,
            pm_rules.PmStatus.UPCOMING,
        ]
    )
    rows = await service.pm_due(session, now=clock.now(), fab=fab, include=include)
    return [_state_read(r.tool, r.state, r.in_progress) for r in rows]


@router.get("/{tool}/pm", response_model=list[PmStateRead])
async def tool_pm(tool: CodePath, session: ReadSession, clock: ClockDep) -> list[PmStateRead]:
    """The status of every PM plan that applies to the tool."""
    equipment = await service.get_equipment(session, tool)
    running = await service.open_pm(session, equipment.id)
    running_code = None if running is None else running.pm_plan.code
    return [
        _state_read(equipment, st, st.plan.code == running_code)
        for st in await service.pm_states(session, equipment, clock.now())
    ]


@router.post("/{tool}/pm/start", response_model=PmRecordRead)
async def start_pm(
    tool: CodePath, body: PmStart, by: PmPerformer, session: WriteSession, clock: ClockDep
) -> PmRecordRead:
    """Start a PM on an idle tool: it goes to SDT.PM and takes no lots until completed."""
    record = await service.start_pm(
        session, tool, body.plan, lots_on_tool=_lots_on, actor=by.username, clock=clock
    )
    return _record_read(record, tool)


async def _lots_on(session: AsyncSession, tool: Equipment) -> int:
    """How many lots run on the tool: the lots domain knows, equipment sits below it."""
    running = lots_service.lot_query(lots_service.LotFilter(tool=tool.code)).order_by(None)
    return int(await session.scalar(select(func.count()).select_from(running.subquery())) or 0)


@router.post("/{tool}/pm/complete", response_model=PmRecordRead)
async def complete_pm(
    tool: CodePath, body: PmComplete, by: PmPerformer, session: WriteSession, clock: ClockDep
) -> PmRecordRead:
    """Complete the tool's PM in progress: the plan counts again from now, the tool goes SBY."""
    record = await service.complete_pm(session, tool, body.notes, actor=by.username, clock=clock)
    return _record_read(record, tool)


# --- metrics --------------------------------------------------------------------------------


@metrics_router.get("/equipment", response_model=MetricsRead)
async def equipment_metrics(
    session: ReadSession,
    clock: ClockDep,
    start: Timestamp | None = None,
    end: Timestamp | None = None,
    fab: Annotated[CodeStr | None, Query()] = None,
    area: Annotated[CodeStr | None, Query()] = None,
    tool_group: Annotated[CodeStr | None, Query()] = None,
    tool: Annotated[CodeStr | None, Query()] = None,
    chamber: Annotated[str | None, Query(max_length=16)] = None,
) -> MetricsRead:
    """E10 time per state and metrics, and E79 OEE with its inputs, for a tool (or chamber),
    tool group, area or fab over ``[start, end)`` (default: the last 24 hours).

    Formulas: see the manual, docs/equipment.md ("Metrics").
    """
    lo, hi = _window(start, end, clock.now(), timedelta(days=1))
    scope = performance.Scope(fab=fab, area=area, tool_group=tool_group, tool=tool, chamber=chamber)
    result = await performance.figures(session, scope, lo, hi)
    e10, o = result.e10, result.oee
    return MetricsRead(
        start=lo,
        end=hi,
        tools=result.tools,
        chamber=chamber,
        state_seconds={s: e10.times[s] for s in E10State},
        total_s=e10.times.total,
        operations_s=e10.times.operations,
        uptime_s=e10.times.uptime,
        downtime_s=e10.times.downtime,
        failures=e10.failures,
        repairs=e10.repairs,
        other_failures=e10.other_failures,
        other_udt_s=e10.other_udt_s,
        pm_count=e10.pm_count,
        pm_s=e10.pm_seconds,
        total_uptime=e10.total_uptime,
        operational_uptime=e10.operational_uptime,
        mtbf_p_s=e10.mtbf_p_s,
        mttr_s=e10.mttr_s,
        mtpm_s=e10.mtpm_s,
        operational_utilisation=e10.operational_utilisation,
        total_utilisation=e10.total_utilisation,
        oee=OeeRead(
            total_s=o.total_s,
            uptime_s=o.uptime_s,
            productive_s=o.productive_s,
            units=o.units,
            good_units=o.good_units,
            theoretical_s=o.theoretical_s,
            theoretical_good_s=o.theoretical_good_s,
            availability=o.availability,
            operational_efficiency=o.operational_efficiency,
            rate_efficiency=o.rate_efficiency,
            performance=o.performance,
            quality=o.quality,
            oee=o.oee,
        ),
    )
