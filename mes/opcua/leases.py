"""Tool leases: each tool is served by one adapter process at a time (``mes.kit.lease`` over
``adapter_lease``). Taking a lease also publishes the connection as connecting; renewing it
records the last event the adapter applied; releasing it publishes the connection as
disconnected."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mes.kit.lease import LeaseTable
from mes.opcua.models import AdapterLease, ConnectionState

TOOL_LEASES: LeaseTable[int] = LeaseTable(AdapterLease, AdapterLease.equipment_id)


async def acquire(
    session: AsyncSession, equipment_id: int, owner: str, now: datetime, ttl: timedelta
) -> bool:
    """Take the tool's lease if it is free, expired or already ours."""
    return await TOOL_LEASES.acquire(
        session,
        equipment_id,
        owner,
        now,
        ttl,
        values={
            "acquired_at": now,
            "connection": ConnectionState.CONNECTING,
            "connection_since": now,
            "last_error": None,
        },
    )


async def renew(
    session: AsyncSession,
    owner: str,
    equipment_ids: Iterable[int],
    now: datetime,
    ttl: timedelta,
    last_events: dict[int, datetime],
) -> set[int]:
    """Extend our unexpired leases; returns the ids we still hold."""
    held = await TOOL_LEASES.renew(session, equipment_ids, owner, now, ttl)
    stamps = [
        {"equipment_id": equipment_id, "last_event_at": at}
        for equipment_id, at in sorted(last_events.items())
        if equipment_id in held
    ]
    if stamps:  # one executemany: the refresh must hold SQLite's write lock only briefly
        await session.execute(update(AdapterLease), stamps)
    return held


async def release(
    session: AsyncSession, owner: str, equipment_ids: Iterable[int], now: datetime
) -> None:
    await TOOL_LEASES.release(
        session,
        equipment_ids,
        owner,
        now,
        values={"connection": ConnectionState.DISCONNECTED, "connection_since": now},
    )


async def owns(session: AsyncSession, equipment_id: int, owner: str, now: datetime) -> bool:
    """Whether ``owner`` holds the tool's lease now (checked inside every adapter write)."""
    return await TOOL_LEASES.holds(session, equipment_id, owner, now)


async def next_expiry(
    session: AsyncSession, owner: str, equipment_ids: Iterable[int]
) -> datetime | None:
    """When the soonest of these tools' leases held by another adapter runs out: a standby
    tries to take it over then, not at its next periodic refresh."""
    return await session.scalar(
        select(func.min(AdapterLease.expires_at)).where(
            AdapterLease.equipment_id.in_(list(equipment_ids)),
            AdapterLease.owner.is_not(None),
            AdapterLease.owner != owner,
        )
    )
