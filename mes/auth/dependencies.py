"""Request-level authentication and authorisation.

``authenticated`` guards every /api/v1 route (mounted on the API router); ``RoleGuard`` on an
operation checks the operation's roles and opens its audit context. The role-matrix test finds
the guards on the routes, so a mutating endpoint without one fails the suite.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any
from weakref import WeakKeyDictionary

from fastapi import Depends, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.context import AuditContext, bind
from mes.auth import principals, service
from mes.auth.principals import PrincipalCache
from mes.auth.roles import ALL_PERMISSIONS, Permission, acting_role
from mes.auth.schemas import ESignature
from mes.auth.service import Principal
from mes.clock import Clock
from mes.config import Settings
from mes.db.engine import Database
from mes.db.transaction import database, unit_of_work
from mes.errors import Forbidden, Unauthenticated


def jwt_secret(settings: Settings) -> str:
    """The configured signing key, or one made for this process (single-process demo)."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    return _PROCESS_SECRET


_PROCESS_SECRET = secrets.token_urlsafe(48)


# Declares the scheme in OpenAPI (the /docs "Authorize" button logs in through it); the token
# is checked below, so that a missing one is a problem+json 401 like every other error.
bearer_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    # Documentation of what each operation requires; roles, not token scopes, decide.
    scopes={
        p.name: f"{p.description} (roles: {', '.join(sorted(p.roles))})" for p in ALL_PERMISSIONS
    },
    auto_error=False,
)


async def authenticated(
    request: Request, token: Annotated[str | None, Depends(bearer_scheme)]
) -> Principal:
    """The caller behind the request's bearer token (401 otherwise)."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    if not token:
        raise Unauthenticated("send 'Authorization: Bearer <token>'", code="auth.unauthenticated")
    if len(token) > 4096:
        raise Unauthenticated("token too long", code="auth.invalid_token")
    app_state = request.app.state
    clock: Clock = app_state.clock
    cache = _principal_cache(request)
    principal = cache.get(token, clock.now()) if cache is not None else None
    if principal is None:
        since = principals.generation()
        async with unit_of_work(database(request), write=False) as session:
            principal, expires_at = await service.verify_token(
                session, token, secret=jwt_secret(app_state.settings), clock=clock
            )
        if cache is not None:
            cache.put(token, principal, expires_at, since)
    request.state.principal = principal
    return principal


def _principal_cache(request: Request) -> PrincipalCache | None:
    """The service's cache of verified tokens for its database (tests swap databases)."""
    caches: WeakKeyDictionary[Database, PrincipalCache] | None = getattr(
        request.app.state, "principals", None
    )
    if caches is None:
        return None
    db = database(request)
    cache = caches.get(db)
    if cache is None:
        cache = caches[db] = PrincipalCache(request.app.state.settings.auth_cache_s)
    return cache


def requires(permission: Permission) -> Any:
    """A route parameter's dependency: the caller must hold a role of ``permission``.

    Declared as an OAuth2 scope, so each operation's permission is in the OpenAPI document.
    """
    return Security(RoleGuard(permission), scopes=[permission.name])


def operation_name(request: Request) -> str:
    """``<domain>.<endpoint>``, e.g. ``equipment.change_state``: the audit's operation."""
    route = request.scope.get("route")
    endpoint = route.endpoint if isinstance(route, APIRoute) else None
    if endpoint is None:
        return "unknown"
    domain = endpoint.__module__.removeprefix("mes.").split(".")[0]
    return f"{domain}.{endpoint.__name__}"


class RoleGuard:
    """Allows the operation to callers holding one of ``permission.roles``."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(
        self, request: Request, principal: Annotated[Principal, Depends(authenticated)]
    ) -> Principal:
        role = acting_role(principal.roles, self.permission)
        if role is None:
            raise Forbidden(
                f"{self.permission.name} needs one of the roles "
                f"{sorted(r.value for r in self.permission.roles)}",
                code="auth.forbidden",
            )
        clock: Clock = request.app.state.clock
        # Picked up by the write session's flush (mes.audit.recorder).
        request.state.audit = AuditContext(
            actor=principal.username,
            role=role.value,
            operation=operation_name(request),
            at=clock.now(),
            request_id=getattr(request.state, "request_id", None),
            signature_required=self.permission.signature,
        )
        return principal


async def sign(
    request: Request, session: AsyncSession, principal: Principal, signature: ESignature
) -> None:
    """Check the e-signature of a sensitive operation and put it on its audit record."""
    settings: Settings = request.app.state.settings
    clock: Clock = request.app.state.clock
    try:
        await service.sign(
            session,
            principal,
            signature,
            request.state.audit,
            clock=clock,
            max_age=timedelta(seconds=settings.esign_max_age_s),
        )
    except Unauthenticated as exc:
        if exc.code != "auth.signature_invalid":
            raise
        count_toward_lockout(request, exc, principal.username, "auth.signature_failed")
        raise


def count_toward_lockout(request: Request, exc: Exception, username: str, operation: str) -> None:
    """Count a wrong password given outside a login (e-signature, password change) toward the
    account's lockout, once the refused operation has rolled back, in a transaction of its own
    (``unit_of_work`` runs ``exc.after_rollback``): guessing goes no further there than at login."""
    settings: Settings = request.app.state.settings
    clock: Clock = request.app.state.clock
    policy = service.LoginPolicy(
        max_failures=settings.login_max_failures,
        lockout=timedelta(seconds=settings.login_lockout_s),
    )
    audit = AuditContext(
        actor=username,
        role="anonymous",
        operation=operation,
        at=clock.now(),
        request_id=getattr(request.state, "request_id", None),
    )

    async def count(db: Database) -> None:
        async with unit_of_work(db) as own:
            bind(own, audit)
            await service.count_wrong_password(own, username, clock=clock, policy=policy)

    exc.after_rollback = [count]  # type: ignore[attr-defined]
