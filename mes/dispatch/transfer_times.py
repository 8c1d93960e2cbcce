"""How long a lot travels from one fab to another (where-next adds it to the wait)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.errors import InvalidInput
from mes.fabs import service as fabs_service
from mes.fabs.models import FabTransferTime


async def set_transfer_time(
    session: AsyncSession, from_fab: str, to_fab: str, time_s: int
) -> FabTransferTime:
    a = await fabs_service.get_fab(session, from_fab)
    b = await fabs_service.get_fab(session, to_fab)
    if a.id == b.id:
        raise InvalidInput("a transfer goes between two fabs", code="dispatch.same_fab")
    row = await session.scalar(
        select(FabTransferTime).where(
            FabTransferTime.from_fab_id == a.id, FabTransferTime.to_fab_id == b.id
        )
    )
    if row is None:
        row = FabTransferTime(from_fab_id=a.id, to_fab_id=b.id, time_s=time_s)
        session.add(row)
    else:
        row.time_s = time_s
    await session.flush()
    return row
