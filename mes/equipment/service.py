"""Tools: registration, master data, E10 state changes with their history, the substate table,
re-qualification of past time, the silence watchdog, and the equipment checks of track-in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import flag_modified

from mes.clock import Clock
from mes.durables import rules as durable_rules
from mes.durables.models import Durable
from mes.equipment import metrics, pm_rules, states
from mes.equipment.models import (
    Chamber,
    Equipment,
    EquipmentStateCorrection,
    EquipmentStateEvent,
    EquipmentSubstate,
    LoadPort,
    PmPlan,
    PmRecord,
    StateChangeSource,
)
from mes.equipment.schemas import (
    CorrectionCreate,
    EquipmentCreate,
    EquipmentUpdate,
    PmPlanCreate,
    SignalReport,
    StateChange,
    SubstateCreate,
)
from mes.errors import Conflict, InvalidInput, NotFound, RuleViolation, StaleVersion
from mes.fabs import service as fabs_service
from mes.fabs.models import Area, Fab, ToolGroup
from mes.kit.api import PageParams, fetch_page
from mes.kit.lookup import get_by_key
from mes.lots.models import Lot

LOAD_OPTIONS = (
    selectinload(Equipment.chambers),
    selectinload(Equipment.load_ports),
    selectinload(Equipment.fab),
    selectinload(Equipment.area),
    selectinload(Equipment.tool_group),
)


@dataclass(frozen=True)
class EquipmentFilter:
    fab: str | None = None
    area: str | None = None
    tool_group: str | None = None
    state: states.E10State | None = None


def equipment_query(flt: EquipmentFilter) -> Select[Equipment]:
    stmt = select(Equipment).options(*LOAD_OPTIONS).order_by(Equipment.code)
    if flt.fab is not None:
        stmt = stmt.join(Fab, Fab.id == Equipment.fab_id).where(Fab.code == flt.fab)
    if flt.area is not None:
        stmt = stmt.join(Area, Area.id == Equipment.area_id).where(Area.code == flt.area)
    if flt.tool_group is not None:
        stmt = stmt.join(ToolGroup, ToolGroup.id == Equipment.tool_group_id).where(
            ToolGroup.code == flt.tool_group
        )
    if flt.state is not None:
        stmt = stmt.where(Equipment.e10_state == flt.state)
    return stmt


async def get_equipment(session: AsyncSession, code: str, *, for_update: bool = False) -> Equipment:
    """The tool ``code`` with its chambers and ports, or tool.not_found."""
    return await get_by_key(
        session,
        Equipment,
        Equipment.code,
        code,
        code="tool.not_found",
        what="tool",
        options=LOAD_OPTIONS,
        for_update=for_update,
    )


def _check_version(tool: Equipment, expected: int) -> None:
    if tool.version != expected:
        raise StaleVersion(
            f"tool {tool.code!r} is at version {tool.version}, not {expected}",
            code="tool.stale_version",
            current_version=tool.version,
        )


async def create_equipment(
    session: AsyncSession, data: EquipmentCreate, *, actor: str, clock: Clock
) -> Equipment:
    """Install a tool in an area of a fab; it starts in SBY with a first history record."""
    if await session.scalar(select(Equipment.id).where(Equipment.code == data.code)) is not None:
        raise Conflict(f"tool {data.code!r} already exists", code="tool.duplicate")
    fab = await fabs_service.get_fab(session, data.fab)
    area = await fabs_service.get_area(session, fab, data.area)
    group = await fabs_service.get_tool_group(session, data.tool_group)
    now = clock.now()
    tool = Equipment(
        code=data.code,
        name=data.name,
        fab_id=fab.id,
        area_id=area.id,
        tool_group_id=group.id,
        vendor=data.vendor,
        model=data.model,
        opcua_endpoint=data.opcua_endpoint,
        max_lots=data.max_lots,
        e10_state=states.E10State.SBY,
        e10_substate=states.DEFAULT_SUBSTATE[states.E10State.SBY],
        state_since=now,
        chambers=[Chamber(fab_id=fab.id, name=name) for name in data.chambers],
        load_ports=[LoadPort(fab_id=fab.id, port_number=n) for n in range(1, data.load_ports + 1)],
    )
    session.add(tool)
    await session.flush()
    session.add(
        EquipmentStateEvent(
            fab_id=fab.id,
            equipment_id=tool.id,
            from_state=None,
            to_state=tool.e10_state,
            substate=tool.e10_substate,
            occurred_at=now,
            recorded_at=now,
            source=StateChangeSource.API,
            actor=actor,
            reason="installed",
        )
    )
    await session.flush()
    return await get_equipment(session, data.code)


async def update_equipment(session: AsyncSession, code: str, data: EquipmentUpdate) -> Equipment:
    """Change a tool's master data (name, endpoint, capacity)."""
    tool = await get_equipment(session, code, for_update=True)
    _check_version(tool, data.version)
    for field, value in data.model_dump(exclude_unset=True, exclude={"version"}).items():
        if field == "name" and value is None:
            continue
        setattr(tool, field, value)
    await session.flush()
    return tool


async def allowed_substates(session: AsyncSession) -> set[str]:
    return set(await session.scalars(select(EquipmentSubstate.code)))


async def list_substates(session: AsyncSession) -> list[EquipmentSubstate]:
    """The substate table, by state and code."""
    return list(
        await session.scalars(
            select(EquipmentSubstate).order_by(EquipmentSubstate.state, EquipmentSubstate.code)
        )
    )


async def create_substate(session: AsyncSession, data: SubstateCreate) -> EquipmentSubstate:
    """Add a substate (reason code) to the table."""
    try:
        state = states.state_of(data.code)
    except states.InvalidSubstate as exc:
        raise InvalidInput(str(exc), code="tool.invalid_substate") from exc
    exists = await session.scalar(
        select(EquipmentSubstate.id).where(EquipmentSubstate.code == data.code)
    )
    if exists is not None:
        raise Conflict(f"substate {data.code!r} already exists", code="substate.duplicate")
    row = EquipmentSubstate(code=data.code, state=state, description=data.description)
    session.add(row)
    await session.flush()
    return row


async def _validated_substate(
    session: AsyncSession, state: states.E10State, substate: str | None
) -> str:
    try:
        return states.validate_substate(state, substate, await allowed_substates(session))
    except states.UnknownSubstate as exc:
        raise InvalidInput(str(exc), code="tool.unknown_substate") from exc
    except states.InvalidSubstate as exc:
        raise InvalidInput(str(exc), code="tool.invalid_substate") from exc


def record_state(
    session: AsyncSession,
    tool: Equipment,
    state: states.E10State,
    substate: str,
    *,
    actor: str,
    at: datetime,
    recorded_at: datetime,
    source: StateChangeSource,
    reason: str | None,
    chamber: Chamber | None = None,
) -> None:
    """Write one state event and move the tool (or chamber) into ``state``.

    A chamber change rolls up: when no chamber is up any more the tool goes down with them
    (``*.ALL_CHAMBERS_DOWN``), and when one comes back the tool returns to SBY if it was down
    only because of its chambers. The caller holds the tool's row lock.
    """
    holder: Equipment | Chamber = tool if chamber is None else chamber
    session.add(
        EquipmentStateEvent(
            fab_id=tool.fab_id,
            equipment_id=tool.id,
            chamber_id=None if chamber is None else chamber.id,
            from_state=holder.e10_state,
            to_state=state,
            substate=substate,
            occurred_at=at,
            recorded_at=recorded_at,
            source=source,
            actor=actor,
            reason=reason,
        )
    )
    holder.e10_state = state
    holder.e10_substate = substate
    if chamber is None:
        tool.state_since = at
        return
    # A chamber's change is still a change of the tool: bump the tool's version so that
    # concurrent writers of the tool notice.
    flag_modified(tool, "e10_substate")
    down = states.rollup([c.e10_state for c in tool.chambers])
    if down is not None and tool.e10_state in states.UP_STATES:
        record_state(
            session,
            tool,
            down,
            states.ALL_CHAMBERS_DOWN[down],
            actor=actor,
            at=at,
            recorded_at=recorded_at,
            source=StateChangeSource.SYSTEM,
            reason=f"chamber {chamber.name} went {state.value}: no chamber is up",
        )
    elif down is None and tool.e10_substate in states.ALL_CHAMBERS_DOWN.values():
        record_state(
            session,
            tool,
            states.E10State.SBY,
            states.DEFAULT_SUBSTATE[states.E10State.SBY],
            actor=actor,
            at=at,
            recorded_at=recorded_at,
            source=StateChangeSource.SYSTEM,
            reason=f"chamber {chamber.name} is up again",
        )


async def change_state(
    session: AsyncSession,
    code: str,
    change: StateChange,
    *,
    actor: str,
    clock: Clock,
    source: StateChangeSource = StateChangeSource.API,
) -> Equipment:
    """Put a tool (or one chamber) into an E10 state and record the transition."""
    tool = await get_equipment(session, code, for_update=True)
    _check_version(tool, change.version)
    substate = await _validated_substate(session, change.state, change.substate)
    now = clock.now()
    occurred_at = change.occurred_at or now
    if occurred_at > now:
        raise InvalidInput(
            "a state change cannot take effect in the future", code="tool.future_time"
        )
    chamber = None
    if change.chamber is not None:
        chamber = next((c for c in tool.chambers if c.name == change.chamber), None)
        if chamber is None:
            raise NotFound(
                f"tool {code!r} has no chamber {change.chamber!r}", code="tool.chamber_not_found"
            )
    elif occurred_at < tool.state_since:
        raise InvalidInput(
            "a state change cannot take effect before the current state began",
            code="tool.time_before_current_state",
        )
    if chamber is None and change.state != states.E10State.SDT:
        await _refuse_leaving_open_pm(session, tool, change.state)
    record_state(
        session,
        tool,
        change.state,
        substate,
        actor=actor,
        at=occurred_at,
        recorded_at=now,
        source=source,
        reason=change.reason,
        chamber=chamber,
    )
    tool.last_signal_at = now
    await session.flush()
    return tool


async def _refuse_leaving_open_pm(
    session: AsyncSession, tool: Equipment, state: states.E10State
) -> None:
    """A tool whose PM is in progress leaves SDT by completing the PM, not by a state change.

    Failures during the PM (UDT) are allowed: they are what happened.
    """
    if state == states.E10State.UDT:
        return
    if await open_pm(session, tool.id) is not None:
        raise RuleViolation(
            "pm.in_progress",
            f"tool {tool.code} has a PM in progress; complete it to return the tool to production",
        )


async def open_pm(session: AsyncSession, tool_id: int) -> PmRecord | None:
    return (
        await session.scalars(
            select(PmRecord)
            .options(selectinload(PmRecord.pm_plan))
            .where(PmRecord.equipment_id == tool_id, PmRecord.completed_at.is_(None))
        )
    ).first()


async def report_signal(
    session: AsyncSession, code: str, report: SignalReport, *, actor: str, clock: Clock
) -> Equipment:
    """A tool (its adapter) says it is alive; a breaking alarm puts it into UDT.ALARM."""
    tool = await get_equipment(session, code, for_update=True)
    now = clock.now()
    tool.last_signal_at = now
    if report.alarm is not None and report.breaking and tool.e10_state != states.E10State.UDT:
        record_state(
            session,
            tool,
            states.E10State.UDT,
            states.ALARM,
            actor=actor,
            at=now,
            recorded_at=now,
            source=StateChangeSource.TOOL,
            reason=f"breaking alarm {report.alarm}",
        )
    await session.flush()
    return tool


async def detect_silent_tools(session: AsyncSession, clock: Clock, silence_s: float) -> list[str]:
    """Put tools that should be up but sent nothing for ``silence_s`` into UDT.NO_SIGNAL.

    Only tools with an OPC UA endpoint are watched (a tool without an adapter never signals).
    The NO_SIGNAL state takes effect at the last signal: the silent time is what a technician
    is then asked to qualify (``qualify_time``).
    """
    now = clock.now()
    cutoff = now - timedelta(seconds=silence_s)
    last = func.coalesce(Equipment.last_signal_at, Equipment.state_since)
    candidates = list(
        await session.scalars(
            select(Equipment.code)
            .where(
                Equipment.opcua_endpoint.is_not(None),
                Equipment.e10_state.in_(sorted(states.UP_STATES)),
                last < cutoff,
            )
            .order_by(Equipment.id)
        )
    )
    silenced = []
    for code in candidates:
        tool = await get_equipment(session, code, for_update=True)
        reference = max(tool.last_signal_at or tool.state_since, tool.state_since)
        if tool.e10_state not in states.UP_STATES or reference >= cutoff:
            continue  # changed since we looked
        record_state(
            session,
            tool,
            states.E10State.UDT,
            states.NO_SIGNAL,
            actor="system",
            at=reference,
            recorded_at=now,
            source=StateChangeSource.SYSTEM,
            reason=f"no signal from the tool for {silence_s:.0f} s",
        )
        silenced.append(code)
    await session.flush()
    return silenced


# --- history with corrections ----------------------------------------------------------


def chamber_of(tool: Equipment, name: str | None) -> Chamber | None:
    if name is None:
        return None
    chamber = next((c for c in tool.chambers if c.name == name), None)
    if chamber is None:
        raise NotFound(f"tool {tool.code!r} has no chamber {name!r}", code="tool.chamber_not_found")
    return chamber


async def history(
    session: AsyncSession,
    tool_id: int,
    chamber_id: int | None,
    start: datetime,
    end: datetime,
) -> list[metrics.Interval]:
    """The tool's (or chamber's) intervals from the last change before ``start`` to ``end``,
    with the corrections recorded for that time applied."""
    owner = (
        EquipmentStateEvent.chamber_id.is_(None)
        if chamber_id is None
        else EquipmentStateEvent.chamber_id == chamber_id
    )
    base = select(
        EquipmentStateEvent.occurred_at, EquipmentStateEvent.to_state, EquipmentStateEvent.substate
    ).where(EquipmentStateEvent.equipment_id == tool_id, owner)
    first = await session.execute(
        base.where(EquipmentStateEvent.occurred_at <= start)
        .order_by(EquipmentStateEvent.occurred_at.desc(), EquipmentStateEvent.id.desc())
        .limit(1)
    )
    rows = list(first.all())
    rows += list(
        (
            await session.execute(
                base.where(
                    EquipmentStateEvent.occurred_at > start, EquipmentStateEvent.occurred_at < end
                ).order_by(EquipmentStateEvent.occurred_at, EquipmentStateEvent.id)
            )
        ).all()
    )
    changes = [(at, state, sub) for at, state, sub in rows]
    if chamber_id is not None and (not changes or changes[0][0] > start):
        # Chambers are installed with their tool, in SBY, without an event of their own.
        installed = await session.scalar(
            select(func.min(EquipmentStateEvent.occurred_at)).where(
                EquipmentStateEvent.equipment_id == tool_id
            )
        )
        if installed is not None and (not changes or installed < changes[0][0]):
            sby = states.E10State.SBY
            changes.insert(0, (installed, sby, states.DEFAULT_SUBSTATE[sby]))
    intervals = metrics.intervals_from_events(changes, end)
    fix_owner = (
        EquipmentStateCorrection.chamber_id.is_(None)
        if chamber_id is None
        else EquipmentStateCorrection.chamber_id == chamber_id
    )
    fixes = await session.scalars(
        select(EquipmentStateCorrection)
        .where(
            EquipmentStateCorrection.equipment_id == tool_id,
            fix_owner,
            EquipmentStateCorrection.end_at > (intervals[0].start if intervals else start),
            EquipmentStateCorrection.start_at < end,
        )
        .order_by(EquipmentStateCorrection.recorded_at, EquipmentStateCorrection.id)
    )
    return metrics.apply_corrections(
        intervals,
        [metrics.Correction(f.start_at, f.end_at, f.state, f.substate) for f in fixes],
    )


async def qualify_time(
    session: AsyncSession, code: str, data: CorrectionCreate, *, actor: str, clock: Clock
) -> EquipmentStateCorrection:
    """Re-qualify a past interval (e.g. NO_SIGNAL time) by recording a correction."""
    tool = await get_equipment(session, code, for_update=True)
    chamber = chamber_of(tool, data.chamber)
    now = clock.now()
    if data.end_at <= data.start_at:
        raise InvalidInput("the interval must end after it starts", code="tool.invalid_interval")
    if data.end_at > now:
        raise InvalidInput(
            "only past time can be re-qualified; change the state for the present",
            code="tool.future_time",
        )
    try:
        state = states.state_of(data.substate)
    except states.InvalidSubstate as exc:
        raise InvalidInput(str(exc), code="tool.invalid_substate") from exc
    substate = await _validated_substate(session, state, data.substate)
    installed = await session.scalar(
        select(func.min(EquipmentStateEvent.occurred_at)).where(
            EquipmentStateEvent.equipment_id == tool.id
        )
    )
    if installed is not None and data.start_at < installed:
        raise InvalidInput(
            "the interval starts before the tool's history", code="tool.invalid_interval"
        )
    fix = EquipmentStateCorrection(
        fab_id=tool.fab_id,
        equipment_id=tool.id,
        chamber_id=None if chamber is None else chamber.id,
        start_at=data.start_at,
        end_at=data.end_at,
        state=state,
        substate=substate,
        recorded_at=now,
        actor=actor,
        reason=data.reason,
    )
    session.add(fix)
    await session.flush()
    return fix


async def corrections(session: AsyncSession, code: str) -> list[EquipmentStateCorrection]:
    """The corrections recorded for a tool, newest first."""
    tool = await get_equipment(session, code)
    return list(
        await session.scalars(
            select(EquipmentStateCorrection)
            .where(EquipmentStateCorrection.equipment_id == tool.id)
            .order_by(
                EquipmentStateCorrection.recorded_at.desc(), EquipmentStateCorrection.id.desc()
            )
        )
    )


async def unexplained_time(
    session: AsyncSession, code: str, *, start: datetime, end: datetime
) -> list[metrics.Interval]:
    """The NO_SIGNAL time in the window that no correction has qualified yet."""
    tool = await get_equipment(session, code)
    return [
        iv
        for iv in metrics.clip(await history(session, tool.id, None, start, end), start, end)
        if iv.substate == states.NO_SIGNAL
    ]


# --- track-in ----------------------------------------------------------------------------


def _reticle_of(recipe_body: dict[str, Any]) -> str | None:
    """The reticle a recipe names (parameter ``reticle``), if any."""
    for parameter in recipe_body.get("parameters", []):
        if parameter.get("name") == "reticle" and isinstance(parameter.get("value"), str):
            return str(parameter["value"])
    return None


async def admit_lot(
    session: AsyncSession,
    tool: Equipment,
    *,
    recipe_body: dict[str, Any],
    wafers: int,
    now: datetime,
) -> Durable | None:
    """The equipment side of a track-in on the locked ``tool``: no PM due, the recipe's reticle
    at the tool and under its limit. Counts the wafers on the tool and the reticle's uses.

    Uses are counted at track-in, not track-out: the check and the count then happen under the
    same tool lock, so two lots can never both pass a reticle's last uses.
    """
    pm_rules.check_not_due(tool.code, await pm_states(session, tool, now))
    reticle: Durable | None = None
    design = _reticle_of(recipe_body)
    if design is not None:
        copies = list(
            await session.scalars(
                select(Durable)
                .where(Durable.design == design)
                .order_by(Durable.id)
                .with_for_update(key_share=True)
            )
        )
        chosen = durable_rules.choose(
            design, [_durable_view(d) for d in copies], tool.id, tool.code, wafers
        )
        reticle = next(d for d in copies if d.code == chosen.code)
        reticle.usage_count += wafers
    tool.wafers_processed += wafers
    return reticle


def _durable_view(d: Durable) -> durable_rules.DurableView:
    return durable_rules.DurableView(
        code=d.code,
        kind=d.kind,
        state=d.state,
        location=d.location,
        equipment_id=d.equipment_id,
        usage_count=d.usage_count,
        usage_limit=d.usage_limit,
    )


# --- preventive maintenance ---------------------------------------------------------------


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # before any tool's installation


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
        since, wafers_then = plan.starts_at, 0
    process_s = 0.0
    if plan.trigger == pm_rules.PmTrigger.PROCESS_HOURS:
        start = since if last is not None else _EPOCH
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


async def _lots_on(session: AsyncSession, tool_id: int) -> int:
    return int(
        await session.scalar(select(func.count(Lot.id)).where(Lot.equipment_id == tool_id)) or 0
    )


async def start_pm(
    session: AsyncSession, code: str, plan_code: str, *, actor: str, clock: Clock
) -> PmRecord:
    """Start a PM of ``plan_code`` on an idle tool: it goes to SDT.PM until completed."""
    tool = await get_equipment(session, code, for_update=True)
    plan = await get_plan(session, plan_code)
    if plan.equipment_id != tool.id and plan.tool_group_id != tool.tool_group_id:
        raise RuleViolation(
            "pm.not_applicable", f"PM plan {plan.code} does not apply to tool {tool.code}"
        )
    if await open_pm(session, tool.id) is not None:
        raise RuleViolation("pm.in_progress", f"tool {tool.code} already has a PM in progress")
    if await _lots_on(session, tool.id):
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
    return await get_plan(session, data.code)


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


async def state_history(
    session: AsyncSession, code: str, page: PageParams, *, since: datetime | None = None
) -> tuple[list[tuple[EquipmentStateEvent, str | None]], int]:
    """A tool's E10 history, newest first, with the chamber name of chamber-level changes."""
    tool = await get_equipment(session, code)
    stmt = (
        select(EquipmentStateEvent, Chamber.name)
        .outerjoin(Chamber, Chamber.id == EquipmentStateEvent.chamber_id)
        .where(EquipmentStateEvent.equipment_id == tool.id)
        .order_by(EquipmentStateEvent.occurred_at.desc(), EquipmentStateEvent.id.desc())
    )
    if since is not None:
        stmt = stmt.where(EquipmentStateEvent.occurred_at >= since)
    rows, total = await fetch_page(session, stmt, page, scalars=False)
    return [(event, chamber) for event, chamber in rows], total
