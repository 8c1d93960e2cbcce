"""Adapter bookkeeping: which adapter owns which tool, and how its connection is doing."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mes.db.base import Base, BigIntPK
from mes.db.types import enum_type


class ConnectionState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    STALE = "stale"  # the session is up but the tool has sent nothing for too long
    DISCONNECTED = "disconnected"


class AdapterLease(Base):
    """The lease of one tool to one adapter process, and what that adapter publishes about the
    connection (so every API replica can answer ``GET /equipment/{tool}/connection``).

    An adapter renews its leases every third of the TTL; a lease past ``expires_at`` is free for
    another adapter to take. Every write the adapter makes on the tool's behalf first checks it
    still holds the lease (in the same transaction), so an adapter that lost its lease while
    stalled cannot act on a tool that someone else now owns.
    """

    __tablename__ = "adapter_lease"
    # Transport bookkeeping renewed every few seconds, not a business change.
    __audit_exclude__ = True

    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[datetime]
    renewed_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    connection: Mapped[ConnectionState] = mapped_column(
        enum_type(ConnectionState, "connection_state")
    )
    connection_since: Mapped[datetime]
    last_event_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class DeadLetter(Base):
    """A message from a tool the MES could not apply (unreadable, or refused while applying):
    kept as it came, so that one bad message never stalls the tool's adapter and nothing the tool
    said is silently lost. Engineers read them at ``GET /equipment/{tool}/dead-letters``."""

    __tablename__ = "opcua_dead_letter"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"), index=True)
    received_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
