"""Console sign-in: a session cookie carrying the same access token the API issues, and CSRF.

The cookie holds a JWT from ``mes.auth.tokens`` (HttpOnly, SameSite=Lax), resolved per request by
``mes.auth.service.principal_for_token`` — so a disabled account or a password change ends a
console session exactly as it voids an API token. Forms carry a CSRF token derived from the
session (HMAC with the service's signing key); the login form, before any session, from a random
cookie (double submit, signed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request

from mes.audit.context import AuditContext
from mes.auth import service
from mes.auth.dependencies import jwt_secret
from mes.auth.roles import Permission, acting_role
from mes.auth.service import Principal
from mes.auth.tokens import issue_access_token
from mes.config import Settings
from mes.db.transaction import database, unit_of_work
from mes.errors import Forbidden, MesError, Unauthenticated

SESSION_COOKIE = "mes_console"
LOGIN_COOKIE = "mes_console_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
# A shift: the console is left open at the tool; e-signatures still ask for the password.
SESSION_TTL = timedelta(hours=12)


class LoginRequired(Exception):
    """The page needs a signed-in user: the handler redirects to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class CsrfRefused(MesError):
    status = 403
    code = "console.csrf"
    title = "Form expired"


@dataclass(frozen=True)
class ConsoleUser:
    principal: Principal
    csrf: str

    @property
    def username(self) -> str:
        return self.principal.username

    def may(self, permission: Permission) -> bool:
        """Whether to offer the action at all (the server checks again when it is used)."""
        return acting_role(self.principal.roles, permission) is not None


def _secret(request: Request) -> bytes:
    settings: Settings = request.app.state.settings
    return jwt_secret(settings).encode()


def csrf_for(request: Request, seed: str) -> str:
    return hmac.new(_secret(request), b"console-csrf:" + seed.encode(), hashlib.sha256).hexdigest()


def issue_session(request: Request, username: str) -> str:
    now = request.app.state.clock.now()
    return issue_access_token(
        username, secret=jwt_secret(request.app.state.settings), now=now, ttl=SESSION_TTL,
        auth_time=now,
    )  # fmt: skip


def login_seed(request: Request) -> tuple[str, bool]:
    """The login form's CSRF seed, and whether the cookie must be set."""
    seed = request.cookies.get(LOGIN_COOKIE)
    if seed and 16 <= len(seed) <= 64:
        return seed, False
    return secrets.token_urlsafe(24), True


def check_login_csrf(request: Request, sent: str | None) -> None:
    seed = request.cookies.get(LOGIN_COOKIE)
    if not seed or not sent or not hmac.compare_digest(sent, csrf_for(request, "login:" + seed)):
        raise CsrfRefused("the login form expired; reload the page", code="console.csrf")


def _next_url(request: Request) -> str:
    # htmx fragment requests come back to the page they were made from.
    target = request.headers.get("HX-Current-URL") or str(request.url)
    path = "/" + target.split("://", 1)[-1].split("/", 1)[-1] if "://" in target else target
    return path if path.startswith("/console") else "/console"


def login_url(request: Request) -> str:
    return "/console/login?next=" + quote(_next_url(request), safe="/")


async def console_user(request: Request) -> ConsoleUser:
    """The signed-in user of a console request; LoginRequired otherwise."""
    cached = getattr(request.state, "console_user", None)
    if isinstance(cached, ConsoleUser):
        return cached
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 4096:
        raise LoginRequired(_next_url(request))
    app_state = request.app.state
    try:
        async with unit_of_work(database(request), write=False) as session:
            principal = await service.principal_for_token(
                session, token, secret=jwt_secret(app_state.settings), clock=app_state.clock
            )
    except Unauthenticated as exc:
        raise LoginRequired(_next_url(request)) from exc
    user = ConsoleUser(principal, csrf_for(request, token))
    request.state.console_user = user
    return user


User = Annotated[ConsoleUser, Depends(console_user)]


async def checked_user(request: Request, user: User) -> ConsoleUser:
    """A user posting a form: the CSRF token must match the session's (field or header)."""
    # Read (and cached) before the form is parsed: the idempotency fingerprint hashes it.
    await request.body()
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, user.csrf):
        raise CsrfRefused("the form expired; reload the page and try again")
    return user


PostingUser = Annotated[ConsoleUser, Depends(checked_user)]


def audit_context(
    request: Request, user: ConsoleUser, permission: Permission, operation: str
) -> AuditContext:
    """What the API's RoleGuard does for one operation: refuse, or open its audit context.

    ``operation`` is the API operation's name (e.g. ``lots.hold``): the trail reads the same
    whichever face the user came through.
    """
    role = acting_role(user.principal.roles, permission)
    if role is None:
        raise Forbidden(
            f"{permission.name} needs one of the roles {sorted(r.value for r in permission.roles)}",
            code="auth.forbidden",
        )
    context = AuditContext(
        actor=user.username,
        role=role.value,
        operation=operation,
        at=request.app.state.clock.now(),
        request_id=getattr(request.state, "request_id", None),
        signature_required=permission.signature,
    )
    request.state.audit = context
    return context
