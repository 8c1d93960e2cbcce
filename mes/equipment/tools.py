"""Tools: installation, look-up and master data; the substate table; and ``record_state``, the
one writer of E10 state changes (with the chamber roll-up)."""

from __future__ import annotations

from collections.abc import Sequence
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
    EquipmentSubstate,
    LoadPort,
    StateChangeSource,
)
from mes.equipment.schemas import EquipmentCreate, EquipmentUpdate, SubstateCreate
from mes.errors import Conflict, InvalidInput, NotFound, StaleVersion
from mes.fabs import service as fabs_service
from mes.fabs.models import Area, Fab, ToolGroup
from mes.kit import wakeups
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


def check_version(tool: Equipment, expected: int) -> None:
    if tool.version != expected:
        raise StaleVersion(
            f"tool {tool.code!r} is at version {tool.version}, not {expected}",
            code="tool.stale_version",
            current_version=tool.version,
        )


def chamber_of(tool: Equipment, name: str | None) -> Chamber | None:
    if name is None:
        return None
    chamber = next((c for c in tool.chambers if c.name == name), None)
    if chamber is None:
        raise NotFound(f"tool {tool.code!r} has no chamber {name!r}", code="tool.chamber_not_found")
    return chamber


@dataclass(frozen=True)
class Installation:
    """A tool to install: where it stands (ids of its fab, area and group) and what it is."""

    code: str
    name: str
    fab_id: int
    area_id: int
    tool_group_id: int
    max_lots: int = 1
    vendor: str | None = None
    model: str | None = None
    opcua_endpoint: str | None = None
    chambers: Sequence[str] = ()
    load_ports: int = 0


async def install(
    session: AsyncSession,
    tools: Sequence[Installation],
    *,
    actor: str,
    at: datetime,
    source: StateChangeSource,
    reason: str,
) -> list[Equipment]:
    """Install tools in SBY, each with its first history record; one flush for all of them,
    so that bulk loads (an SMT2020 fab has about 1,000 tools) stay fast.

    The history records are added, not flushed: the caller's next flush writes them.
    """
    sby = states.E10State.SBY
    rows = [
        Equipment(
            code=t.code,
            name=t.name,
            fab_id=t.fab_id,
            area_id=t.area_id,
            tool_group_id=t.tool_group_id,
            vendor=t.vendor,
            model=t.model,
            opcua_endpoint=t.opcua_endpoint,
            max_lots=t.max_lots,
            e10_state=sby,
            e10_substate=states.DEFAULT_SUBSTATE[sby],
            state_since=at,
            last_signal_at=None,
            chambers=[Chamber(fab_id=t.fab_id, name=name) for name in t.chambers],
            load_ports=[
                LoadPort(fab_id=t.fab_id, port_number=n) for n in range(1, t.load_ports + 1)
            ],
        )
        for t in tools
    ]
    session.add_all(rows)
    await session.flush()
    session.add_all(
        EquipmentStateEvent(
            fab_id=tool.fab_id,
            equipment_id=tool.id,
            from_state=None,
            to_state=tool.e10_state,
            substate=tool.e10_substate,
            occurred_at=at,
            recorded_at=at,
            source=source,
            actor=actor,
            reason=reason,
        )
        for tool in rows
    )
    return rows


async def create_equipment(
    session: AsyncSession, data: EquipmentCreate, *, actor: str, clock: Clock
) -> Equipment:
    """Install a tool in an area of a fab; it starts in SBY with a first history record."""
    if await session.scalar(select(Equipment.id).where(Equipment.code == data.code)) is not None:
        raise Conflict(f"tool {data.code!r} already exists", code="tool.duplicate")
    fab = await fabs_service.get_fab(session, data.fab)
    area = await fabs_service.get_area(session, fab, data.area)
    group = await fabs_service.get_tool_group(session, data.tool_group)
    await install(
        session,
        [
            Installation(
                code=data.code,
                name=data.name,
                fab_id=fab.id,
                area_id=area.id,
                tool_group_id=group.id,
                max_lots=data.max_lots,
                vendor=data.vendor,
                model=data.model,
                opcua_endpoint=data.opcua_endpoint,
                chambers=data.chambers,
                load_ports=data.load_ports,
            )
        ],
        actor=actor,
        at=clock.now(),
        source=StateChangeSource.API,
        reason="installed",
    )
    await session.flush()
    return await get_equipment(session, data.code)


async def update_equipment(session: AsyncSession, code: str, data: EquipmentUpdate) -> Equipment:
    """Change a tool's master data (name, endpoint, capacity)."""
    tool = await get_equipment(session, code, for_update=True)
    check_version(tool, data.version)
    for field, value in data.model_dump(exclude_unset=True, exclude={"version"}).items():
        if field == "name" and value is None:
            continue
        setattr(tool, field, value)
    await session.flush()
    return tool


# --- the substate table ------------------------------------------------------------------


async def allowed_substates(session: AsyncSession) -> set[str]:
    """The substates a state change may name now (the table less the retired ones)."""
    return set(
        await session.scalars(
            select(EquipmentSubstate.code).where(EquipmentSubstate.retired_at.is_(None))
        )
    )


async def retired_substates(session: AsyncSession) -> set[str]:
    return set(
        await session.scalars(
            select(EquipmentSubstate.code).where(EquipmentSubstate.retired_at.is_not(None))
        )
    )


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


async def validated_substate(
    session: AsyncSession, state: states.E10State, substate: str | None
) -> str:
    """``substate`` (or the state's default) if the table allows it in ``state``."""
    try:
        return states.validate_substate(
            state, substate, await allowed_substates(session), await retired_substates(session)
        )
    except states.RetiredSubstate as exc:
        raise Conflict(str(exc), code="tool.substate_retired") from exc
    except states.UnknownSubstate as exc:
        raise InvalidInput(str(exc), code="tool.unknown_substate") from exc
    except states.InvalidSubstate as exc:
        raise InvalidInput(str(exc), code="tool.invalid_substate") from exc


async def retire_substate(
    session: AsyncSession, code: str, *, actor: str, clock: Clock
) -> EquipmentSubstate:
    """Retire a substate: the history that names it stays, new state changes may not use it."""
    row = await session.scalar(
        select(EquipmentSubstate).where(EquipmentSubstate.code == code).with_for_update()
    )
    if row is None:
        raise NotFound(f"substate {code!r} is not in the table", code="substate.not_found")
    if row.retired_at is not None:
        raise Conflict(f"substate {code!r} is already retired", code="substate.already_retired")
    if code in states.SYSTEM_SUBSTATES:
        raise Conflict(
            f"substate {code!r} is one the MES records by itself; it cannot be retired",
            code="substate.system",
        )
    row.retired_at = clock.now()
    row.retired_by = actor
    await session.flush()
    return row


# --- the one writer of state changes ------------------------------------------------------


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
    lots_running: int = 0,
) -> None:
    """Write one state event and move the tool (or chamber) into ``state``.

    A chamber change rolls up: when no chamber is up any more the tool goes down with them
    (``*.ALL_CHAMBERS_DOWN``), and when one comes back the tool returns to SBY if it was down
    only because of its chambers — PRD if ``lots_running`` (lots still on it). The tool's
    event is never dated before its current state began. The caller holds the tool's row lock.
    """
    holder: Equipment | Chamber = tool if chamber is None else chamber
    if chamber is None and state in states.UP_STATES and holder.e10_state not in states.UP_STATES:
        wakeups.request(session, tool.fab_id)  # a tool back up can take lots at once
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
    tool_at = max(at, tool.state_since)
    if down is not None and tool.e10_state in states.UP_STATES:
        record_state(
            session,
            tool,
            down,
            states.ALL_CHAMBERS_DOWN[down],
            actor=actor,
            at=tool_at,
            recorded_at=recorded_at,
            source=StateChangeSource.SYSTEM,
            reason=f"chamber {chamber.name} went {state.value}: no chamber is up",
        )
    elif down is None and tool.e10_substate in states.ALL_CHAMBERS_DOWN.values():
        back = states.E10State.PRD if lots_running else states.E10State.SBY
        record_state(
            session,
            tool,
            back,
            states.DEFAULT_SUBSTATE[back],
            actor=actor,
            at=tool_at,
            recorded_at=recorded_at,
            source=StateChangeSource.SYSTEM,
            reason=f"chamber {chamber.name} is up again",
        )
