"""Lot queries. The lot transactions (start, track-in/out, holds …) arrive with issue 4."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, selectinload

from mes.equipment.models import Equipment
from mes.fabs.models import Fab
from mes.kit.api import PageParams, fetch_page
from mes.kit.lookup import get_by_key
from mes.lots.models import Lot, LotEvent
from mes.lots.states import LotState, PriorityClass
from mes.routes.models import Product, RouteVersion, Step


@dataclass(frozen=True)
class LotFilter:
    fab: str | None = None
    product: str | None = None
    state: LotState | None = None
    priority_class: PriorityClass | None = None


LOT_OPTIONS = (
    selectinload(Lot.fab),
    selectinload(Lot.product),
    selectinload(Lot.route_version).selectinload(RouteVersion.route),
    selectinload(Lot.current_step).selectinload(Step.tool_group),
    selectinload(Lot.carrier),
    selectinload(Lot.parent),
)


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
    return [(e, f, s, t) for e, f, s, t in rows], total
