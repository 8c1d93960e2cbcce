"""The dispatcher's lease per fab: the one process that dispatches a fab is the holder of its
row in ``dispatch_leader`` (``mes.kit.lease``). The scheduler takes or renews it every cycle,
re-checks it (share-locked) in every decision transaction and releases it on the way out."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch.models import DispatchLeader
from mes.kit.lease import LeaseTable

FAB_LEASES: LeaseTable[int] = LeaseTable(DispatchLeader, DispatchLeader.fab_id)


async def take_lease(
    session: AsyncSession, fab_id: int, owner: str, now: datetime, ttl: timedelta
) -> bool:
    """Renew the fab's lease if ours, take it if expired, create it if there is none (a racing
    INSERT loses on the primary key: the caller's transaction fails and it stays standby).
    ``acquired_at`` is the row's creation time: neither a renewal nor a take-over restamps it."""
    return await FAB_LEASES.acquire(session, fab_id, owner, now, ttl)


async def holds_lease(session: AsyncSession, fab_id: int, owner: str, now: datetime) -> bool:
    """Whether ``owner`` leads the fab now; on PostgreSQL the lease row is share-locked until
    the caller's transaction ends, so a take-over waits for the decision being written."""
    return await FAB_LEASES.holds(session, fab_id, owner, now, lock=True)


async def lease_expiry(session: AsyncSession, fab_id: int) -> datetime | None:
    """When the fab's current lease runs out (None: nobody holds one)."""
    return await session.scalar(
        select(DispatchLeader.expires_at).where(DispatchLeader.fab_id == fab_id)
    )


async def release_lease(session: AsyncSession, fab_id: int, owner: str, now: datetime) -> None:
    await FAB_LEASES.release(session, [fab_id], owner, now)


async def leaders(session: AsyncSession) -> list[DispatchLeader]:
    return list(await session.scalars(select(DispatchLeader).order_by(DispatchLeader.fab_id)))
