"""What the tool page and the lot page show, read through the domains' own queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.context import AuditContext, bind
from mes.auth.service import Principal
from mes.clock import Clock
from mes.dispatch import policy
from mes.dispatch import service as dispatch_service
from mes.equipment import metrics, pm, pm_rules
from mes.equipment import service as equipment_service
from mes.equipment.history import history
from mes.equipment.models import Equipment, EquipmentAlarm
from mes.errors import MesError
from mes.fabs.models import Fab, ToolGroup
from mes.jobs import service as jobs_service
from mes.jobs.models import EquipmentJob
from mes.kit.api import PageParams
from mes.lots import commands as c
from mes.lots import service as lots_service
from mes.lots.models import HoldCode, Lot, LotEvent, LotHold
from mes.lots.rules import StepView

DAY = timedelta(hours=24)


@dataclass
class Segment:
    state: str
    substate: str
    start: datetime
    end: datetime
    left: float  # percent of the 24 h window
    width: float


@dataclass
class ToolPage:
    tool: Equipment
    segments: list[Segment]
    share: dict[str, float]  # E10 state -> percent of the last 24 h
    jobs: list[EquipmentJob]
    dispatch: policy.DispatchList | None
    dispatch_problem: str | None
    pm_states: list[pm_rules.PmState]
    alarms: list[EquipmentAlarm]
    substates: list[tuple[str, str, str]]  # code, state, description
    pm_open: bool = False  # a PM is in progress


def _segments(intervals: list[metrics.Interval], start: datetime) -> list[Segment]:
    total = DAY.total_seconds()
    found = []
    for iv in intervals:
        left = max(0.0, (iv.start - start).total_seconds()) / total * 100
        right = min(total, (iv.end - start).total_seconds()) / total * 100
        if right > left:
            found.append(Segment(iv.state.value, iv.substate, iv.start, iv.end, left, right - left))
    return found


async def tool_page(session: AsyncSession, code: str, clock: Clock) -> ToolPage:
    now = clock.now()
    tool = await equipment_service.get_equipment(session, code)
    start = now - DAY
    intervals = await history(session, tool.id, None, start, now)
    clipped = [
        metrics.Interval(max(iv.start, start), min(iv.end, now), iv.state, iv.substate)
        for iv in intervals
        if iv.end > start
    ]
    share: dict[str, float] = {}
    for iv in clipped:
        share[iv.state.value] = share.get(iv.state.value, 0.0) + iv.seconds
    share = {k: v / DAY.total_seconds() * 100 for k, v in share.items()}
    jobs = await jobs_service.open_jobs_of_tool(session, tool.id)
    dispatch, problem = None, None
    try:
        dispatch = await dispatch_service.dispatch_list(session, code, clock=clock)
    except MesError as exc:
        problem = f"{exc.code}: {exc.detail}"
    alarms = list(
        await session.scalars(
            select(EquipmentAlarm)
            .where(EquipmentAlarm.equipment_id == tool.id)
            .order_by(EquipmentAlarm.raised_at.desc())
            .limit(10)
        )
    )
    substates = [
        (s.code, s.state.value, s.description)
        for s in await equipment_service.list_substates(session)
    ]
    return ToolPage(
        tool,
        _segments(clipped, start),
        share,
        jobs,
        dispatch,
        problem,
        await pm.pm_states(session, tool, now),
        alarms,
        substates,
        await pm.open_pm(session, tool.id) is not None,
    )


@dataclass
class LotPage:
    lot: Lot
    steps: tuple[StepView, ...]
    operations: dict[int, str]  # step id -> tool group code
    events: list[tuple[LotEvent, str, int | None, str | None]]
    holds: list[LotHold]
    hold_codes: list[HoldCode]
    tools: list[str]  # tools of the current step's group in the lot's fab
    jobs: list[Any] = field(default_factory=list)
    on_tool: str | None = None  # the tool the lot runs on
    genealogy: Any = None  # mes.lots.schemas.GenealogyRead
    where_next: policy.WhereNext | None = None
    fab_codes: dict[int, str] = field(default_factory=dict)
    future: list[Any] = field(default_factory=list)  # armed future holds (FutureAction)

    @property
    def other_fabs(self) -> list[str]:
        return sorted(code for fid, code in self.fab_codes.items() if fid != self.lot.fab_id)

    @property
    def current_index(self) -> int | None:
        return next(
            (i for i, st in enumerate(self.steps) if st.id == self.lot.current_step_id), None
        )


async def lot_page(session: AsyncSession, code: str, clock: Clock) -> LotPage:
    lot = await lots_service.get_lot(session, code)
    steps = await lots_service.route_steps(session, lot.route_version_id)
    # The route's own steps name their tool groups: no second read of the steps.
    wanted = {st.tool_group_id for st in steps}
    names = dict(
        (
            await session.execute(
                select(ToolGroup.id, ToolGroup.code).where(ToolGroup.id.in_(sorted(wanted)))
            )
        ).all()
    )
    events, _total = await lots_service.lot_history(session, lot, PageParams(limit=200, offset=0))
    holds = await lots_service.active_holds(session, [lot.id])
    codes = list(await session.scalars(select(HoldCode).order_by(HoldCode.code)))
    tools: list[str] = []
    step = lot.current_step
    if step is not None:
        tools = list(
            await session.scalars(
                select(Equipment.code)
                .join(Fab, Fab.id == Equipment.fab_id)
                .where(
                    Equipment.fab_id == lot.fab_id, Equipment.tool_group_id == step.tool_group_id
                )
                .order_by(Equipment.code)
            )
        )
    jobs = await jobs_service.jobs_of_lot(session, lot)
    on_tool = None
    if lot.equipment_id is not None:
        on_tool = await session.scalar(
            select(Equipment.code).where(Equipment.id == lot.equipment_id)
        )
    where = None
    if lot.current_step_id is not None:
        try:
            where = await dispatch_service.where_next(session, code, clock=clock)
        except MesError:
            where = None  # a finished or odd lot: the page shows no options
    return LotPage(
        lot,
        steps,
        {st.id: names.get(st.tool_group_id, "?") for st in steps},
        events,
        holds,
        codes,
        tools,
        jobs[-5:],
        on_tool,
        await lots_service.genealogy(session, lot),
        where,
        await dispatch_service.fab_codes(session),
        await lots_service.future_actions(session, lot),
    )


async def track_in_verdict(
    session: AsyncSession, code: str, tool: str, principal: Principal, clock: Clock
) -> MesError | None:
    """Whether ``principal`` may track the lot in on ``tool`` now: track-in itself, run in a
    transaction the caller rolls back (the same checks, none copied). None: it may."""
    bind(
        session,
        AuditContext(
            actor=principal.username, role="check", operation="lots.track_in", at=clock.now()
        ),
    )
    try:
        await lots_service.track_in(
            session, code, c.TrackIn(tool=tool), actor=principal, clock=clock
        )
    except MesError as exc:
        return exc
    return None
