"""Login, accounts, certifications and service-account tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select

from mes.audit.context import AuditContext, bind
from mes.auth import roles, service
from mes.auth.dependencies import (
    authenticated,
    count_toward_lockout,
    jwt_secret,
    requires,
    sign,
)
from mes.auth.models import ApiToken, User
from mes.auth.schemas import (
    ApiTokenCreate,
    ApiTokenIssued,
    ApiTokenRead,
    CertificationCreate,
    CertificationRead,
    CertificationRevoke,
    PasswordChange,
    TokenResponse,
    UserCreate,
    UserRead,
    UserUpdate,
)
from mes.auth.service import Principal
from mes.auth.tokens import issue_access_token
from mes.config import Settings
from mes.db.transaction import ReadSession, WriteSession, database, unit_of_work
from mes.errors import TooManyAttempts, Unauthenticated
from mes.kit.api import ClockDep, CodePath, Page, PageQuery, fetch_page
from mes.kit.idempotency import OnceDep

# Login is the one /api/v1 operation without a bearer token.
login_router = APIRouter(tags=["auth"])
router = APIRouter(tags=["auth"])

UsernamePath = Annotated[str, Path(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9._\-]*$")]
UserAdmin = Annotated[Principal, requires(roles.USER_ADMIN)]
Certifier = Annotated[Principal, requires(roles.USER_CERTIFY)]
TokenAdmin = Annotated[Principal, requires(roles.TOKEN_ADMIN)]
Self = Annotated[Principal, requires(roles.ACCOUNT_SELF)]


def user_read(user: User) -> UserRead:
    return UserRead(
        username=user.username,
        display_name=user.display_name,
        kind=user.kind,
        roles=sorted(user.role_set),
        is_active=user.is_active,
        locked_until=user.locked_until,
        version=user.version,
        certifications=[
            CertificationRead(
                tool_group=c.tool_group.code,
                certified_at=c.certified_at,
                expires_at=c.expires_at,
                certified_by=c.certified_by,
            )
            for c in sorted(user.certifications, key=lambda c: c.tool_group.code)
        ],
    )


def token_read(token: ApiToken) -> ApiTokenRead:
    return ApiTokenRead(
        public_id=token.public_id,
        name=token.name,
        created_at=token.created_at,
        created_by=token.created_by,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


@login_router.post("/auth/token", response_model=TokenResponse)
async def login(
    request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], clock: ClockDep
) -> TokenResponse:
    """OAuth2 password flow: a short-lived access token for a person's account."""
    settings: Settings = request.app.state.settings
    policy = service.LoginPolicy(
        max_failures=settings.login_max_failures,
        lockout=timedelta(seconds=settings.login_lockout_s),
    )
    username = form.username[:64]
    # Its own transaction: a failed attempt is counted (and committed) before it is refused.
    async with unit_of_work(database(request)) as session:
        bind(
            session,
            AuditContext(
                actor=username,
                role="anonymous",
                operation="auth.login",
                at=clock.now(),
                request_id=getattr(request.state, "request_id", None),
            ),
        )
        outcome = await service.login(session, username, form.password, clock=clock, policy=policy)
    if outcome.principal is None:
        if outcome.locked_until is not None:
            retry = max(1, int((outcome.locked_until - clock.now()).total_seconds()))
            raise TooManyAttempts(
                "too many failed logins; the account is locked for a while",
                headers={"Retry-After": str(retry)},
                retry_after_s=retry,
            )
        raise Unauthenticated("wrong username or password", code="auth.invalid_credentials")
    ttl = settings.access_token_ttl_s
    token = issue_access_token(
        outcome.principal.username,
        secret=jwt_secret(settings),
        now=clock.now(),
        ttl=timedelta(seconds=ttl),
        auth_time=clock.now(),
    )
    return TokenResponse(access_token=token, expires_in=ttl)


@router.get("/users/me", response_model=UserRead)
async def me(
    principal: Annotated[Principal, Depends(authenticated)], session: ReadSession
) -> UserRead:
    """The caller's own account."""
    return user_read(await service.get_user(session, principal.username))


@router.post("/users/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_own_password(
    body: PasswordChange,
    principal: Self,
    session: WriteSession,
    clock: ClockDep,
    request: Request,
) -> None:
    """Change one's own password (proving the current one); older tokens stop working. A
    wrong current password counts toward the account's lockout."""
    try:
        await service.change_own_password(
            session,
            principal,
            body.current_password.get_secret_value(),
            body.new_password.get_secret_value(),
            clock=clock,
        )
    except Unauthenticated as exc:
        if exc.code == "auth.invalid_credentials":
            count_toward_lockout(request, exc, principal.username, "auth.password_change_failed")
        raise


@router.get("/users", response_model=Page[UserRead])
async def list_users(session: ReadSession, page: PageQuery) -> Page[UserRead]:
    """All accounts with their roles and certifications."""
    stmt = select(User).options(*service.USER_OPTIONS).order_by(User.username)
    rows, total = await fetch_page(session, stmt, page)
    return Page(items=[user_read(u) for u in rows], total=total, **page.model_dump())


@router.post("/users", response_model=UserRead, status_code=status.HTTP_201_CREATED)
async def create_user(
    request: Request,
    body: UserCreate,
    principal: UserAdmin,
    session: WriteSession,
    clock: ClockDep,
    once: OnceDep,
) -> UserRead | JSONResponse:
    """Open an account (e-signature)."""

    async def op() -> UserRead:
        await sign(request, session, principal, body.signature)
        user = await service.create_user(session, body, clock=clock)
        return user_read(await service.get_user(session, user.username))

    return await once.run(op)


@router.get("/users/{username}", response_model=UserRead)
async def get_user(username: UsernamePath, session: ReadSession) -> UserRead:
    """One account."""
    return user_read(await service.get_user(session, username))


@router.patch("/users/{username}", response_model=UserRead)
async def update_user(
    request: Request,
    username: UsernamePath,
    body: UserUpdate,
    principal: UserAdmin,
    session: WriteSession,
    clock: ClockDep,
) -> UserRead:
    """Change roles, name, activity or reset the password (e-signature)."""
    await sign(request, session, principal, body.signature)
    return user_read(
        await service.update_user(session, username, body, actor=principal, clock=clock)
    )


@router.post(
    "/users/{username}/certifications",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
)
async def certify(
    request: Request,
    username: UsernamePath,
    body: CertificationCreate,
    principal: Certifier,
    session: WriteSession,
    clock: ClockDep,
    once: OnceDep,
) -> UserRead | JSONResponse:
    """Certify a person for a tool group, or renew it (e-signature)."""

    async def op() -> UserRead:
        await sign(request, session, principal, body.signature)
        return user_read(
            await service.certify(session, username, body, actor=principal.username, clock=clock)
        )

    return await once.run(op)


@router.post("/users/{username}/certifications/{tool_group}/revoke", response_model=UserRead)
async def revoke_certification(
    request: Request,
    username: UsernamePath,
    tool_group: CodePath,
    body: CertificationRevoke,
    principal: Certifier,
    session: WriteSession,
) -> UserRead:
    """Withdraw a certification (e-signature)."""
    await sign(request, session, principal, body.signature)
    return user_read(await service.revoke_certification(session, username, tool_group))


@router.get("/users/{username}/tokens", response_model=list[ApiTokenRead])
async def list_tokens(
    username: UsernamePath, _principal: TokenAdmin, session: ReadSession
) -> list[ApiTokenRead]:
    """A service account's tokens (never their secrets)."""
    return [token_read(t) for t in await service.list_api_tokens(session, username)]


@router.post(
    "/users/{username}/tokens", response_model=ApiTokenIssued, status_code=status.HTTP_201_CREATED
)
async def issue_token(
    username: UsernamePath,
    body: ApiTokenCreate,
    principal: TokenAdmin,
    session: WriteSession,
    clock: ClockDep,
    once: OnceDep,
) -> ApiTokenIssued | JSONResponse:
    """Issue an API token for a service account; the token is shown only in this response."""

    async def op() -> ApiTokenIssued:
        row, clear_text = await service.issue_api_token(
            session, username, body, actor=principal.username, clock=clock
        )
        return ApiTokenIssued(token=clear_text, **token_read(row).model_dump())

    return await once.run(op, withhold=True)


@router.post("/users/{username}/tokens/{public_id}/revoke", response_model=ApiTokenRead)
async def revoke_token(
    username: UsernamePath,
    public_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")],
    _principal: TokenAdmin,
    session: WriteSession,
    clock: ClockDep,
) -> ApiTokenRead:
    """Revoke a token; it stops working at once."""
    return token_read(await service.revoke_api_token(session, username, public_id, clock=clock))
