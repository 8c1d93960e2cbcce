"""Preventive maintenance: plans per tool or tool group, what a tool did since its last PM,
each plan's status, starting and completing a PM (SDT.PM in between), and the due list.
The rules (triggers, thresholds, status) are in ``pm_rules``."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.clock import Clock
from mes.equipment import metrics, pm_rules, states
from mes.equipment.history import histories, history
from mes.equipment.models import Equipment, PmBaseline, PmPlan, PmRecord, StateChangeSource
from mes.equipment.schemas import PmPlanChange, PmPlanCreate
from mes.equipment.tools import EquipmentFilter, equipment_query, get_equipment, record_state
from mes.errors import Conflict, InvalidInput, RuleViolation
from mes.fabs import service as fabs_service
from mes.kit.lookup import get_by_key

# How many lots run on a tool: asked of the lots domain, which sits above equipment.
LotCount = Callable[[AsyncSession, Equipment], Awaitable[int]]


def plan_view(plan: PmPlan) -> pm_rules.PmPlanView:
    return pm_rules.PmPlanView(plan.code, plan.trigger, plan.interval_value, plan.warning_value)


async def plans_for(session: AsyncSession, tool: Equipment) -> list[PmPlan]:
    """The active PM plans that apply to a tool (its own and its tool group's)."""
    return list(
        await session.scalars(
            select(PmPlan)
            .where(
                PmPlan.active.is_(True),
                or_(PmPlan.equipment_id == tool.id, PmPlan.tool_group_id == tool.tool_group_id),
            )
            .order_by(PmPlan.code)
        )
    )


async def usage_since_pm(
    session: AsyncSession, tool: Equipment, plan: PmPlan, now: datetime
) -> pm_rules.PmUsage:
    """What the tool did since it last completed ``plan`` (or since the plan/installation)."""
    last = (
        await session.scalars(
            select(PmRecord)
            .where(
                PmRecord.pm_plan_id == plan.id,
                PmRecord.equipment_id == tool.id,
                PmRecord.completed_at.is_not(None),
            )
            .order_by(PmRecord.completed_at.desc(), PmRecord.id.desc())
            .limit(1)
        )
    ).first()
    if last is not None and last.completed_at is not None:
        since, wafers_then = last.completed_at, last.wafers_at_completion or 0
    else:
        # Never done under this plan: count from the plan's start, from the tool's counter
        # then (a tool installed later starts from zero).
        baseline = await session.get(PmBaseline, (plan.id, tool.id))
        since, wafers_then = plan.starts_at, baseline.wafers if baseline is not None else 0
    process_s = 0.0
    if plan.trigger == pm_rules.PmTrigger.PROCESS_HOURS:
        start = since
        process_s = sum(
            iv.seconds
            for iv in metrics.clip(await history(session, tool.id, None, start, now), start, now)
            if iv.state == states.E10State.PRD
        )
    return pm_rules.PmUsage(
        since=since, wafers=tool.wafers_processed - wafers_then, process_s=process_s
    )


async def pm_states(
    session: AsyncSession, tool: Equipment, now: datetime
) -> list[pm_rules.PmState]:
    """The status of every PM plan that applies to the tool."""
    return [
        pm_rules.status(plan_view(plan), await usage_since_pm(session, tool, plan, now), now)
        for plan in await plans_for(session, tool)
    ]


class ToolCounters(Protocol):
    """What ``pm_states_many`` reads of a tool: an Equipment row, or its columns (a board
    reads a thousand tools as plain rows, not ORM objects)."""

    @property
    def id(self) -> int: ...
    @property
    def tool_group_id(self) -> int: ...
    @property
    def wafers_processed(self) -> int: ...


async def pm_states_many(
    session: AsyncSession,
    tools: Sequence[ToolCounters],
    now: datetime,
    *,
    scope: Select[Any] | None = None,
) -> dict[int, list[pm_rules.PmState]]:
    """``pm_states`` of many tools (a board) in a few queries instead of a few per tool: the
    plans, the last completed PM per plan and tool, the baselines, and for process-hours plans
    the histories of the tools they apply to. ``scope``: a query of ids that includes the
    tools', used in the SQL instead of one bound parameter per tool (see ``histories``)."""
    plans = list(
        await session.scalars(select(PmPlan).where(PmPlan.active.is_(True)).order_by(PmPlan.code))
    )
    # Indexed once: a thousand tools times a hundred plans' ORM attributes cost a second.
    by_tool: dict[int, list[PmPlan]] = {}
    by_group: dict[int, list[PmPlan]] = {}
    for plan in plans:
        if plan.equipment_id is not None:
            by_tool.setdefault(plan.equipment_id, []).append(plan)
        if plan.tool_group_id is not None:
            by_group.setdefault(plan.tool_group_id, []).append(plan)
    trigger = {plan.id: plan.trigger for plan in plans}
    applying = {
        tool.id: sorted(
            by_tool.get(tool.id, []) + by_group.get(tool.tool_group_id, []), key=lambda p: p.code
        )
        for tool in tools
    }
    ids = [tool_id for tool_id, found in applying.items() if found]
    if not ids:
        return {tool.id: [] for tool in tools}
    within: Select[Any] | list[int] = scope if scope is not None else ids
    latest = (
        select(
            PmRecord.pm_plan_id,
            PmRecord.equipment_id,
            func.max(PmRecord.completed_at).label("at"),
        )
        .where(PmRecord.equipment_id.in_(within), PmRecord.completed_at.is_not(None))
        .group_by(PmRecord.pm_plan_id, PmRecord.equipment_id)
        .subquery()
    )
    last: dict[tuple[int, int], PmRecord] = {}
    for record in await session.scalars(
        select(PmRecord)
        .join(
            latest,
            (latest.c.pm_plan_id == PmRecord.pm_plan_id)
            & (latest.c.equipment_id == PmRecord.equipment_id)
            & (latest.c.at == PmRecord.completed_at),
        )
        .order_by(PmRecord.id)
    ):
        last[(record.pm_plan_id, record.equipment_id)] = record  # ties: the highest id wins
    baselines = {
        (b.pm_plan_id, b.equipment_id): b
        for b in await session.scalars(
            select(PmBaseline).where(PmBaseline.equipment_id.in_(within))
        )
    }
    usages: dict[tuple[int, int], pm_rules.PmUsage] = {}
    for tool in tools:
        for plan in applying[tool.id]:
            done = last.get((plan.id, tool.id))
            if done is not None and done.completed_at is not None:
                since, wafers_then = done.completed_at, done.wafers_at_completion or 0
            else:
                baseline = baselines.get((plan.id, tool.id))
                since, wafers_then = plan.starts_at, baseline.wafers if baseline else 0
            usages[(plan.id, tool.id)] = pm_rules.PmUsage(
                since=since, wafers=tool.wafers_processed - wafers_then, process_s=0.0
            )
    # Process hours: the tools' histories since the earliest count start, in one read.
    hourly = {
        key: usage
        for key, usage in usages.items()
        if trigger[key[0]] == pm_rules.PmTrigger.PROCESS_HOURS
    }
    if hourly:
        start = min(usage.since for usage in hourly.values())
        hourly_tools = sorted({tool for _p, tool in hourly})
        timelines = await histories(session, hourly_tools, start, now, scope=scope)
        for (plan_id, tool_id), usage in hourly.items():
            process_s = sum(
                iv.seconds
                for iv in metrics.clip(timelines[tool_id], usage.since, now)
                if iv.state == states.E10State.PRD
            )
            usages[(plan_id, tool_id)] = dataclasses.replace(usage, process_s=process_s)
    views = {plan.id: plan_view(plan) for plan in plans}
    return {
        tool.id: [
            pm_rules.status(views[plan.id], usages[(plan.id, tool.id)], now)
            for plan in applying[tool.id]
        ]
        for tool in tools
    }


async def check_not_due(session: AsyncSession, tool: Equipment, now: datetime) -> None:
    """Refuse a track-in on a tool with a PM due (tool.pm_due)."""
    pm_rules.check_not_due(tool.code, await pm_states(session, tool, now))


async def open_pm(session: AsyncSession, tool_id: int) -> PmRecord | None:
    """The tool's PM in progress, if any."""
    return (
        await session.scalars(
            select(PmRecord)
            .options(selectinload(PmRecord.pm_plan))
            .where(PmRecord.equipment_id == tool_id, PmRecord.completed_at.is_(None))
        )
    ).first()


async def start_pm(
    session: AsyncSession,
    code: str,
    plan_code: str,
    *,
    lots_on_tool: LotCount,
    actor: str,
    clock: Clock,
) -> PmRecord:
    """Start a PM of ``plan_code`` on an idle tool: it goes to SDT.PM until completed.

    ``lots_on_tool`` counts the lots running on the tool: the lots domain sits above this one,
    so the caller supplies it. It is asked while this transaction holds the tool's row lock,
    which a track-in takes too, so no lot can get on the tool between the count and the PM.
    """
    tool = await get_equipment(session, code, for_update=True)
    plan = await get_plan(session, plan_code)
    if plan.equipment_id != tool.id and plan.tool_group_id != tool.tool_group_id:
        raise RuleViolation(
            "pm.not_applicable", f"PM plan {plan.code} does not apply to tool {tool.code}"
        )
    if await open_pm(session, tool.id) is not None:
        raise RuleViolation("pm.in_progress", f"tool {tool.code} already has a PM in progress")
    if await lots_on_tool(session, tool):
        raise RuleViolation(
            "pm.tool_busy", f"tool {tool.code} is running lots; let them finish first"
        )
    now = clock.now()
    record = PmRecord(
        pm_plan=plan,
        fab_id=tool.fab_id,
        equipment_id=tool.id,
        started_at=now,
        started_by=actor,
    )
    session.add(record)
    record_state(
        session,
        tool,
        states.E10State.SDT,
        states.PM_SUBSTATE,
        actor=actor,
        at=now,
        recorded_at=now,
        source=StateChangeSource.SYSTEM,
        reason=f"PM {plan.code} started",
    )
    await session.flush()
    return record


async def complete_pm(
    session: AsyncSession, code: str, notes: str | None, *, actor: str, clock: Clock
) -> PmRecord:
    """Complete the tool's PM in progress: the plan restarts counting, the tool goes to SBY."""
    tool = await get_equipment(session, code, for_update=True)
    record = await open_pm(session, tool.id)
    if record is None:
        raise RuleViolation("pm.not_started", f"tool {tool.code} has no PM in progress")
    now = clock.now()
    record.completed_at, record.completed_by = now, actor
    record.wafers_at_completion = tool.wafers_processed
    record.notes = notes
    if tool.e10_state == states.E10State.SDT:
        record_state(
            session,
            tool,
            states.E10State.SBY,
            states.DEFAULT_SUBSTATE[states.E10State.SBY],
            actor=actor,
            at=now,
            recorded_at=now,
            source=StateChangeSource.SYSTEM,
            reason=f"PM {record.pm_plan.code} completed",
        )
    await session.flush()
    return record


async def create_plan(
    session: AsyncSession, data: PmPlanCreate, *, actor: str, clock: Clock
) -> PmPlan:
    """Define a PM plan for a tool or for every tool of a tool group."""
    if (data.tool is None) == (data.tool_group is None):
        raise InvalidInput("name a tool or a tool group, not both", code="pm.invalid_plan")
    pm_rules.check_plan(data.trigger, data.interval, data.warning)
    if await session.scalar(select(PmPlan.id).where(PmPlan.code == data.code)) is not None:
        raise Conflict(f"PM plan {data.code!r} already exists", code="pm.duplicate")
    tool = None if data.tool is None else await get_equipment(session, data.tool)
    group = (
        None
        if data.tool_group is None
        else await fabs_service.get_tool_group(session, data.tool_group)
    )
    plan = PmPlan(
        code=data.code,
        name=data.name,
        equipment_id=None if tool is None else tool.id,
        tool_group_id=None if group is None else group.id,
        trigger=data.trigger,
        interval_value=data.interval,
        warning_value=data.warning,
        starts_at=data.starts_at or clock.now(),
        active=True,
        created_by=actor,
    )
    session.add(plan)
    await session.flush()
    applies_to = (
        [tool]
        if tool is not None
        else list(
            await session.scalars(
                select(Equipment).where(Equipment.tool_group_id == plan.tool_group_id)
            )
        )
    )
    for equipment in applies_to:
        session.add(
            PmBaseline(
                pm_plan_id=plan.id,
                equipment_id=equipment.id,
                wafers=equipment.wafers_processed,
                recorded_at=clock.now(),
            )
        )
    await session.flush()
    return await get_plan(session, data.code)


async def change_plan(session: AsyncSession, code: str, data: PmPlanChange) -> PmPlan:
    """Edit or (de)activate a plan; an inactive plan stops blocking and warning."""
    plan = await get_plan(session, code)
    interval = plan.interval_value if data.interval is None else data.interval
    warning = plan.warning_value if data.warning is None else data.warning
    pm_rules.check_plan(plan.trigger, interval, warning)
    plan.interval_value, plan.warning_value = interval, warning
    if data.name is not None:
        plan.name = data.name
    if data.active is not None:
        plan.active = data.active
    await session.flush()
    return await get_plan(session, code)


async def list_plans(session: AsyncSession) -> list[PmPlan]:
    """Every PM plan, by code."""
    return list(
        await session.scalars(
            select(PmPlan)
            .options(selectinload(PmPlan.tool_group), selectinload(PmPlan.equipment))
            .order_by(PmPlan.code)
        )
    )


async def get_plan(session: AsyncSession, code: str) -> PmPlan:
    return await get_by_key(
        session,
        PmPlan,
        PmPlan.code,
        code,
        code="pm.plan_not_found",
        what="PM plan",
        options=(selectinload(PmPlan.tool_group), selectinload(PmPlan.equipment)),
    )


@dataclass(frozen=True)
class DueRow:
    tool: Equipment
    state: pm_rules.PmState
    in_progress: bool


async def pm_due(
    session: AsyncSession,
    *,
    now: datetime,
    fab: str | None = None,
    include: Sequence[pm_rules.PmStatus] = (pm_rules.PmStatus.DUE, pm_rules.PmStatus.UPCOMING),
) -> list[DueRow]:
    """PMs due or upcoming on every tool (of one fab, or across fabs), most urgent first."""
    tools = list(await session.scalars(equipment_query(EquipmentFilter(fab=fab))))
    rows = []
    for tool in tools:
        running = await open_pm(session, tool.id)
        running_code = None if running is None else running.pm_plan.code
        for st in await pm_states(session, tool, now):
            if st.status in include:
                rows.append(DueRow(tool, st, running_code == st.plan.code))
    urgency = {pm_rules.PmStatus.DUE: 0, pm_rules.PmStatus.UPCOMING: 1, pm_rules.PmStatus.OK: 2}
    rows.sort(key=lambda r: (urgency[r.state.status], r.state.remaining / r.state.plan.interval))
    return rows
