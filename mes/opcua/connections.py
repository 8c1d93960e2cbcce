"""How each tool's adapter connection is doing, as its owning adapter publishes it on the
lease row (so every API replica can answer), and the signal stamps the silence watchdog reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mes.equipment import service as equipment_service
from mes.equipment.models import Equipment
from mes.opcua.models import AdapterLease, ConnectionState


async def stamp_signals(session: AsyncSession, equipment_ids: Iterable[int], now: datetime) -> None:
    """A tool whose adapter holds a healthy session is signalling (``last_signal_at``), even
    when nothing changes on it: the silence watchdog then only fires for tools nobody hears.

    Tools locked by a running transaction are skipped (SKIP LOCKED): the stamp can wait for the
    next lease refresh, a track-in should not wait for the stamp.
    """
    ids = sorted(equipment_ids)
    if not ids:
        return
    free = (
        select(Equipment.id)
        .where(Equipment.id.in_(ids))
        .order_by(Equipment.id)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    await session.execute(
        update(Equipment)
        .where(Equipment.id.in_(free))
        .values(last_signal_at=now)
        .execution_options(synchronize_session=False)
    )


async def publish_connection(
    session: AsyncSession,
    equipment_id: int,
    owner: str,
    state: ConnectionState,
    now: datetime,
    error: str | None = None,
) -> None:
    await session.execute(
        update(AdapterLease)
        .where(AdapterLease.equipment_id == equipment_id, AdapterLease.owner == owner)
        .values(
            connection=state,
            connection_since=now,
            last_error=error[:2000] if error else None,
        )
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class ConnectionView:
    tool: str
    state: ConnectionState
    owner: str | None
    since: datetime | None
    lease_expires_at: datetime | None
    last_event_at: datetime | None
    last_error: str | None


async def connection_of(session: AsyncSession, code: str, now: datetime) -> ConnectionView:
    tool = await equipment_service.get_equipment(session, code)
    lease = await session.get(AdapterLease, tool.id)
    if lease is None:
        return ConnectionView(code, ConnectionState.DISCONNECTED, None, None, None, None, None)
    expired = lease.expires_at < now
    return ConnectionView(
        tool=code,
        # An expired lease means its owner is gone: whatever it last published is history.
        state=ConnectionState.DISCONNECTED if expired else lease.connection,
        owner=None if expired else lease.owner,
        since=lease.expires_at if expired else lease.connection_since,
        lease_expires_at=lease.expires_at,
        last_event_at=lease.last_event_at,
        last_error=lease.last_error,
    )
