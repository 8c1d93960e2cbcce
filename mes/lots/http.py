"""The HTTP side of a lot transaction, shared by the lots routers (and the dispatch router).

A lot mutation needs the same things on every endpoint: the caller (guarded by the endpoint's
permission), the write session and clock, the ``Idempotency-Key`` (a retry gets the first answer
back and changes nothing) and the lot version the caller read (in the body, or ``If-Match``).
``lot_write(permission)`` is the one dependency that bundles them into a ``LotWrite``.

This module deliberately has no ``from __future__ import annotations``: the dependencies that
``lot_write`` builds name their permission's guard in an annotation, which FastAPI must see as
an object, not as a string to evaluate in the module's globals.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth import dependencies as auth
from mes.auth.roles import Permission
from mes.auth.schemas import ESignature
from mes.auth.service import Principal
from mes.clock import Clock
from mes.db.transaction import WriteSession
from mes.errors import StaleVersion
from mes.kit.api import ClockDep
from mes.kit.idempotency import KeyHeader, idempotent
from mes.lots import service
from mes.lots.models import FutureAction, Lot
from mes.lots.schemas import CurrentStep, FutureActionRead, LotRead

# A fresh answer, or the stored answer replayed to a retry (``Idempotent-Replayed: true``).
Answer = JSONResponse | BaseModel
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=24)]


def lot_read(lot: Lot) -> LotRead:
    step = lot.current_step
    return LotRead(
        code=lot.code,
        fab=lot.fab.code,
        product=lot.product.code,
        route=lot.route_version.route.code,
        route_version=lot.route_version.version,
        step=CurrentStep(
            sequence=step.sequence, operation=step.operation, tool_group=step.tool_group.code
        )
        if step is not None
        else None,
        state=lot.state,
        lot_type=lot.lot_type,
        priority_class=lot.priority_class,
        due_at=lot.due_at,
        wafer_count=lot.wafer_count,
        carrier=lot.carrier.code if lot.carrier else None,
        parent=lot.parent.code if lot.parent else None,
        started_at=lot.started_at,
        ended_at=lot.ended_at,
        version=lot.version,
    )


def future_read(action: FutureAction) -> FutureActionRead:
    return FutureActionRead(
        id=action.id,
        step_sequence=action.step.sequence,
        kind=action.kind,
        hold_code=action.hold_code.code,
        reason=action.reason,
        created_by=action.created_by,
        created_at=action.created_at,
    )


@dataclass(frozen=True)
class LotWrite:
    """One lot transaction of an HTTP request: who, in which session, and how to answer."""

    request: Request
    session: AsyncSession
    clock: Clock
    by: Principal
    key: str | None
    if_match: str | None

    def version(self, body_version: int | None) -> int | None:
        """The version the caller read: the body's, else the If-Match header's."""
        if body_version is not None or self.if_match is None:
            return body_version
        try:
            return int(self.if_match.strip().strip('"').removeprefix("W/").strip('"'))
        except ValueError as exc:
            raise StaleVersion(
                "If-Match must carry the lot's version number", code="lot.bad_if_match"
            ) from exc

    async def sign(self, signature: ESignature) -> None:
        """Check the e-signature of a sensitive operation and put it on its audit record."""
        await auth.sign(self.request, self.session, self.by, signature)

    async def read(self, code: str) -> LotRead:
        """The lot as the transaction left it (read again, not the session's stale objects)."""
        return await service.lot_answer(self.session, code)

    async def run(self, operation: Callable[[], Awaitable[BaseModel]]) -> Answer:
        """Run ``operation`` once per Idempotency-Key; answer with the route's status code."""
        route = self.request.scope.get("route")
        status_code = route.status_code if isinstance(route, APIRoute) else None
        return await idempotent(
            self.request,
            self.session,
            self.key,
            self.by.username,
            self.clock.now(),
            operation,
            status_code=status_code or 200,
        )

    async def run_lot(
        self, verb: Callable[[], Awaitable[Lot]], *, from_session: bool = False
    ) -> Answer:
        """``run`` a verb that changes one lot; the answer is that lot. ``from_session``: the
        verb changed the lot through the ORM only (no bulk UPDATE), so the locked row in the
        session is current and the answer is built from it (``moved_lot_answer``)."""

        async def operation() -> LotRead:
            lot = await verb()
            if from_session:
                return await service.moved_lot_answer(self.session, lot)
            return await self.read(lot.code)

        return await self.run(operation)


def lot_write(permission: Permission, *, if_match: bool = True) -> Any:
    """The ``LotWrite`` dependency of an endpoint that needs ``permission``.

    ``if_match=False`` for the transactions that do not change one existing lot (start, mass
    hold, arming a future action): they take no If-Match header.
    """
    guard = auth.requires(permission)

    async def with_if_match(
        request: Request,
        by: Annotated[Principal, guard],
        session: WriteSession,
        clock: ClockDep,
        key: KeyHeader = None,
        if_match: IfMatch = None,
    ) -> LotWrite:
        return LotWrite(request, session, clock, by, key, if_match)

    async def without_if_match(
        request: Request,
        by: Annotated[Principal, guard],
        session: WriteSession,
        clock: ClockDep,
        key: KeyHeader = None,
    ) -> LotWrite:
        return LotWrite(request, session, clock, by, key, None)

    return Depends(with_if_match if if_match else without_if_match)
