"""Tools: registration, master data, and E10 state changes with their history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import flag_modified

from mes.clock import Clock
from mes.equipment import states
from mes.equipment.models import (
    Chamber,
    Equipment,
    EquipmentStateEvent,
    LoadPort,
    StateChangeSource,
)
from mes.equipment.schemas import EquipmentCreate, EquipmentUpdate, StateChange
from mes.errors import Conflict, InvalidInput, NotFound, StaleVersion
from mes.fabs import service as fabs_service
from mes.fabs.models import Area, Fab, ToolGroup
from mes.kit.api import PageParams, fetch_page
from mes.kit.lookup import get_by_key

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
    try:
        substate = states.validate_substate(change.state, change.substate)
    except states.InvalidSubstate as exc:
        raise InvalidInput(str(exc), code="tool.invalid_substate") from exc
    now = clock.now()
    occurred_at = change.occurred_at or now
    if occurred_at > now:
        raise InvalidInput(
            "a state change cannot take effect in the future", code="tool.future_time"
        )
    holder: Equipment | Chamber = tool
    chamber_id = None
    if change.chamber is not None:
        chamber = next((c for c in tool.chambers if c.name == change.chamber), None)
        if chamber is None:
            raise NotFound(
                f"tool {code!r} has no chamber {change.chamber!r}", code="tool.chamber_not_found"
            )
        holder, chamber_id = chamber, chamber.id
    elif occurred_at < tool.state_since:
        raise InvalidInput(
            "a state change cannot take effect before the current state began",
            code="tool.time_before_current_state",
        )
    session.add(
        EquipmentStateEvent(
            fab_id=tool.fab_id,
            equipment_id=tool.id,
            chamber_id=chamber_id,
            from_state=holder.e10_state,
            to_state=change.state,
            substate=substate,
            occurred_at=occurred_at,
            recorded_at=now,
            source=source,
            actor=actor,
            reason=change.reason,
        )
    )
    holder.e10_state = change.state
    holder.e10_substate = substate
    if chamber_id is None:
        tool.state_since = occurred_at
    else:
        # A chamber's change is still a change of the tool: bump the tool's version so that
        # concurrent writers of the tool notice.
        flag_modified(tool, "e10_substate")
    await session.flush()
    return tool


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
