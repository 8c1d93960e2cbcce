"""Lot queries: WIP with its filters, one lot, its history and genealogy, holds across lots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, joinedload, selectinload

from mes.db import memo
from mes.durables.models import Carrier
from mes.equipment.models import Equipment
from mes.fabs.models import Area, Fab, ToolGroup
from mes.kit.api import PageParams, fetch_page
from mes.kit.lookup import get_by_key
from mes.lots import schemas as s
from mes.lots.models import FutureAction, Genealogy, HoldCode, Lot, LotEvent, LotHold
from mes.lots.states import LotState, LotType, PriorityClass
from mes.products.models import Product
from mes.routes.models import Route, RouteVersion, RouteVersionStatus, Step

# Everything a lot answer shows, in one query: these are all many-to-one joins.
LOT_OPTIONS = (
    joinedload(Lot.fab),
    joinedload(Lot.product),
    joinedload(Lot.route_version).joinedload(RouteVersion.route),
    joinedload(Lot.current_step).joinedload(Step.tool_group),
    joinedload(Lot.carrier),
    joinedload(Lot.parent),
)


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
    lot_type: LotType | None = None


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
    if flt.lot_type is not None:
        stmt = stmt.where(Lot.lot_type == flt.lot_type)
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


async def _the_lot(session: AsyncSession, lot: str | Lot) -> Lot:
    """A lot by code, or the lot the caller has already read (a page reads it once)."""
    return lot if isinstance(lot, Lot) else await get_lot(session, lot)


async def lot_history(
    session: AsyncSession, code: str | Lot, page: PageParams
) -> tuple[list[tuple[LotEvent, str, int | None, str | None]], int]:
    """A lot's events, oldest first: (event, fab code, step sequence, tool code)."""
    lot = await _the_lot(session, code)
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


async def genealogy(session: AsyncSession, code: str | Lot) -> s.GenealogyRead:
    """Ancestors and descendants of a lot through splits and merges."""
    lot = await _the_lot(session, code)
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


async def future_actions(session: AsyncSession, code: str | Lot) -> list[FutureAction]:
    lot = await _the_lot(session, code)
    return list(
        await session.scalars(
            select(FutureAction)
            .options(selectinload(FutureAction.hold_code), selectinload(FutureAction.step))
            .where(FutureAction.lot_id == lot.id, FutureAction.done_at.is_(None))
            .order_by(FutureAction.id)
        )
    )


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


_PARENT = aliased(Lot)
_ANSWER = (
    select(
        Lot.code,
        Fab.code,
        Product.code,
        Route.code,
        RouteVersion.version,
        Step.sequence,
        Step.operation,
        ToolGroup.code,
        Lot.state,
        Lot.priority_class,
        Lot.due_at,
        Lot.wafer_count,
        Carrier.code,
        _PARENT.code,
        Lot.started_at,
        Lot.ended_at,
        Lot.version,
        Lot.lot_type,
    )
    .select_from(Lot)
    .join(Fab, Fab.id == Lot.fab_id)
    .join(Product, Product.id == Lot.product_id)
    .join(RouteVersion, RouteVersion.id == Lot.route_version_id)
    .join(Route, Route.id == RouteVersion.route_id)
    .outerjoin(Step, Step.id == Lot.current_step_id)
    .outerjoin(ToolGroup, ToolGroup.id == Step.tool_group_id)
    .outerjoin(Carrier, Carrier.id == Lot.carrier_id)
    .outerjoin(_PARENT, _PARENT.id == Lot.parent_lot_id)
    .where(Lot.code == bindparam("code"))
)


async def lot_answer(session: AsyncSession, code: str) -> s.LotRead:
    """The lot as the transaction left it, as the API shows it: one row of columns (the answer
    of every lot transaction), instead of the lot and six related objects loaded into the
    session again (populate_existing) only to read a code of each."""
    row = (await session.execute(_ANSWER, {"code": code})).one()
    (code, fab, product, route, version, sequence, operation, group, *rest) = row
    state, priority, due_at, wafers, carrier, parent, started_at, ended_at, lot_version, kind = rest
    return s.LotRead(
        code=code,
        fab=fab,
        product=product,
        route=route,
        route_version=version,
        step=s.CurrentStep(sequence=sequence, operation=operation, tool_group=group)
        if sequence is not None
        else None,
        state=state,
        lot_type=kind,
        priority_class=priority,
        due_at=due_at,
        wafer_count=wafers,
        carrier=carrier,
        parent=parent,
        started_at=started_at,
        ended_at=ended_at,
        version=lot_version,
    )


# The codes the answer names a lot's place by. Codes are set when a fab, product, route or tool
# group is made and never change, and a released route version's steps are fixed (only drafts are
# edited or deleted), so for a lot on a released version they are read once per database.
_NAMES = (
    select(Fab.code, Product.code, Route.code, RouteVersion.version, RouteVersion.status)
    .select_from(RouteVersion)
    .join(Route, Route.id == RouteVersion.route_id)
    .join(Fab, Fab.id == bindparam("fab_id"))
    .join(Product, Product.id == bindparam("product_id"))
    .where(RouteVersion.id == bindparam("route_version_id"))
)
_STEP_NAMES = (
    select(Step.sequence, Step.operation, ToolGroup.code)
    .join(ToolGroup, ToolGroup.id == Step.tool_group_id)
    .where(Step.id == bindparam("step_id"))
)


async def moved_lot_answer(session: AsyncSession, lot: Lot) -> s.LotRead:
    """``lot_answer`` for a lot this transaction holds locked and has just changed, built from
    the row in the session (current: read under the lot's lock, changed and flushed here) and
    the remembered codes, instead of a seven-table join per move. A lot in a carrier or split
    from a parent is read as before (those codes are not remembered)."""
    if lot.carrier_id is not None or lot.parent_lot_id is not None:
        return await lot_answer(session, lot.code)
    await session.flush()  # the version the answer gives is the one the flush wrote
    key = ("lot_answer_names", lot.fab_id, lot.product_id, lot.route_version_id)
    names = memo.recall(session, key)
    if names is None:
        params = {
            "fab_id": lot.fab_id,
            "product_id": lot.product_id,
            "route_version_id": lot.route_version_id,
        }
        fab, product, route, version, status = (await session.execute(_NAMES, params)).one()
        names = (fab, product, route, version)
        released = status != RouteVersionStatus.DRAFT
        if released:
            memo.remember(session, key, names)
    else:
        released = True
    step: s.CurrentStep | None = None
    if lot.current_step_id is not None:
        step_key = ("lot_answer_step", lot.route_version_id, lot.current_step_id)
        step = memo.recall(session, step_key)
        if step is None:
            sequence, operation, group = (
                await session.execute(_STEP_NAMES, {"step_id": lot.current_step_id})
            ).one()
            step = s.CurrentStep(sequence=sequence, operation=operation, tool_group=group)
            if released:  # a released version's steps are fixed
                memo.remember(session, step_key, step)
    fab, product, route, version = names
    return s.LotRead(
        code=lot.code,
        fab=fab,
        product=product,
        route=route,
        route_version=version,
        step=step,
        state=lot.state,
        lot_type=lot.lot_type,
        priority_class=lot.priority_class,
        due_at=lot.due_at,
        wafer_count=lot.wafer_count,
        carrier=None,
        parent=None,
        started_at=lot.started_at,
        ended_at=lot.ended_at,
        version=lot.version,
    )


async def reload_lot(session: AsyncSession, code: str) -> Lot:
    (lot,) = await lots_by_codes(session, [code])
    return lot
