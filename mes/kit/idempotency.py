"""Idempotent mutations: a retried request with the same ``Idempotency-Key`` gets the first
answer back and changes nothing.

The key is claimed inside the operation's own transaction before anything else happens. A
concurrent duplicate waits on the claim (PostgreSQL's unique index; SQLite's single writer) and
then replays the stored answer; if the first attempt failed and rolled back, its claim vanished
with it and the retry runs for real.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy import Integer, String, UniqueConstraint, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from mes.clock import Clock
from mes.db.base import Base, BigIntPK
from mes.db.transaction import WriteSession
from mes.errors import Conflict, InvalidInput, MesError
from mes.kit.api import ClockDep

KeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:\-]+$",
        description="retries with the same key apply the change once and return the first answer",
    ),
]

R = TypeVar("R", bound=BaseModel)

# Stored instead of an answer that holds a secret (an API token): a retry is told that the
# first request succeeded, not the secret, which is never written down in clear.
WITHHELD: dict[str, Any] = {"_idempotency": "withheld"}


class IdempotencyRecord(Base):
    """The answer given to one (caller, key)."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("actor", "key"),)
    # Bookkeeping of the transport, not a business change.
    __audit_exclude__ = True

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]


async def _fingerprint(request: Request) -> str:
    body = await request.body()
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(request.url.path.encode())
    digest.update(body)
    return digest.hexdigest()


async def idempotent(
    request: Request,
    session: AsyncSession,
    key: str | None,
    actor: str,
    now: datetime,
    operation: Callable[[], Awaitable[R]],
    *,
    status_code: int = 200,
    withhold: bool = False,
) -> R | JSONResponse:
    """Run ``operation`` once per (actor, key); replay its stored answer to retries.

    ``withhold``: the answer carries a secret; it is not stored, and a retry is refused with
    ``idempotency.answer_withheld`` (the first request did its work; nothing is done twice).
    """
    if key is None:
        return await operation()
    fingerprint = await _fingerprint(request)
    values = {"actor": actor, "key": key, "fingerprint": fingerprint, "created_at": now}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    claimed = await session.scalar(
        insert(IdempotencyRecord)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["actor", "key"])
        .returning(IdempotencyRecord.id)
    )
    if claimed is None:
        stored = (
            await session.scalars(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.actor == actor, IdempotencyRecord.key == key
                )
            )
        ).one()
        if stored.fingerprint != fingerprint:
            raise InvalidInput(
                "this Idempotency-Key was used for a different request",
                code="idempotency.key_reused",
            )
        if stored.status_code is not None and stored.status_code >= 400:
            raise ReplayedRefusal(stored.status_code, stored.response or {})
        if stored.response == WITHHELD:
            raise Conflict(
                "the first request with this Idempotency-Key succeeded; its answer held a secret "
                "that is shown once only",
                code="idempotency.answer_withheld",
            )
        return JSONResponse(
            stored.response,
            status_code=stored.status_code or status_code,
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        result = await operation()
    except MesError as exc:
        if getattr(exc, "keep_changes", False):
            # The refusal commits what it did, and the claim with it: store the refusal so a
            # retry is told the same thing instead of an empty success.
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.id == claimed)
                .values(status_code=exc.status, response=_refusal(exc))
            )
        raise
    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == claimed)
        .values(
            status_code=status_code, response=WITHHELD if withhold else jsonable_encoder(result)
        )
    )
    return result


def _refusal(exc: MesError) -> dict[str, Any]:
    encoded: dict[str, Any] = jsonable_encoder(
        {"code": exc.code, "title": exc.title, "detail": exc.detail, "extra": exc.extra}
    )
    return encoded


class ReplayedRefusal(MesError):
    """The refusal a first attempt was given, told again to a retry with the same key."""

    # Its code is one the operation itself refused with: the API contract lists no code of its own.
    replays = True

    def __init__(self, status: int, stored: dict[str, Any]) -> None:
        super().__init__(
            str(stored.get("detail", "")),
            code=str(stored.get("code", "mes.error")),
            headers={"Idempotent-Replayed": "true"},
            **dict(stored.get("extra") or {}),
        )
        self.status = status
        self.title = str(stored.get("title", self.title))


async def claim_key(
    session: AsyncSession, actor: str, key: str, now: datetime, *, fingerprint: str = ""
) -> bool:
    """Claim (actor, key) inside the caller's transaction; False if it was claimed before.

    For callers that are not HTTP requests (OPC UA events): a duplicate is dropped, not
    answered. The claim commits or rolls back with the work it guards.
    """
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    claimed = await session.scalar(
        insert(IdempotencyRecord)
        .values(actor=actor, key=key, fingerprint=fingerprint, created_at=now)
        .on_conflict_do_nothing(index_elements=["actor", "key"])
        .returning(IdempotencyRecord.id)
    )
    return claimed is not None


class Once:
    """A creating endpoint's ``idempotent`` call: the request, its write session, the caller's
    key and the clock, bundled so that an endpoint only hands over what it creates.

    The actor is the authenticated caller the route guard left on ``request.state`` (the guard
    is a dependency of the same endpoint, resolved before the endpoint body runs).
    """

    def __init__(self, request: Request, session: AsyncSession, key: str | None, clock: Clock):
        self.request = request
        self.session = session
        self.key = key
        self.clock = clock

    async def run(
        self, operation: Callable[[], Awaitable[R]], *, withhold: bool = False
    ) -> R | JSONResponse:
        """``operation`` once per (caller, key), answered with the route's status code."""
        route = self.request.scope.get("route")
        status_code = route.status_code if isinstance(route, APIRoute) else None
        principal = getattr(self.request.state, "principal", None)
        actor = str(getattr(principal, "username", "") or "anonymous")
        return await idempotent(
            self.request,
            self.session,
            self.key,
            actor,
            self.clock.now(),
            operation,
            status_code=status_code or 200,
            withhold=withhold,
        )


def _once(request: Request, session: WriteSession, clock: ClockDep, key: KeyHeader = None) -> Once:
    return Once(request, session, key, clock)


# The dependency of an endpoint that creates something: ``once: OnceDep`` then
# ``return await once.run(op)``.
OnceDep = Annotated[Once, Depends(_once)]


__all__ = [
    "IdempotencyRecord",
    "KeyHeader",
    "Once",
    "OnceDep",
    "ReplayedRefusal",
    "claim_key",
    "idempotent",
]
