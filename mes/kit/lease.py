"""Leases: one row per resource, owned by one process until the row's ``expires_at``.

The one mechanism behind every "only one process does this" in the service (the dispatcher of
a fab, the adapter of a tool, and the roles to come), generic over the table: any mapped class
whose primary key names the resource and which has the columns ``owner``, ``acquired_at``,
``renewed_at`` and ``expires_at``. Nothing here commits; each call runs in the caller's
transaction.

* ``acquire`` takes a lease that is free (no row yet), expired or already ours. It is one
  conditional UPDATE, so two processes racing for an expired lease cannot both win (once the
  first one's change commits, the second one's WHERE no longer matches); two racing INSERTs for
  a resource without a row collide on the primary key and the loser's transaction fails (the
  caller treats that as not acquired).
* ``renew`` extends the unexpired leases we hold and says which ones those are; one that
  expired meanwhile is lost even if nobody took it yet (its owner stalled past the TTL: what it
  was doing may already be someone else's).
* ``holds`` answers whether a lease is ours now; every write made on a resource's behalf checks
  it in the same transaction. With ``lock`` (PostgreSQL: FOR SHARE) a take-over waits until
  that transaction ends.
* ``release`` ends our leases now, so another process can take over without waiting the TTL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

K = TypeVar("K")

LEASE_COLUMNS = ("owner", "acquired_at", "renewed_at", "expires_at")


class LeaseTable(Generic[K]):
    """The leases kept in one table: ``model`` and its column ``key`` naming the resource."""

    def __init__(self, model: type[Any], key: InstrumentedAttribute[K]) -> None:
        missing = [name for name in LEASE_COLUMNS if not hasattr(model, name)]
        if missing:
            raise TypeError(f"{model.__name__} lacks the lease columns {missing}")
        self.model = model
        self.key = key
        self.owner: InstrumentedAttribute[str] = model.owner
        self.renewed_at: InstrumentedAttribute[datetime] = model.renewed_at
        self.expires_at: InstrumentedAttribute[datetime] = model.expires_at

    async def acquire(
        self,
        session: AsyncSession,
        key: K,
        owner: str,
        now: datetime,
        ttl: timedelta,
        *,
        values: Mapping[str, Any] | None = None,
    ) -> bool:
        """Take the lease of ``key`` if it is free, expired or already ``owner``'s; renew it if
        ours. ``values``: more columns to write with it (``acquired_at`` is written when the
        row is created; pass it here to restamp it on every take)."""
        extra = dict(values or {})
        taken = await session.execute(
            update(self.model)
            .where(self.key == key, (self.owner == owner) | (self.expires_at < now))
            .values(owner=owner, renewed_at=now, expires_at=now + ttl, **extra)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount:  # type: ignore[attr-defined]
            return True
        exists = await session.scalar(select(self.key).where(self.key == key))
        if exists is not None:
            return False
        row = {"owner": owner, "acquired_at": now, "renewed_at": now, "expires_at": now + ttl}
        session.add(self.model(**{self.key.key: key, **row, **extra}))
        await session.flush()
        return True

    async def renew(
        self,
        session: AsyncSession,
        keys: Iterable[K],
        owner: str,
        now: datetime,
        ttl: timedelta,
    ) -> set[K]:
        """Extend ``owner``'s unexpired leases among ``keys``; returns the keys it still holds."""
        wanted = list(keys)
        if not wanted:
            return set()
        await session.execute(
            update(self.model)
            .where(self.key.in_(wanted), self.owner == owner, self.expires_at >= now)
            .values(renewed_at=now, expires_at=now + ttl)
            .execution_options(synchronize_session=False)
        )
        return set(
            await session.scalars(
                select(self.key).where(
                    self.key.in_(wanted), self.owner == owner, self.renewed_at == now
                )
            )
        )

    async def holds(
        self, session: AsyncSession, key: K, owner: str, now: datetime, *, lock: bool = False
    ) -> bool:
        """Whether ``owner`` holds the lease of ``key`` now. ``lock``: share-lock the row until
        the caller's transaction ends (PostgreSQL), so a take-over waits for what it writes."""
        stmt = select(self.key).where(self.key == key, self.owner == owner, self.expires_at >= now)
        if lock:
            stmt = stmt.with_for_update(read=True)
        return await session.scalar(stmt) is not None

    async def release(
        self,
        session: AsyncSession,
        keys: Iterable[K],
        owner: str,
        now: datetime,
        *,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """End ``owner``'s leases among ``keys`` now (``values``: more columns to write)."""
        wanted = list(keys)
        if not wanted:
            return
        await session.execute(
            update(self.model)
            .where(self.key.in_(wanted), self.owner == owner)
            .values(expires_at=now, **dict(values or {}))
            .execution_options(synchronize_session=False)
        )
