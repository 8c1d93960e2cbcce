"""What the network overview and the fab boards show: aggregates read in a few grouped queries
(never one query per lot or tool), so a page stays fast on a thousand-tool fab."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.equipment import pm, pm_rules
from mes.equipment.models import Equipment, EquipmentAlarm
from mes.equipment.states import E10State
from mes.fabs.models import Area, Fab, ToolGroup
from mes.jobs.models import EquipmentJob
from mes.jobs.states import FINAL as FINAL_JOBS
from mes.lots.models import HoldCode, Lot, LotEvent, LotHold
from mes.lots.states import FINAL_STATES, LotState
from mes.lots.type_rules import OUTPUT_TYPES
from mes.opcua.models import AdapterLease
from mes.routes.models import Step

E10_ORDER = [E10State.PRD, E10State.SBY, E10State.ENG, E10State.SDT, E10State.UDT, E10State.NST]
ACTIVE_STATES = [LotState.WAITING, LotState.RUNNING, LotState.ON_HOLD]


@dataclass
class HoldGroup:
    code: str
    count: int
    oldest: datetime


@dataclass
class FabSummary:
    code: str
    name: str
    wip: dict[str, dict[str, int]] = field(default_factory=dict)  # area -> state -> lots
    moves_today: int = 0
    completed_today: int = 0
    tools: dict[str, int] = field(default_factory=dict)  # E10 state -> tools
    holds: list[HoldGroup] = field(default_factory=list)
    in_transit: list[tuple[str, str]] = field(default_factory=list)  # (lot, destination)

    @property
    def wip_total(self) -> int:
        return sum(sum(states.values()) for states in self.wip.values())


def start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


async def _group_areas(session: AsyncSession) -> dict[tuple[int, int], str]:
    """(fab, tool group) -> the area its tools stand in (tool groups span fabs)."""
    rows = await session.execute(
        select(Equipment.fab_id, Equipment.tool_group_id, func.min(Area.code))
        .join(Area, Area.id == Equipment.area_id)
        .group_by(Equipment.fab_id, Equipment.tool_group_id)
    )
    return {(fab, group): area for fab, group, area in rows.all()}


async def network(session: AsyncSession, now: datetime, fab: str | None = None) -> list[FabSummary]:
    """Every fab (or one) side by side: WIP, moves, tools, holds and lots in transit."""
    fab_query = select(Fab).order_by(Fab.code)
    if fab is not None:
        fab_query = fab_query.where(Fab.code == fab)
    fabs = list(await session.scalars(fab_query))
    by_id = {f.id: FabSummary(f.code, f.name) for f in fabs}
    codes = {f.id: f.code for f in await session.scalars(select(Fab))}
    ids = list(by_id)
    areas = await _group_areas(session)
    wip = await session.execute(
        select(Lot.fab_id, Step.tool_group_id, Lot.state, func.count())
        .join(Step, Step.id == Lot.current_step_id)
        .where(Lot.fab_id.in_(ids), Lot.state.in_(ACTIVE_STATES))
        .group_by(Lot.fab_id, Step.tool_group_id, Lot.state)
    )
    for fab_id, group, lot_state, count in wip.all():
        area = areas.get((fab_id, group), "-")
        cell = by_id[fab_id].wip.setdefault(area, {})
        cell[lot_state.value] = cell.get(lot_state.value, 0) + count
    day = start_of_day(now)
    # Output counts product wafers only: monitor and dummy lots are no moves, no completions.
    moves = await session.execute(
        select(LotEvent.fab_id, func.count())
        .join(Lot, Lot.id == LotEvent.lot_id)
        .where(
            LotEvent.fab_id.in_(ids),
            LotEvent.event_type == "TRACK_OUT",
            LotEvent.occurred_at >= day,
            Lot.lot_type.in_(OUTPUT_TYPES),
        )
        .group_by(LotEvent.fab_id)
    )
    for fab_id, count in moves.all():
        by_id[fab_id].moves_today = count
    done = await session.execute(
        select(Lot.fab_id, func.count())
        .where(
            Lot.fab_id.in_(ids),
            Lot.state == LotState.COMPLETED,
            Lot.ended_at >= day,
            Lot.lot_type.in_(OUTPUT_TYPES),
        )
        .group_by(Lot.fab_id)
    )
    for fab_id, count in done.all():
        by_id[fab_id].completed_today = count
    tools = await session.execute(
        select(Equipment.fab_id, Equipment.e10_state, func.count())
        .where(Equipment.fab_id.in_(ids))
        .group_by(Equipment.fab_id, Equipment.e10_state)
    )
    for fab_id, state, count in tools.all():
        by_id[fab_id].tools[state.value] = count
    holds = await session.execute(
        select(LotHold.fab_id, HoldCode.code, func.count(), func.min(LotHold.placed_at))
        .join(HoldCode, HoldCode.id == LotHold.hold_code_id)
        .where(LotHold.fab_id.in_(ids), LotHold.released_at.is_(None))
        .group_by(LotHold.fab_id, HoldCode.code)
        .order_by(HoldCode.code)
    )
    for fab_id, code, count, oldest in holds.all():
        by_id[fab_id].holds.append(HoldGroup(code, count, oldest))
    transit = await session.execute(
        select(Lot.fab_id, Lot.code, Lot.destination_fab_id)
        .where(Lot.fab_id.in_(ids), Lot.state == LotState.IN_TRANSIT)
        .order_by(Lot.code)
        .limit(200)
    )
    for fab_id, lot, destination in transit.all():
        to = codes.get(destination, "?") if destination is not None else "?"
        by_id[fab_id].in_transit.append((lot, to))
    return [by_id[f.id] for f in fabs]


@dataclass
class Tile:
    code: str
    name: str
    area: str
    tool_group: str
    state: str
    substate: str
    since: datetime
    lots: list[str] = field(default_factory=list)
    job: str | None = None
    job_status: str | None = None
    alarms: int = 0
    connection: str | None = None
    pm: str | None = None  # "due" or "upcoming": the most urgent PM plan's status


async def _pm_flags(
    session: AsyncSession,
    tools: Sequence[pm.ToolCounters],
    now: datetime,
    scope: Select[Any],
) -> dict[int, str]:
    """The most urgent PM status of each tool a plan applies to, read for all tools at once."""
    flags = {}
    for tool_id, found in (await pm.pm_states_many(session, tools, now, scope=scope)).items():
        statuses = {st.status for st in found}
        for status in (pm_rules.PmStatus.DUE, pm_rules.PmStatus.UPCOMING):
            if status in statuses:
                flags[tool_id] = status.value
                break
    return flags


async def tiles(
    session: AsyncSession,
    fab: str,
    *,
    now: datetime,
    area: str | None = None,
    tools: Sequence[str] = (),
) -> list[Tile]:
    """The board's tool tiles of a fab (or one area, or named tools), by area and code."""
    # Columns, not ORM objects: a board reads a thousand tools.
    query = (
        select(
            Equipment.id,
            Equipment.code,
            Equipment.name,
            Area.code,
            ToolGroup.code,
            Equipment.e10_state,
            Equipment.e10_substate,
            Equipment.state_since,
            Equipment.tool_group_id,
            Equipment.wafers_processed,
        )
        .join(Fab, Fab.id == Equipment.fab_id)
        .join(Area, Area.id == Equipment.area_id)
        .join(ToolGroup, ToolGroup.id == Equipment.tool_group_id)
        .where(Fab.code == fab)
        .order_by(Area.code, Equipment.code)
    )
    # The same tools as a subquery: the reads below filter by it rather than by a list of a
    # thousand ids, which SQLAlchemy renders bound parameter by bound parameter (with a cast
    # each on PostgreSQL) at every execution: that was most of a board's time on PostgreSQL.
    scope = (
        select(Equipment.id)
        .join(Fab, Fab.id == Equipment.fab_id)
        .join(Area, Area.id == Equipment.area_id)
        .where(Fab.code == fab)
    )
    if area is not None:
        query = query.where(Area.code == area)
        scope = scope.where(Area.code == area)
    if tools:
        query = query.where(Equipment.code.in_(list(tools)))
        scope = scope.where(Equipment.code.in_(list(tools)))
    rows = (await session.execute(query)).all()
    found = {
        r.id: Tile(r.code, r.name, r[3], r[4], r.e10_state.value, r.e10_substate, r.state_since)
        for r in rows
    }
    ids = list(found)
    if not ids:
        return []
    running = await session.execute(
        select(Lot.equipment_id, Lot.code)
        .where(Lot.equipment_id.in_(scope), Lot.state.not_in(FINAL_STATES))
        .order_by(Lot.code)
    )
    for tool_id, lot in running.all():
        if tool_id is not None:
            found[tool_id].lots.append(lot)
    jobs = await session.execute(
        select(EquipmentJob.equipment_id, EquipmentJob.job_order_id, EquipmentJob.status)
        .where(EquipmentJob.equipment_id.in_(scope), EquipmentJob.status.not_in(FINAL_JOBS))
        .order_by(EquipmentJob.requested_at)
    )
    for tool_id, job, status in jobs.all():
        found[tool_id].job, found[tool_id].job_status = job, status.value
    alarms = await session.execute(
        select(EquipmentAlarm.equipment_id, func.count())
        .where(EquipmentAlarm.equipment_id.in_(scope), EquipmentAlarm.cleared_at.is_(None))
        .group_by(EquipmentAlarm.equipment_id)
    )
    for tool_id, count in alarms.all():
        found[tool_id].alarms = count
    leases = await session.execute(
        select(AdapterLease.equipment_id, AdapterLease.connection).where(
            AdapterLease.equipment_id.in_(scope)
        )
    )
    for tool_id, connection in leases.all():
        found[tool_id].connection = connection.value
    flags = await _pm_flags(session, list(rows), now, scope)
    for tool_id, flag in flags.items():
        found[tool_id].pm = flag
    return list(found.values())


def by_area(found: Sequence[Tile]) -> dict[str, list[Tile]]:
    grouped: dict[str, list[Tile]] = defaultdict(list)
    for tile in found:
        grouped[tile.area].append(tile)
    return dict(grouped)


def age(now: datetime, then: datetime) -> str:
    """A short human age: 42 s, 17 min, 5 h 10 min, 3 d."""
    if then.tzinfo is None and now.tzinfo is not None:
        then = then.replace(tzinfo=now.tzinfo)
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        hours, rest = divmod(seconds, 3600)
        return f"{hours} h {rest // 60} min"
    return f"{seconds // 86400} d"


@dataclass
class WipRow:
    route: str
    sequence: int
    operation: str
    tool_group: str
    area: str
    states: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.states.values())


async def wip_by_step(
    session: AsyncSession,
    fab: str,
    *,
    area: str | None = None,
    product: str | None = None,
    state: str | None = None,
) -> list[WipRow]:
    """Active lots of a fab by route step (in route order), with each step's area; filters."""
    from mes.products.models import Product
    from mes.routes.models import Route, RouteVersion

    fab_id = await session.scalar(select(Fab.id).where(Fab.code == fab))
    if fab_id is None:
        return []
    states = [s for s in ACTIVE_STATES if state is None or s.value == state]
    query = (
        select(
            Route.code, Step.sequence, Step.operation, Step.tool_group_id, Lot.state, func.count()
        )
        .join(Step, Step.id == Lot.current_step_id)
        .join(RouteVersion, RouteVersion.id == Lot.route_version_id)
        .join(Route, Route.id == RouteVersion.route_id)
        .where(Lot.fab_id == fab_id, Lot.state.in_(states))
        .group_by(Route.code, Step.sequence, Step.operation, Step.tool_group_id, Lot.state)
    )
    if product is not None:
        query = query.join(Product, Product.id == Lot.product_id).where(Product.code == product)
    areas = await _group_areas(session)
    groups = dict((await session.execute(select(ToolGroup.id, ToolGroup.code))).all())
    rows: dict[tuple[str, int], WipRow] = {}
    for route, sequence, operation, group, lot_state, count in (await session.execute(query)).all():
        where = areas.get((fab_id, group), "-")
        if area is not None and where != area:
            continue
        row = rows.setdefault(
            (route, sequence),
            WipRow(route, sequence, operation, groups.get(group, "?"), where),
        )
        row.states[lot_state.value] = row.states.get(lot_state.value, 0) + count
    return [rows[key] for key in sorted(rows)]
