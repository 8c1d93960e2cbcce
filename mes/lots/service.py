"""Lot transactions: start, track-in/out, holds, future actions, split/merge, scrap/bonus,
jump, priority, terminate, ship/receive; and the lot queries.

Every transaction locks the lot row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has one writer
at a time), checks the caller's expected version, applies ``rules``, and writes one LotEvent whose
before/after snapshots chain up to the lot's current state. Lots are locked before tools, and
several lots in id order, so concurrent transactions cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, joinedload, selectinload

from mes.auth.models import AccountKind, Certification
from mes.auth.service import Principal
from mes.clock import Clock
from mes.durables import service as durables_service
from mes.durables.models import Carrier, CarrierState
from mes.equipment.models import Equipment, EquipmentStateEvent, StateChangeSource
from mes.equipment.states import DEFAULT_SUBSTATE, E10State
from mes.errors import Conflict, Forbidden, InvalidInput, NotFound, RuleViolation, StaleVersion
from mes.fabs.models import Area, Fab, ToolGroup
from mes.kit.api import PageParams, fetch_page
from mes.kit.lookup import get_by_key
from mes.lots import rules
from mes.lots import schemas as s
from mes.lots.models import (
    FutureAction,
    Genealogy,
    HoldCode,
    Lot,
    LotCounter,
    LotEvent,
    LotHold,
    LotTransfer,
    QTimeWindow,
    ReworkCount,
    Wafer,
)
from mes.lots.states import (
    FutureActionKind,
    GenealogyRelation,
    LotState,
    PriorityClass,
    QTimeStatus,
    WaferState,
)
from mes.products.models import Product
from mes.recipes import service as recipes_service
from mes.recipes.models import RecipeVersion
from mes.routes import rules as route_rules
from mes.routes import service as routes_service
from mes.routes.models import Route, RouteVersion, RouteVersionStatus, Step

# Transit between fabs takes time: a Q-time window closer than this refuses the shipment.
TRANSIT_TIME = timedelta(hours=4)

# Everything a lot answer shows, in one query: these are all many-to-one joins.
LOT_OPTIONS = (
    joinedload(Lot.fab),
    joinedload(Lot.product),
    joinedload(Lot.route_version).joinedload(RouteVersion.route),
    joinedload(Lot.current_step).joinedload(Step.tool_group),
    joinedload(Lot.carrier),
    joinedload(Lot.parent),
)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LotFilter:
    fab: str | None = None
    product: str | None = None
    state: LotState | None = None
    priority_class: PriorityClass | None = None
    area: str | None = None
    tool_group: str | None = None
    route: str | None = None
    step_sequence: int | None = None
    tool: str | None = None


def lot_query(flt: LotFilter) -> Select[Lot]:
    stmt = select(Lot).options(*LOT_OPTIONS).order_by(Lot.code)
    if flt.fab is not None:
        stmt = stmt.join(Fab, Fab.id == Lot.fab_id).where(Fab.code == flt.fab)
    if flt.product is not None:
        stmt = stmt.join(Product, Product.id == Lot.product_id).where(Product.code == flt.product)
    if flt.state is not None:
        stmt = stmt.where(Lot.state == flt.state)
    if flt.priority_class is not None:
        stmt = stmt.where(Lot.priority_class == flt.priority_class)
    if flt.tool_group is not None or flt.step_sequence is not None or flt.area is not None:
        current = aliased(Step)
        stmt = stmt.join(current, current.id == Lot.current_step_id)
        if flt.step_sequence is not None:
            stmt = stmt.where(current.sequence == flt.step_sequence)
        if flt.tool_group is not None or flt.area is not None:
            group = aliased(ToolGroup)
            stmt = stmt.join(group, group.id == current.tool_group_id)
            if flt.tool_group is not None:
                stmt = stmt.where(group.code == flt.tool_group)
            if flt.area is not None:
                # WIP of an area: lots whose step needs a tool group present in that area.
                in_area = (
                    select(Equipment.tool_group_id)
                    .join(Area, Area.id == Equipment.area_id)
                    .where(Area.code == flt.area, Equipment.fab_id == Lot.fab_id)
                )
                stmt = stmt.where(current.tool_group_id.in_(in_area))
    if flt.route is not None:
        stmt = (
            stmt.join(RouteVersion, RouteVersion.id == Lot.route_version_id)
            .join(Route, Route.id == RouteVersion.route_id)
            .where(Route.code == flt.route)
        )
    if flt.tool is not None:
        stmt = stmt.join(Equipment, Equipment.id == Lot.equipment_id).where(
            Equipment.code == flt.tool
        )
    return stmt


async def get_lot(session: AsyncSession, code: str) -> Lot:
    """The lot ``code`` with its wafers, or lot.not_found."""
    return await get_by_key(
        session,
        Lot,
        Lot.code,
        code,
        code="lot.not_found",
        what="lot",
        options=(*LOT_OPTIONS, selectinload(Lot.wafers)),
    )


async def lot_history(
    session: AsyncSession, code: str, page: PageParams
) -> tuple[list[tuple[LotEvent, str, int | None, str | None]], int]:
    """A lot's events, oldest first: (event, fab code, step sequence, tool code)."""
    lot = await get_lot(session, code)
    step = aliased(Step)
    stmt = (
        select(LotEvent, Fab.code, step.sequence, Equipment.code)
        .join(Fab, Fab.id == LotEvent.fab_id)
        .outerjoin(step, step.id == LotEvent.step_id)
        .outerjoin(Equipment, Equipment.id == LotEvent.equipment_id)
        .where(LotEvent.lot_id == lot.id)
        .order_by(LotEvent.occurred_at, LotEvent.id)
    )
    rows, total = await fetch_page(session, stmt, page, scalars=False)
    return [(e, f, q, t) for e, f, q, t in rows], total


async def active_holds(session: AsyncSession, lot_ids: Sequence[int]) -> list[LotHold]:
    if not lot_ids:
        return []
    return list(
        await session.scalars(
            select(LotHold)
            .options(selectinload(LotHold.hold_code), selectinload(LotHold.lot))
            .where(LotHold.lot_id.in_(lot_ids), LotHold.released_at.is_(None))
            .order_by(LotHold.id)
        )
    )


def hold_read(hold: LotHold, fab_code: str, now: datetime) -> s.HoldRead:
    return s.HoldRead(
        id=hold.id,
        lot=hold.lot.code,
        fab=fab_code,
        hold_code=hold.hold_code.code,
        release_role=hold.hold_code.release_role,
        reason=hold.reason,
        placed_by=hold.placed_by,
        placed_at=hold.placed_at,
        age_s=int((now - hold.placed_at).total_seconds()),
    )


async def hold_list(
    session: AsyncSession, page: PageParams, *, fab: str | None, hold_code: str | None
) -> tuple[list[tuple[LotHold, str]], int]:
    """Active holds across lots, oldest first, with their fab."""
    stmt = (
        select(LotHold, Fab.code)
        .options(selectinload(LotHold.hold_code), selectinload(LotHold.lot))
        .join(Fab, Fab.id == LotHold.fab_id)
        .where(LotHold.released_at.is_(None))
        .order_by(LotHold.placed_at, LotHold.id)
    )
    if fab is not None:
        stmt = stmt.where(Fab.code == fab)
    if hold_code is not None:
        stmt = stmt.join(HoldCode, HoldCode.id == LotHold.hold_code_id).where(
            HoldCode.code == hold_code
        )
    rows, total = await fetch_page(session, stmt, page, scalars=False)
    return [(h, f) for h, f in rows], total


async def genealogy(session: AsyncSession, code: str) -> s.GenealogyRead:
    """Ancestors and descendants of a lot through splits and merges."""
    lot = await get_lot(session, code)
    parent, child = aliased(Lot), aliased(Lot)
    link_stmt = (
        select(Genealogy, parent.code, child.code)
        .join(parent, parent.id == Genealogy.parent_lot_id)
        .join(child, child.id == Genealogy.child_lot_id)
    )

    async def walk(start: int, upwards: bool) -> list[s.GenealogyLink]:
        seen, frontier, links = {start}, [start], []
        while frontier:
            column = Genealogy.child_lot_id if upwards else Genealogy.parent_lot_id
            rows = (await session.execute(link_stmt.where(column.in_(frontier)))).all()
            frontier = []
            for link, parent_code, child_code in rows:
                links.append(
                    s.GenealogyLink(
                        parent=parent_code,
                        child=child_code,
                        relation=link.relation,
                        wafer_count=link.wafer_count,
                        occurred_at=link.occurred_at,
                    )
                )
                nxt = link.parent_lot_id if upwards else link.child_lot_id
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        return links

    return s.GenealogyRead(
        lot=lot.code, ancestors=await walk(lot.id, True), descendants=await walk(lot.id, False)
    )


# --- building blocks -----------------------------------------------------------------------


async def route_steps(session: AsyncSession, route_version_id: int) -> tuple[rules.StepView, ...]:
    """The steps of a route version, as plain views (columns only: no ORM objects to build)."""
    rows = await session.execute(
        select(
            Step.id,
            Step.sequence,
            Step.tool_group_id,
            Step.operation,
            Step.recipe_name,
            Step.sampling_rate,
            Step.rework_to_sequence,
            Step.rework_limit,
            Step.qtime_to_sequence,
            Step.qtime_max_s,
            Step.batch_max,
            Step.setup,
            Step.same_tool_as_sequence,
        )
        .where(Step.route_version_id == route_version_id)
        .order_by(Step.sequence)
    )
    return tuple(rules.StepView(**row) for row in rows.mappings().all())


def _step(steps: Sequence[rules.StepView], step_id: int | None) -> rules.StepView:
    found = next((st for st in steps if st.id == step_id), None)
    if found is None:
        raise RuleViolation("lot.no_step", "the lot is not at a step")
    return found


def _by_sequence(steps: Sequence[rules.StepView], sequence: int) -> rules.StepView:
    found = next((st for st in steps if st.sequence == sequence), None)
    if found is None:
        raise NotFound(f"the lot's route has no step {sequence}", code="lot.step_not_found")
    return found


async def _lock_lot(
    session: AsyncSession, code: str, version: int | None, *, wafers: bool = False
) -> Lot:
    lot = await get_by_key(
        session,
        Lot,
        Lot.code,
        code,
        code="lot.not_found",
        what="lot",
        options=(selectinload(Lot.wafers),) if wafers else (),
        for_update=True,
    )
    if version is not None and version != lot.version:
        raise StaleVersion(
            f"lot {code} is at version {lot.version}, not {version}",
            code="lot.stale_version",
            current_version=lot.version,
        )
    return lot


async def _hold_count(session: AsyncSession, lot_id: int) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(LotHold)
            .where(LotHold.lot_id == lot_id, LotHold.released_at.is_(None))
        )
        or 0
    )


def _view(lot: Lot, holds: int) -> rules.LotView:
    return rules.LotView(
        code=lot.code,
        state=lot.state,
        step_id=lot.current_step_id,
        equipment_id=lot.equipment_id,
        wafer_count=lot.wafer_count,
        active_holds=holds,
        fab_id=lot.fab_id,
    )


def _snapshot(lot: Lot, holds: int) -> dict[str, Any]:
    return {
        "state": lot.state.value,
        "step_id": lot.current_step_id,
        "equipment_id": lot.equipment_id,
        "wafer_count": lot.wafer_count,
        "fab_id": lot.fab_id,
        "priority_class": lot.priority_class.value,
        "active_holds": holds,
    }


class _Change:
    """Captures a lot's state before a transaction and writes the LotEvent after it."""

    def __init__(self, session: AsyncSession, lot: Lot, holds: int) -> None:
        self.session, self.lot, self.holds = session, lot, holds
        self.before = _snapshot(lot, holds)

    async def record(
        self,
        event_type: str,
        *,
        actor: str,
        at: datetime,
        reason: str | None = None,
        step_id: int | None = None,
        equipment_id: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        holds = await _hold_count(self.session, self.lot.id)
        self.lot.state = rules.state_with_holds(self.lot.state, holds)
        after = _snapshot(self.lot, holds)
        self.session.add(
            LotEvent(
                lot_id=self.lot.id,
                fab_id=self.lot.fab_id,
                event_type=event_type,
                occurred_at=at,
                actor=actor,
                step_id=step_id if step_id is not None else self.lot.current_step_id,
                equipment_id=equipment_id,
                reason=reason,
                before=self.before,
                after={**after, **(details or {})},
            )
        )
        await self.session.flush()


async def _begin(
    session: AsyncSession, code: str, version: int | None, *, wafers: bool = False
) -> tuple[Lot, _Change]:
    lot = await _lock_lot(session, code, version, wafers=wafers)
    return lot, _Change(session, lot, await _hold_count(session, lot.id))


async def get_hold_code(session: AsyncSession, code: str) -> HoldCode:
    return await get_by_key(
        session, HoldCode, HoldCode.code, code, code="hold.unknown_code", what="hold code"
    )


def _place_hold(
    session: AsyncSession, lot: Lot, code: HoldCode, reason: str, *, actor: str, at: datetime
) -> LotHold:
    hold = LotHold(
        lot_id=lot.id,
        fab_id=lot.fab_id,
        hold_code=code,
        step_id=lot.current_step_id,
        reason=reason,
        placed_by=actor,
        placed_at=at,
    )
    session.add(hold)
    return hold


async def _fab(session: AsyncSession, code: str) -> Fab:
    return await get_by_key(session, Fab, Fab.code, code, code="fab.not_found", what="fab")


def _release_carrier(lot: Lot) -> None:
    if lot.carrier is not None:
        lot.carrier.state = CarrierState.DIRTY
        lot.carrier.uses_since_clean += 1
    lot.carrier_id = None


def _finish(lot: Lot, state: LotState, at: datetime) -> None:
    lot.state = state
    lot.ended_at = at
    lot.equipment_id = None
    lot.tracked_in_at = None


# --- start ---------------------------------------------------------------------------------


async def _active_route_version(
    session: AsyncSession, product: Product, route_code: str | None, now: datetime
) -> RouteVersion:
    """The route version in force now for new lots of the product (see routes.rules)."""
    stmt = (
        select(
            RouteVersion.id,
            Route.code,
            RouteVersion.version,
            RouteVersion.status,
            RouteVersion.effective_at,
        )
        .join(Route, Route.id == RouteVersion.route_id)
        .where(
            Route.product_id == product.id,
            RouteVersion.status.in_((RouteVersionStatus.ACTIVE, RouteVersionStatus.PENDING)),
        )
    )
    if route_code is not None:
        stmt = stmt.where(Route.code == route_code)
    by_route: dict[str, list[route_rules.VersionView]] = {}
    ids: dict[tuple[str, int], int] = {}
    for version_id, code, number, status, effective_at in (await session.execute(stmt)).all():
        by_route.setdefault(code, []).append(
            route_rules.VersionView(number, route_rules.VersionStatus(status.value), effective_at)
        )
        ids[(code, number)] = version_id
    in_force = {
        code: chosen
        for code, versions in by_route.items()
        if (chosen := route_rules.version_in_force(versions, now)) is not None
    }
    if not in_force:
        raise Conflict(
            f"product {product.code} has no active route version"
            + (f" on route {route_code}" if route_code else ""),
            code="lot.no_active_route",
        )
    if len(in_force) > 1:
        raise InvalidInput(
            f"product {product.code} has several routes; name one", code="lot.route_ambiguous"
        )
    [(code, chosen)] = in_force.items()
    if chosen.status == route_rules.VersionStatus.PENDING:
        # Its effective time has come: record it (rare; takes the route's row lock).
        await routes_service.promote_due(
            session, await routes_service.get_route(session, code, for_update=True), now
        )
    found = await session.get(RouteVersion, ids[(code, chosen.version)])
    assert found is not None
    return found


async def _next_codes(session: AsyncSession, year: int, count: int) -> list[str]:
    counter = await session.get(LotCounter, year, with_for_update=True)
    if counter is None:
        counter = LotCounter(year=year, next_number=1)
        session.add(counter)
    first = counter.next_number
    counter.next_number = first + count
    await session.flush()
    return [rules.lot_code(year, n) for n in range(first, first + count)]


async def start_lots(
    session: AsyncSession,
    *,
    product_code: str,
    fab_code: str,
    route_code: str | None,
    count: int,
    wafer_count: int,
    priority_class: PriorityClass,
    due_at: datetime | None,
    code: str | None,
    carrier_code: str | None,
    actor: str,
    clock: Clock,
) -> list[Lot]:
    """Release ``count`` lots of a product onto its active route version."""
    now = clock.now()
    product = await get_by_key(
        session, Product, Product.code, product_code, code="product.not_found", what="product"
    )
    fab = await _fab(session, fab_code)
    version = await _active_route_version(session, product, route_code, now)
    steps = await route_steps(session, version.id)
    first, _skipped = rules.next_step(steps, 0, code or "")
    if first is None:
        raise Conflict("the route has no step to start at", code="lot.empty_route")
    if code is not None:
        if await session.scalar(select(Lot.id).where(Lot.code == code)) is not None:
            raise Conflict(f"lot {code} already exists", code="lot.duplicate")
        codes = [code]
    else:
        codes = await _next_codes(session, now.year, count)
    carrier: Carrier | None = None
    if carrier_code is not None:
        carrier = await get_by_key(
            session,
            Carrier,
            Carrier.code,
            carrier_code,
            code="carrier.not_found",
            what="carrier",
            for_update=True,
        )
        if carrier.fab_id != fab.id or carrier.state != CarrierState.AVAILABLE:
            raise Conflict(
                f"carrier {carrier_code} is not available in fab {fab_code}",
                code="carrier.not_available",
            )
        if carrier.capacity < wafer_count:
            raise Conflict("the carrier is too small for the lot", code="carrier.too_small")
        carrier.state = CarrierState.IN_USE
    started = []
    for lot_code_ in codes:
        first_step, _ = rules.next_step(steps, 0, lot_code_)
        assert first_step is not None  # the route has steps (checked above)
        lot = Lot(
            code=lot_code_,
            fab_id=fab.id,
            product_id=product.id,
            route_version_id=version.id,
            current_step_id=first_step.id,
            state=LotState.WAITING,
            priority_class=priority_class,
            due_at=due_at,
            wafer_count=wafer_count,
            carrier=carrier,
            started_at=now,
            step_entered_at=now,
            wafers=[
                Wafer(scribe_id=rules.scribe_id(lot_code_, slot), fab_id=fab.id, slot=slot)
                for slot in range(1, wafer_count + 1)
            ],
        )
        session.add(lot)
        await session.flush()
        change = _Change(session, lot, 0)
        change.before = None  # type: ignore[assignment]
        await change.record(
            "START", actor=actor, at=now, details={"route_version": version.version}
        )
        await _arrive(session, lot, first_step, actor=actor, at=now)
        started.append(lot)
    return started


# --- track-in / track-out ------------------------------------------------------------------


async def _lock_tool(session: AsyncSession, code: str) -> Equipment:
    return await get_by_key(
        session,
        Equipment,
        Equipment.code,
        code,
        code="tool.not_found",
        what="tool",
        options=(selectinload(Equipment.chambers),),
        for_update=True,
    )


def _tool_view(tool: Equipment) -> rules.ToolView:
    chambers_up = (
        sum(1 for c in tool.chambers if c.e10_state in (E10State.SBY, E10State.PRD))
        if tool.chambers
        else None
    )
    return rules.ToolView(
        id=tool.id,
        code=tool.code,
        tool_group_id=tool.tool_group_id,
        fab_id=tool.fab_id,
        e10_state=tool.e10_state,
        max_lots=tool.max_lots,
        chambers_up=chambers_up,
    )


async def _lots_on_tool(session: AsyncSession, tool_id: int) -> list[tuple[int, str | None]]:
    rows = await session.execute(
        select(Step.id, Step.recipe_name)
        .join(Lot, Lot.current_step_id == Step.id)
        .where(Lot.equipment_id == tool_id)
    )
    return [(step_id, recipe) for step_id, recipe in rows.all()]


async def _recipe_to_run(
    session: AsyncSession, lot: Lot, step: rules.StepView, tool: Equipment, now: datetime
) -> RecipeVersion:
    """The recipe version the step runs on this tool: context resolution of the step's logical
    recipe, then the newest approved version with a standing qualification on the tool. The
    qualification is share-locked so that a disqualification cannot slip in beside us."""
    if step.recipe_name is None:  # only drafts lack recipes; lots run activated versions
        raise RuleViolation("recipe.not_approved", f"step {step.sequence} names no recipe")
    found = await recipes_service.resolve_on_tool(
        session,
        logical_recipe=step.recipe_name,
        product_id=lot.product_id,
        operation=step.operation,
        tool=tool,
        chamber=None,
        now=now,
        lock=True,
    )
    if found.refusal is not None:
        raise found.refusal
    assert found.version is not None
    return found.version


async def _check_certified(
    session: AsyncSession, principal: Principal, tool_group_id: int, now: datetime
) -> None:
    if principal.kind != AccountKind.HUMAN:
        return  # machines act for the tool; people are certified
    certified = await session.scalar(
        select(Certification.id).where(
            Certification.user_id == principal.user_id,
            Certification.tool_group_id == tool_group_id,
            or_(Certification.expires_at.is_(None), Certification.expires_at > now),
        )
    )
    if certified is None:
        raise Forbidden(
            f"{principal.username} is not certified for this tool group",
            code="user.not_certified",
        )


def _tool_state(
    session: AsyncSession, tool: Equipment, state: E10State, *, actor: str, at: datetime
) -> None:
    """The automatic E10 transitions of track-in/out (SBY→PRD, PRD→SBY)."""
    session.add(
        EquipmentStateEvent(
            fab_id=tool.fab_id,
            equipment_id=tool.id,
            from_state=tool.e10_state,
            to_state=state,
            substate=DEFAULT_SUBSTATE[state],
            occurred_at=at,
            recorded_at=at,
            source=StateChangeSource.SYSTEM,
            actor=actor,
            reason="lot track-in" if state == E10State.PRD else "last lot tracked out",
        )
    )
    tool.e10_state = state
    tool.e10_substate = DEFAULT_SUBSTATE[state]
    tool.state_since = at


async def _tool_that_ran(session: AsyncSession, lot: Lot, step: rules.StepView) -> int | None:
    """The tool the lot last tracked in on at ``step`` (None: it has not run it)."""
    return await session.scalar(
        select(LotEvent.equipment_id)
        .where(
            LotEvent.lot_id == lot.id,
            LotEvent.step_id == step.id,
            LotEvent.event_type == "TRACK_IN",
        )
        .order_by(LotEvent.occurred_at.desc(), LotEvent.id.desc())
        .limit(1)
    )


async def track_in(
    session: AsyncSession, code: str, data: s.TrackIn, *, principal: Principal, clock: Clock
) -> tuple[Lot, Equipment, RecipeVersion]:
    """Put a waiting lot on a tool and say which recipe version to run."""
    now = clock.now()
    lot, change = await _begin(session, code, data.version)
    steps = await route_steps(session, lot.route_version_id)
    rules.require_waiting(_view(lot, change.holds))
    step = _step(steps, lot.current_step_id)
    tool = await _lock_tool(session, data.tool)
    rules.check_track_in(
        _view(lot, change.holds),
        step,
        _tool_view(tool),
        lots_on_tool=await _lots_on_tool(session, tool.id),
        expected_step_sequence=data.step_sequence,
    )
    if step.same_tool_as_sequence is not None:
        earlier = _by_sequence(steps, step.same_tool_as_sequence)
        rules.check_dedication(step, _tool_view(tool), await _tool_that_ran(session, lot, earlier))
    # Q-time: a window this step closes that has already run out holds the lot instead.
    windows = list(
        await session.scalars(
            select(QTimeWindow).where(
                QTimeWindow.lot_id == lot.id,
                QTimeWindow.to_step_id == step.id,
                QTimeWindow.status == QTimeStatus.OPEN,
            )
        )
    )
    expired = [w for w in windows if rules.qtime_expired(w.deadline_at, now)]
    if expired:
        for window in expired:
            window.status, window.closed_at = QTimeStatus.EXPIRED, now
        _place_hold(
            session,
            lot,
            await get_hold_code(session, "QTIME_EXPIRED"),
            f"Q-time to step {step.sequence} expired at {expired[0].deadline_at.isoformat()}",
            actor="system",
            at=now,
        )
        await session.flush()
        await change.record("QTIME_EXPIRED", actor=principal.username, at=now)
        raise RuleViolation(
            "lot.qtime_expired",
            f"the Q-time window of lot {code} to step {step.sequence} expired; the lot is on hold",
            keep_changes=True,
        )
    recipe = await _recipe_to_run(session, lot, step, tool, now)
    await _check_certified(session, principal, step.tool_group_id, now)
    # The equipment's side: no PM due, the recipe's reticle at the tool and under its
    # limit; counts the wafers on the tool and the reticle's uses.
    await durables_service.admit_lot(
        session, tool, recipe_body=recipe.body, wafers=lot.wafer_count, now=now
    )
    for window in windows:
        window.status, window.closed_at = QTimeStatus.MET, now
    if tool.e10_state == E10State.SBY:
        _tool_state(session, tool, E10State.PRD, actor=principal.username, at=now)
    lot.state = LotState.RUNNING
    lot.equipment_id = tool.id
    lot.tracked_in_at = now
    setup = rules.next_setup_count(tool.current_setup, tool.setup_lots, step.setup)
    if setup != (tool.current_setup, tool.setup_lots):
        tool.current_setup, tool.setup_lots = setup
    await change.record(
        "TRACK_IN",
        actor=principal.username,
        at=now,
        equipment_id=tool.id,
        details={"recipe": recipe.recipe.name, "recipe_version": recipe.version},
    )
    return lot, tool, recipe


async def _open_actions(session: AsyncSession, lot_id: int) -> list[FutureAction]:
    return list(
        await session.scalars(
            select(FutureAction)
            .options(selectinload(FutureAction.hold_code))
            .where(FutureAction.lot_id == lot_id, FutureAction.done_at.is_(None))
        )
    )


ARRIVAL = FutureActionKind.HOLD_ON_ARRIVAL
AFTER_TRACK_OUT = FutureActionKind.HOLD_AFTER_TRACK_OUT


def _fire(
    session: AsyncSession,
    lot: Lot,
    actions: Sequence[FutureAction],
    *,
    kind: FutureActionKind,
    step_id: int,
    at: datetime,
) -> None:
    """Place the holds of the armed actions of ``kind`` at ``step_id``."""
    for action in actions:
        if action.kind == kind and action.step_id == step_id and action.done_at is None:
            _place_hold(
                session, lot, action.hold_code, action.reason, actor=action.created_by, at=at
            )
            action.done_at = at


async def _arrive(
    session: AsyncSession, lot: Lot, step: rules.StepView, *, actor: str, at: datetime
) -> None:
    """Fire the hold-on-arrival actions armed for ``step``."""
    actions = await _open_actions(session, lot.id)
    _fire(session, lot, actions, kind=FutureActionKind.HOLD_ON_ARRIVAL, step_id=step.id, at=at)


async def _void_windows(
    session: AsyncSession, lot: Lot, to_step_ids: Sequence[int] | None, at: datetime
) -> None:
    stmt = (
        update(QTimeWindow)
        .where(QTimeWindow.lot_id == lot.id, QTimeWindow.status == QTimeStatus.OPEN)
        .values(status=QTimeStatus.VOID, closed_at=at)
    )
    if to_step_ids is not None:
        if not to_step_ids:
            return
        stmt = stmt.where(QTimeWindow.to_step_id.in_(to_step_ids))
    await session.execute(stmt)


async def track_out(
    session: AsyncSession, code: str, data: s.TrackOut, *, principal: Principal, clock: Clock
) -> Lot:
    """Take a lot off its tool and move it on: next step, rework, or completion."""
    now = clock.now()
    lot, change = await _begin(session, code, data.version)
    if lot.state != LotState.RUNNING or lot.equipment_id is None:
        raise RuleViolation("lot.not_running", f"lot {code} is not on a tool")
    steps = await route_steps(session, lot.route_version_id)
    step = _step(steps, lot.current_step_id)
    processed = lot.wafer_count if data.wafers_processed is None else data.wafers_processed
    rules.check_wafers_processed(processed, lot.wafer_count)
    tool = await session.get(Equipment, lot.equipment_id, with_for_update={"key_share": True})
    assert tool is not None  # the FK guarantees it

    # Read and decide everything first: a query after a change would flush it early, and one
    # UPDATE of the lot (one audit record) per move is what we want.
    actions = await _open_actions(session, lot.id)
    # This lot is one of them; the tool stays productive if it runs others too.
    tool_stays_busy = len(await _lots_on_tool(session, tool.id)) > 1
    details: dict[str, Any] = {
        "outcome": data.outcome.value,
        "wafers_processed": processed,
        "measurements": [m.model_dump() for m in data.measurements],
    }
    rework_counter: ReworkCount | None = None
    decision: rules.ReworkDecision | None = None
    limit_code: HoldCode | None = None
    following: rules.StepView | None = None
    skipped: list[rules.StepView] = []
    if data.outcome == s.TrackOutcome.REWORK:
        rework_counter = (
            await session.scalars(
                select(ReworkCount).where(
                    ReworkCount.lot_id == lot.id, ReworkCount.step_id == step.id
                )
            )
        ).one_or_none()
        decision = rules.rework(step, rework_counter.count if rework_counter else 0)
        details["rework_count"] = decision.count
        if decision.target_sequence is None:
            limit_code = await get_hold_code(session, "REWORK_LIMIT")
    else:
        following, skipped = rules.next_step(steps, step.sequence, lot.code)
        details["skipped"] = [sk.sequence for sk in skipped]
        await _void_windows(session, lot, [sk.id for sk in skipped], now)

    lot.equipment_id = None
    lot.tracked_in_at = None
    lot.state = LotState.WAITING
    if decision is not None:
        if rework_counter is None:
            session.add(ReworkCount(lot_id=lot.id, step_id=step.id, count=decision.count))
        else:
            rework_counter.count = decision.count
        if decision.target_sequence is None:
            assert limit_code is not None
            reason = f"rework limit {step.rework_limit} of step {step.sequence} reached"
            _place_hold(session, lot, limit_code, reason, actor="system", at=now)
        else:
            target = _by_sequence(steps, decision.target_sequence)
            lot.current_step_id, lot.step_entered_at = target.id, now
            _fire(session, lot, actions, kind=ARRIVAL, step_id=target.id, at=now)
    else:
        if step.qtime_to_sequence is not None and step.qtime_max_s is not None:
            closing = _by_sequence(steps, step.qtime_to_sequence)
            session.add(
                QTimeWindow(
                    lot_id=lot.id,
                    fab_id=lot.fab_id,
                    from_step_id=step.id,
                    to_step_id=closing.id,
                    opened_at=now,
                    deadline_at=now + timedelta(seconds=step.qtime_max_s),
                    # Sampling skips its closing step for this lot: the window never applies.
                    status=QTimeStatus.VOID if closing in skipped else QTimeStatus.OPEN,
                    closed_at=now if closing in skipped else None,
                )
            )
        _fire(session, lot, actions, kind=AFTER_TRACK_OUT, step_id=step.id, at=now)
        if following is None:
            _finish(lot, LotState.COMPLETED, now)
            _release_carrier(lot)
        else:
            lot.current_step_id, lot.step_entered_at = following.id, now
            _fire(session, lot, actions, kind=ARRIVAL, step_id=following.id, at=now)
    if not tool_stays_busy and tool.e10_state == E10State.PRD:
        _tool_state(session, tool, E10State.SBY, actor=principal.username, at=now)
    await change.record(
        "TRACK_OUT",
        actor=principal.username,
        at=now,
        step_id=step.id,
        equipment_id=tool.id,
        details=details,
    )
    return lot


async def abort_run(
    session: AsyncSession,
    code: str,
    *,
    event_type: str,
    reason: str,
    hold: bool,
    actor: str,
    clock: Clock,
    details: dict[str, Any] | None = None,
) -> Lot:
    """Take a running lot off its tool without moving it on: back to Waiting at the same step
    (its job was aborted, lost or refused by the tool), optionally on hold ``EQUIPMENT``."""
    now = clock.now()
    lot, change = await _begin(session, code, None)
    if lot.state != LotState.RUNNING or lot.equipment_id is None:
        raise RuleViolation("lot.not_running", f"lot {code} is not on a tool")
    tool = await session.get(Equipment, lot.equipment_id, with_for_update={"key_share": True})
    assert tool is not None  # the FK guarantees it
    hold_code = await get_hold_code(session, "EQUIPMENT") if hold else None
    tool_stays_busy = len(await _lots_on_tool(session, tool.id)) > 1
    lot.equipment_id = None
    lot.tracked_in_at = None
    lot.state = LotState.WAITING
    if hold_code is not None:
        _place_hold(session, lot, hold_code, reason, actor=actor, at=now)
    if not tool_stays_busy and tool.e10_state == E10State.PRD:
        _tool_state(session, tool, E10State.SBY, actor=actor, at=now)
    await session.flush()
    await change.record(
        event_type,
        actor=actor,
        at=now,
        reason=reason,
        equipment_id=tool.id,
        details=details,
    )
    return lot


# --- holds ---------------------------------------------------------------------------------


async def hold(
    session: AsyncSession, code: str, data: s.HoldRequest, *, actor: str, clock: Clock
) -> Lot:
    """Put a hold on a lot (a running lot stops at its track-out)."""
    now = clock.now()
    lot, change = await _begin(session, code, data.version)
    rules.require_active(_view(lot, change.holds))
    if lot.state == LotState.IN_TRANSIT:
        raise RuleViolation("lot.in_transit", f"lot {code} is travelling to another fab")
    _place_hold(
        session, lot, await get_hold_code(session, data.hold_code), data.reason, actor=actor, at=now
    )
    await session.flush()
    await change.record(
        "HOLD", actor=actor, at=now, reason=data.reason, details={"hold_code": data.hold_code}
    )
    return lot


async def release(
    session: AsyncSession,
    code: str,
    data: s.ReleaseRequest,
    *,
    principal: Principal,
    clock: Clock,
) -> Lot:
    """Release holds; each hold code names the role that may release it."""
    now = clock.now()
    lot, change = await _begin(session, code, data.version)
    holds = await active_holds(session, [lot.id])
    if data.hold_ids is not None:
        chosen = [h for h in holds if h.id in set(data.hold_ids)]
        if len(chosen) != len(set(data.hold_ids)):
            raise NotFound("some of these holds are not active on the lot", code="hold.not_found")
    elif data.hold_code is not None:
        chosen = [h for h in holds if h.hold_code.code == data.hold_code]
    else:
        chosen = holds
    if not chosen:
        raise RuleViolation("hold.none_active", f"lot {code} has no such active hold")
    roles = {r.value for r in principal.roles}
    refused = sorted(
        {h.hold_code.code for h in chosen if not rules.can_release(h.hold_code.release_role, roles)}
    )
    if refused:
        raise Forbidden(
            f"releasing holds {refused} needs the role their code names", code="hold.release_role"
        )
    reason = data.signature.reason
    for h in chosen:
        h.released_at, h.released_by, h.release_reason = now, principal.username, reason
    await session.flush()
    await change.record(
        "RELEASE",
        actor=principal.username,
        at=now,
        reason=reason,
        details={"released": sorted(h.id for h in chosen)},
    )
    return lot


async def mass_hold(
    session: AsyncSession, data: s.MassHold, *, actor: str, clock: Clock
) -> list[Lot]:
    """Hold every active lot matching the filter (at a step, on a tool, of a product, in a fab)."""
    if not any((data.product, data.tool, data.route, data.fab)):
        raise InvalidInput("a mass hold needs at least one filter", code="hold.no_filter")
    if data.step_sequence is not None and data.route is None:
        raise InvalidInput("a step is named by route and sequence", code="hold.step_needs_route")
    code = await get_hold_code(session, data.hold_code)
    flt = LotFilter(
        fab=data.fab,
        product=data.product,
        route=data.route,
        step_sequence=data.step_sequence,
        tool=data.tool,
    )
    ids = list(
        await session.scalars(
            lot_query(flt)
            .where(Lot.state.in_([LotState.WAITING, LotState.RUNNING, LotState.ON_HOLD]))
            .order_by(Lot.id)
            .with_only_columns(Lot.id)
        )
    )
    held = []
    now = clock.now()
    for lot_id in ids:
        lot = await session.get(Lot, lot_id, with_for_update={"key_share": True})
        assert lot is not None
        change = _Change(session, lot, await _hold_count(session, lot.id))
        _place_hold(session, lot, code, data.reason, actor=actor, at=now)
        await session.flush()
        await change.record(
            "HOLD",
            actor=actor,
            at=now,
            reason=data.reason,
            details={"hold_code": code.code, "mass": True},
        )
        held.append(lot)
    return held


async def add_future_action(
    session: AsyncSession, code: str, data: s.FutureActionCreate, *, actor: str, clock: Clock
) -> FutureAction:
    """Arm a hold at a later step of a lot."""
    lot = await _lock_lot(session, code, None)
    rules.require_active(_view(lot, 0))
    steps = await route_steps(session, lot.route_version_id)
    target = _by_sequence(steps, data.step_sequence)
    current = _step(steps, lot.current_step_id)
    later = target.sequence > current.sequence or (
        target.sequence == current.sequence and data.kind == FutureActionKind.HOLD_AFTER_TRACK_OUT
    )
    if not later:
        raise RuleViolation(
            "lot.step_passed",
            "a future action must be at a step the lot has not passed",
            status=422,
        )
    action = FutureAction(
        lot_id=lot.id,
        fab_id=lot.fab_id,
        step_id=target.id,
        kind=data.kind,
        hold_code=await get_hold_code(session, data.hold_code),
        reason=data.reason,
        created_by=actor,
        created_at=clock.now(),
    )
    session.add(action)
    await session.flush()
    return action


async def future_actions(session: AsyncSession, code: str) -> list[FutureAction]:
    lot = await get_lot(session, code)
    return list(
        await session.scalars(
            select(FutureAction)
            .options(selectinload(FutureAction.hold_code), selectinload(FutureAction.step))
            .where(FutureAction.lot_id == lot.id, FutureAction.done_at.is_(None))
            .order_by(FutureAction.id)
        )
    )


async def cancel_future_action(
    session: AsyncSession, code: str, action_id: int, *, clock: Clock
) -> None:
    lot = await _lock_lot(session, code, None)
    action = await session.get(FutureAction, action_id)
    if action is None or action.lot_id != lot.id or action.done_at is not None:
        raise NotFound("no such open future action on this lot", code="lot.future_action_not_found")
    action.done_at, action.cancelled = clock.now(), True
    await session.flush()


# --- split / merge -------------------------------------------------------------------------


def _pick_wafers(lot: Lot, scribe_ids: Sequence[str]) -> list[Wafer]:
    by_id = {w.scribe_id: w for w in lot.wafers if w.state == WaferState.ACTIVE}
    missing = sorted(set(scribe_ids) - set(by_id))
    if missing or len(set(scribe_ids)) != len(scribe_ids):
        raise RuleViolation(
            "lot.wafer_not_in_lot",
            f"wafers {missing or 'listed twice'} are not active wafers of lot {lot.code}",
            status=422,
        )
    return [by_id[w] for w in scribe_ids]


async def split(
    session: AsyncSession, code: str, data: s.SplitRequest, *, actor: str, clock: Clock
) -> tuple[Lot, Lot]:
    """Move chosen wafers into a new child lot (same step, state, holds)."""
    now = clock.now()
    parent, change = await _begin(session, code, data.version, wafers=True)
    wafers = _pick_wafers(parent, data.wafers)
    rules.check_split(_view(parent, change.holds), len(wafers), parent.wafer_count)
    children = await session.scalar(
        select(func.count()).select_from(Lot).where(Lot.parent_lot_id == parent.id)
    )
    child = Lot(
        code=rules.child_code(parent.code, int(children or 0) + 1),
        fab_id=parent.fab_id,
        product_id=parent.product_id,
        route_version_id=parent.route_version_id,
        current_step_id=parent.current_step_id,
        state=LotState.WAITING,
        priority_class=parent.priority_class,
        due_at=parent.due_at,
        wafer_count=len(wafers),
        parent_lot_id=parent.id,
        started_at=parent.started_at,
        step_entered_at=parent.step_entered_at,
    )
    if await session.scalar(select(Lot.id).where(Lot.code == child.code)) is not None:
        raise Conflict(f"lot {child.code} already exists", code="lot.duplicate")
    session.add(child)
    await session.flush()
    for wafer in wafers:
        wafer.lot_id = child.id
    parent.wafer_count -= len(wafers)
    # The child inherits the parent's holds, Q-time windows and future actions.
    for h in await active_holds(session, [parent.id]):
        _place_hold(session, child, h.hold_code, h.reason, actor=h.placed_by, at=h.placed_at)
    for window in await session.scalars(
        select(QTimeWindow).where(
            QTimeWindow.lot_id == parent.id, QTimeWindow.status == QTimeStatus.OPEN
        )
    ):
        session.add(
            QTimeWindow(
                lot_id=child.id,
                fab_id=child.fab_id,
                from_step_id=window.from_step_id,
                to_step_id=window.to_step_id,
                opened_at=window.opened_at,
                deadline_at=window.deadline_at,
                status=QTimeStatus.OPEN,
            )
        )
    session.add(
        Genealogy(
            parent_lot_id=parent.id,
            child_lot_id=child.id,
            relation=GenealogyRelation.SPLIT,
            wafer_count=len(wafers),
            occurred_at=now,
        )
    )
    await session.flush()
    moved = {"wafers": list(data.wafers)}
    await change.record("SPLIT", actor=actor, at=now, details={**moved, "child": child.code})
    child_change = _Change(session, child, 0)
    child_change.before = None  # type: ignore[assignment]
    await child_change.record(
        "SPLIT_FROM", actor=actor, at=now, details={**moved, "parent": parent.code}
    )
    return parent, child


async def merge(
    session: AsyncSession, code: str, data: s.MergeRequest, *, actor: str, clock: Clock
) -> Lot:
    """Move every wafer of ``data.source`` into lot ``code``; the source lot ends."""
    now = clock.now()
    first_code, second_code = sorted([code, data.source])
    # Lock both lots in a fixed order so two opposite merges cannot deadlock.
    locked = {
        c: await _lock_lot(session, c, data.version if c == code else None, wafers=True)
        for c in (first_code, second_code)
    }
    target, source = locked[code], locked[data.source]
    target_holds = await _hold_count(session, target.id)
    source_holds = await _hold_count(session, source.id)
    rules.check_merge(
        rules.MergeView(_view(target, target_holds), target.product_id, target.route_version_id),
        rules.MergeView(_view(source, source_holds), source.product_id, source.route_version_id),
    )
    target_change = _Change(session, target, target_holds)
    source_change = _Change(session, source, source_holds)
    moving = [w for w in source.wafers if w.state == WaferState.ACTIVE]
    taken = {w.slot for w in target.wafers}
    clashing = [w for w in moving if w.slot in taken]
    for wafer, slot in zip(
        clashing, rules.free_slots(taken | {w.slot for w in moving}, len(clashing)), strict=True
    ):
        wafer.slot = slot  # a sorter re-slots them into the target carrier
    for wafer in moving:
        wafer.lot_id = target.id
    target.wafer_count += source.wafer_count
    source.wafer_count = 0
    # The merged lot carries the source's holds too.
    await session.execute(
        update(LotHold)
        .where(LotHold.lot_id == source.id, LotHold.released_at.is_(None))
        .values(lot_id=target.id)
    )
    _finish(source, LotState.TERMINATED, now)
    _release_carrier(source)
    session.add(
        Genealogy(
            parent_lot_id=source.id,
            child_lot_id=target.id,
            relation=GenealogyRelation.MERGE,
            wafer_count=len(moving),
            occurred_at=now,
        )
    )
    await session.flush()
    await source_change.record("MERGED_INTO", actor=actor, at=now, details={"target": target.code})
    await target_change.record(
        "MERGE", actor=actor, at=now, details={"source": source.code, "wafers": len(moving)}
    )
    return target


# --- scrap / bonus -------------------------------------------------------------------------


async def scrap(
    session: AsyncSession, code: str, data: s.ScrapRequest, *, actor: str, clock: Clock
) -> Lot:
    """Scrap wafers with a reason code; a lot left without wafers is Scrapped."""
    now = clock.now()
    rules.check_reason(data.reason_code, rules.SCRAP_CODES, "scrap")
    lot, change = await _begin(session, code, data.version, wafers=True)
    rules.require_active(_view(lot, change.holds))
    if lot.state == LotState.IN_TRANSIT:
        # Scrapping its last wafer would end a lot that is still travelling; wafers broken on
        # the way are scrapped once the lot has been received.
        raise RuleViolation("lot.in_transit", f"lot {code} is travelling to another fab")
    wafers = _pick_wafers(lot, data.wafers)
    # A running lot that loses its last wafer leaves its tool, which idles unless it runs others.
    tool: Equipment | None = None
    tool_stays_busy = False
    if lot.equipment_id is not None and len(wafers) == lot.wafer_count:
        tool = await session.get(Equipment, lot.equipment_id, with_for_update={"key_share": True})
        assert tool is not None  # the FK guarantees it
        tool_stays_busy = len(await _lots_on_tool(session, tool.id)) > 1
    for wafer in wafers:
        wafer.state = WaferState.SCRAPPED
    lot.wafer_count -= len(wafers)
    if lot.wafer_count == 0:
        _finish(lot, LotState.SCRAPPED, now)
        _release_carrier(lot)
        if tool is not None and not tool_stays_busy and tool.e10_state == E10State.PRD:
            _tool_state(session, tool, E10State.SBY, actor=actor, at=now)
    await session.flush()
    await change.record(
        "SCRAP",
        actor=actor,
        at=now,
        reason=data.comment,
        details={"reason_code": data.reason_code, "wafers": list(data.wafers)},
    )
    return lot


async def bonus(
    session: AsyncSession, code: str, data: s.BonusRequest, *, actor: str, clock: Clock
) -> Lot:
    """Add wafers to a lot (found, recounted, monitor) with a reason code."""
    now = clock.now()
    rules.check_reason(data.reason_code, rules.BONUS_CODES, "bonus")
    lot, change = await _begin(session, code, data.version, wafers=True)
    rules.require_active(_view(lot, change.holds))
    if lot.wafer_count + data.count > 25:
        raise RuleViolation("lot.too_many_wafers", "a lot holds at most 25 wafers")
    slots = rules.free_slots({w.slot for w in lot.wafers}, data.count)
    taken = {w.scribe_id for w in lot.wafers}
    added = []
    for slot in slots:
        for scribe in rules.bonus_scribe_ids(lot.code, slot):
            if scribe not in taken and (
                await session.scalar(select(Wafer.id).where(Wafer.scribe_id == scribe)) is None
            ):
                break
        taken.add(scribe)
        added.append(scribe)
    for slot, scribe in zip(slots, added, strict=True):
        lot.wafers.append(Wafer(scribe_id=scribe, fab_id=lot.fab_id, slot=slot))
    lot.wafer_count += data.count
    await session.flush()
    await change.record(
        "BONUS",
        actor=actor,
        at=now,
        reason=data.comment,
        details={"reason_code": data.reason_code, "wafers": added},
    )
    return lot


# --- jump, priority, terminate -------------------------------------------------------------


async def jump(
    session: AsyncSession, code: str, data: s.JumpRequest, *, actor: str, clock: Clock
) -> Lot:
    """Move a lot to another step of its route (skip ahead or go back)."""
    now = clock.now()
    lot, change = await _begin(session, code, data.version)
    view = _view(lot, change.holds)
    rules.require_active(view)
    if lot.state in (LotState.RUNNING, LotState.IN_TRANSIT):
        raise RuleViolation("lot.not_movable", f"lot {code} is {lot.state.value}")
    steps = await route_steps(session, lot.route_version_id)
    target = _by_sequence(steps, data.to_sequence)
    if target.id == lot.current_step_id:
        raise RuleViolation(
            "lot.already_there", f"lot {code} is at step {data.to_sequence}", status=422
        )
    # Windows opened for the path the lot leaves no longer apply.
    await _void_windows(session, lot, None, now)
    lot.current_step_id = target.id
    lot.step_entered_at = now
    await _arrive(session, lot, target, actor=actor, at=now)
    await session.flush()
    await change.record(
        "JUMP", actor=actor, at=now, reason=data.signature.reason, step_id=target.id
    )
    return lot


async def change_priority(
    session: AsyncSession, code: str, data: s.PriorityChange, *, actor: str, clock: Clock
) -> Lot:
    """Change a lot's priority class (and due date)."""
    now = clock.now()
    lot, change = await _begin(session, code, data.version)
    rules.require_active(_view(lot, change.holds))
    lot.priority_class = data.priority_class
    if data.due_at is not None:
        lot.due_at = data.due_at
    await change.record("PRIORITY", actor=actor, at=now, reason=data.reason)
    return lot


async def terminate(
    session: AsyncSession, code: str, data: s.TerminateRequest, *, actor: str, clock: Clock
) -> Lot:
    """End a lot before its route is done."""
    now = clock.now()
    lot, change = await _begin(session, code, data.version)
    rules.require_active(_view(lot, change.holds))
    if lot.state == LotState.RUNNING:
        raise RuleViolation("lot.running", f"lot {code} is running; track it out first")
    if lot.state == LotState.IN_TRANSIT:
        raise RuleViolation("lot.in_transit", f"lot {code} is travelling")
    _finish(lot, LotState.TERMINATED, now)
    _release_carrier(lot)
    await session.flush()
    await change.record("TERMINATE", actor=actor, at=now, reason=data.signature.reason)
    return lot


# --- inter-fab transfer --------------------------------------------------------------------


async def ship(
    session: AsyncSession, code: str, data: s.ShipRequest, *, actor: str, clock: Clock
) -> Lot:
    """Send a waiting lot to another fab; it is InTransit until received there."""
    now = clock.now()
    lot, change = await _begin(session, code, data.version)
    destination = await _fab(session, data.to_fab)
    open_actions = await session.scalar(
        select(func.count())
        .select_from(FutureAction)
        .where(FutureAction.lot_id == lot.id, FutureAction.done_at.is_(None))
    )
    deadlines = list(
        await session.scalars(
            select(QTimeWindow.deadline_at).where(
                QTimeWindow.lot_id == lot.id, QTimeWindow.status == QTimeStatus.OPEN
            )
        )
    )
    rules.check_ship(
        _view(lot, change.holds),
        destination.id,
        open_future_actions=int(open_actions or 0),
        open_qtime_deadlines=deadlines,
        now=now,
        transit_s=int(TRANSIT_TIME.total_seconds()),
    )
    session.add(
        LotTransfer(
            lot_id=lot.id,
            from_fab_id=lot.fab_id,
            to_fab_id=destination.id,
            fab_id=lot.fab_id,
            shipped_at=now,
            shipped_by=actor,
        )
    )
    lot.state = LotState.IN_TRANSIT
    lot.destination_fab_id = destination.id
    await session.flush()
    await change.record("SHIP", actor=actor, at=now, details={"to_fab": destination.code})
    return lot


async def receive(
    session: AsyncSession, code: str, data: s.ReceiveRequest, *, actor: str, clock: Clock
) -> Lot:
    """Receive a travelling lot in its destination fab."""
    now = clock.now()
    lot, change = await _begin(session, code, data.version, wafers=True)
    if lot.state != LotState.IN_TRANSIT or lot.destination_fab_id is None:
        raise RuleViolation("lot.not_in_transit", f"lot {code} is not travelling")
    transfer = (
        await session.scalars(
            select(LotTransfer).where(
                LotTransfer.lot_id == lot.id, LotTransfer.received_at.is_(None)
            )
        )
    ).one()
    transfer.received_at, transfer.received_by = now, actor
    lot.fab_id = lot.destination_fab_id
    lot.destination_fab_id = None
    lot.state = LotState.WAITING
    if lot.carrier_id is not None:
        await session.execute(
            update(Carrier).where(Carrier.id == lot.carrier_id).values(fab_id=lot.fab_id)
        )
    await session.flush()
    # The database carried the wafers along (ON UPDATE CASCADE); reload what it changed.
    for wafer in lot.wafers:
        session.expire(wafer, ["fab_id"])
    await change.record("RECEIVE", actor=actor, at=now)
    return lot


async def lots_by_codes(session: AsyncSession, codes: Sequence[str]) -> list[Lot]:
    """Lots as the current transaction left them (reloading objects already in the session)."""
    return list(
        await session.scalars(
            select(Lot)
            .options(*LOT_OPTIONS)
            .where(Lot.code.in_(codes))
            .order_by(Lot.code)
            .execution_options(populate_existing=True)
        )
    )


async def reload_lot(session: AsyncSession, code: str) -> Lot:
    (lot,) = await lots_by_codes(session, [code])
    return lot


# --- what would run -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeQuestion:
    """A lot at its step, asked what it would run on a tool (GET /recipes/resolve)."""

    lot: Lot
    route: str
    route_version: int
    step: rules.StepView
    tool: Equipment
    product: str
    tool_group: str
    outcome: recipes_service.RunnableRecipe | None
    refusal: RuleViolation | None


async def explain_recipe(
    session: AsyncSession, code: str, tool_code: str, chamber: str | None, *, now: datetime
) -> RecipeQuestion:
    """Resolve the recipe a lot would run on a tool now, without tracking it in."""
    lot = await get_lot(session, code)
    if lot.current_step_id is None:
        raise RuleViolation("lot.no_step", f"lot {code} is not at a step ({lot.state.value})")
    step = _step(await route_steps(session, lot.route_version_id), lot.current_step_id)
    tool = await get_by_key(
        session,
        Equipment,
        Equipment.code,
        tool_code,
        code="tool.not_found",
        what="tool",
        options=(selectinload(Equipment.chambers), selectinload(Equipment.tool_group)),
    )
    if chamber is not None and all(c.name != chamber for c in tool.chambers):
        raise NotFound(
            f"tool {tool.code} has no chamber {chamber!r}", code="tool.chamber_not_found"
        )
    question = RecipeQuestion(
        lot=lot,
        route=lot.route_version.route.code,
        route_version=lot.route_version.version,
        step=step,
        tool=tool,
        product=lot.product.code,
        tool_group=tool.tool_group.code,
        outcome=None,
        refusal=None,
    )
    if tool.tool_group_id != step.tool_group_id:
        return replace(
            question,
            refusal=RuleViolation(
                "tool.wrong_group", f"tool {tool.code} is not in the tool group of the lot's step"
            ),
        )
    if step.recipe_name is None:
        return replace(
            question,
            refusal=RuleViolation("recipe.not_approved", f"step {step.sequence} names no recipe"),
        )
    outcome = await recipes_service.resolve_on_tool(
        session,
        logical_recipe=step.recipe_name,
        product_id=lot.product_id,
        operation=step.operation,
        tool=tool,
        chamber=chamber,
        now=now,
    )
    return replace(question, outcome=outcome, refusal=outcome.refusal)
