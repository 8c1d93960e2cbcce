"""Running one console action exactly as the API runs it.

The same permission (refused with auth.forbidden), the same audit context and operation name,
one transaction (``unit_of_work``), the e-signature checked by ``mes.auth.dependencies.sign``
(a wrong password counts toward the lockout), and the form's idempotency key: a double click or
a resent form applies the change once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from mes.audit.context import bind
from mes.auth import dependencies as auth
from mes.auth.roles import Permission
from mes.auth.schemas import ESignature, SignatureMeaning
from mes.console.sessions import ConsoleUser, audit_context
from mes.db.transaction import database, unit_of_work
from mes.errors import Conflict, InvalidInput, MesError, Unauthenticated
from mes.kit.idempotency import idempotent

T = TypeVar("T")


class Done(BaseModel):
    """What an action answers (and what a retry with the same key is told again)."""

    message: str


def signature(reason: str | None, password: str | None, meaning: str) -> ESignature:
    """The e-signature dialog's fields, validated like the API's body.

    Stricter than the API in one way: the console always asks for the password. A console
    session lasts a shift on a shared screen, so "signed in a few minutes ago" says little about
    who is signing now.
    """
    if not password:
        raise Unauthenticated(
            "this operation needs an e-signature: enter your password",
            code="auth.signature_required",
        )
    try:
        return ESignature(
            reason=(reason or "").strip(),
            meaning=SignatureMeaning(meaning),
            password=SecretStr(password) if password else None,
        )
    except (ValidationError, ValueError) as exc:
        raise InvalidInput(
            "an e-signature needs a reason of at least 3 characters and your password",
            code="console.signature_incomplete",
        ) from exc


async def perform(
    request: Request,
    user: ConsoleUser,
    permission: Permission,
    operation: str,
    work: Callable[[AsyncSession], Awaitable[str]],
    *,
    key: str | None,
    signed: ESignature | None = None,
) -> str:
    """Run ``work`` (which returns the success message) as ``operation``; MesError on refusal."""
    context = audit_context(request, user, permission, operation)
    if key is not None and not (8 <= len(key) <= 128 and key.replace("-", "").isalnum()):
        raise InvalidInput("malformed form key", code="idempotency.bad_key")
    try:
        async with unit_of_work(database(request)) as session:
            bind(session, context)
            if signed is not None:
                await auth.sign(request, session, user.principal, signed)

            async def operation_() -> Done:
                return Done(message=await work(session))

            answer = await idempotent(request, session, key, user.username, context.at, operation_)
    except StaleDataError as exc:
        raise Conflict(
            "someone else changed it meanwhile; reload and try again", code="console.stale"
        ) from exc
    except IntegrityError as exc:
        raise Conflict(
            "the change conflicts with existing data; nothing was applied",
            code="db.constraint_violated",
        ) from exc
    if isinstance(answer, Done):
        return answer.message
    return "already done (this form was sent before)"


async def read(request: Request, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with unit_of_work(database(request), write=False) as session:
        return await work(session)


__all__ = ["Done", "MesError", "perform", "read", "signature"]
