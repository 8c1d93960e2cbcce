"""Carriers (FOUPs)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.durables.models import Carrier, CarrierState
from mes.durables.schemas import CarrierCreate
from mes.errors import Conflict
from mes.fabs import service as fabs_service
from mes.fabs.models import Fab
from mes.kit.lookup import get_by_key


@dataclass(frozen=True)
class CarrierFilter:
    fab: str | None = None
    state: CarrierState | None = None


def carrier_query(flt: CarrierFilter) -> Select[Carrier]:
    stmt = select(Carrier).options(selectinload(Carrier.fab)).order_by(Carrier.code)
    if flt.fab is not None:
        stmt = stmt.join(Fab, Fab.id == Carrier.fab_id).where(Fab.code == flt.fab)
    if flt.state is not None:
        stmt = stmt.where(Carrier.state == flt.state)
    return stmt


async def get_carrier(session: AsyncSession, code: str) -> Carrier:
    """The carrier ``code``, or carrier.not_found."""
    return await get_by_key(
        session,
        Carrier,
        Carrier.code,
        code,
        code="carrier.not_found",
        what="carrier",
        options=(selectinload(Carrier.fab),),
    )


async def create_carrier(session: AsyncSession, data: CarrierCreate) -> Carrier:
    """Register a carrier in a fab."""
    if await session.scalar(select(Carrier.id).where(Carrier.code == data.code)) is not None:
        raise Conflict(f"carrier {data.code!r} already exists", code="carrier.duplicate")
    fab = await fabs_service.get_fab(session, data.fab)
    carrier = Carrier(code=data.code, fab=fab, capacity=data.capacity)
    session.add(carrier)
    await session.flush()
    return carrier
