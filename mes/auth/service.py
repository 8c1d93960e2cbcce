"""Accounts, logins, bearer tokens and e-signatures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.attributes import flag_modified

from mes.audit.context import AuditContext
from mes.auth import passwords, tokens
from mes.auth.models import AccountKind, ApiToken, Certification, User, UserRole
from mes.auth.roles import HUMAN_ROLES, SERVICE_ROLES, Role
from mes.auth.schemas import (
    ApiTokenCreate,
    CertificationCreate,
    ESignature,
    UserCreate,
    UserUpdate,
)
from mes.clock import Clock
from mes.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    StaleVersion,
    TooManyAttempts,
    Unauthenticated,
)
from mes.fabs import service as fabs_service

log = logging.getLogger(__name__)

USER_OPTIONS = (
    selectinload(User.roles),
    selectinload(User.certifications).selectinload(Certification.tool_group),
)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: int
    username: str
    kind: AccountKind
    roles: frozenset[Role]
    # When the caller last proved their password (None for API tokens).
    auth_time: datetime | None


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int
    lockout: timedelta


async def find_user(session: AsyncSession, username: str) -> User | None:
    return (
        await session.scalars(select(User).where(User.username == username).options(*USER_OPTIONS))
    ).one_or_none()


async def get_user(session: AsyncSession, username: str) -> User:
    """The account ``username``, or user.not_found."""
    user = await find_user(session, username)
    if user is None:
        raise NotFound(f"user {username!r} does not exist", code="user.not_found")
    return user


def _principal(user: User, auth_time: datetime | None) -> Principal:
    return Principal(user.id, user.username, user.kind, user.role_set, auth_time)


@dataclass(frozen=True)
class LoginOutcome:
    principal: Principal | None
    locked_until: datetime | None = None


def _count_failure(user: User, now: datetime, policy: LoginPolicy) -> None:
    user.failed_logins += 1
    if user.failed_logins >= policy.max_failures:
        user.locked_until = now + policy.lockout
        user.failed_logins = 0
        log.warning("account %s locked after repeated wrong passwords", user.username)


async def count_wrong_password(
    session: AsyncSession, username: str, *, clock: Clock, policy: LoginPolicy
) -> None:
    """A wrong password given elsewhere than at login (an e-signature): it counts toward the
    lockout like a failed login, or guessing could go on through signatures."""
    user = await find_user(session, username)
    if user is not None:
        _count_failure(user, clock.now(), policy)
        await session.flush()


async def login(
    session: AsyncSession, username: str, password: str, *, clock: Clock, policy: LoginPolicy
) -> LoginOutcome:
    """Check a password, counting failures per account and locking it after too many.

    Returns the outcome instead of raising, so the caller can commit the failure count before
    it refuses the login.
    """
    now = clock.now()
    user = await find_user(session, username)
    if user is None or user.kind != AccountKind.HUMAN or not user.is_active:
        await passwords.verify_password_off_loop(None, password)  # same cost as a real check
        return LoginOutcome(None)
    if user.locked_until is not None and user.locked_until > now:
        return LoginOutcome(None, locked_until=user.locked_until)
    if not await passwords.verify_password_off_loop(user.password_hash, password):
        _count_failure(user, now, policy)
        await session.flush()
        return LoginOutcome(
            None,
            locked_until=user.locked_until
            if user.locked_until and user.locked_until > now
            else None,
        )
    if user.failed_logins or user.locked_until is not None:
        user.failed_logins = 0
        user.locked_until = None
    if user.password_hash is not None and passwords.needs_rehash(user.password_hash):
        user.password_hash = await passwords.hash_password_off_loop(password)
    await session.flush()
    return LoginOutcome(_principal(user, now))


async def principal_for_token(
    session: AsyncSession, token: str, *, secret: str, clock: Clock
) -> Principal:
    """Resolve a bearer token (access JWT or API token) to its active account."""
    principal, _expires_at = await verify_token(session, token, secret=secret, clock=clock)
    return principal


async def verify_token(
    session: AsyncSession, token: str, *, secret: str, clock: Clock
) -> tuple[Principal, datetime | None]:
    """``principal_for_token``, and until when the token itself is valid (None: no expiry)."""
    now = clock.now()
    api_token = tokens.split_api_token(token)
    if api_token is not None:
        public_id, secret_part = api_token
        row = (
            (
                await session.scalars(
                    select(ApiToken)
                    .where(ApiToken.public_id == public_id)
                    .options(joinedload(ApiToken.user).joinedload(User.roles))
                )
            )
            .unique()
            .one_or_none()
        )
        if (
            row is None
            or not tokens.secret_matches(secret_part, row.secret_digest)
            or row.revoked_at is not None
            or (row.expires_at is not None and row.expires_at <= now)
            or not row.user.is_active
        ):
            raise Unauthenticated(
                "invalid, expired or revoked API token", code="auth.invalid_token"
            )
        return _principal(row.user, None), row.expires_at
    try:
        claims = tokens.decode_access_token(token, secret=secret, now=now)
    except tokens.InvalidToken as exc:
        raise Unauthenticated(str(exc), code="auth.invalid_token") from exc
    # Every request comes here: one query, roles joined, nothing else loaded.
    user = (
        (
            await session.scalars(
                select(User).where(User.username == claims.username).options(joinedload(User.roles))
            )
        )
        .unique()
        .one_or_none()
    )
    if user is None or not user.is_active:
        raise Unauthenticated("the token's account is disabled", code="auth.invalid_token")
    # Tokens issued before a password change are void.
    if user.password_changed_at is not None and claims.auth_time < user.password_changed_at.replace(
        microsecond=0
    ):
        raise Unauthenticated(
            "the password changed since this token was issued", code="auth.invalid_token"
        )
    return _principal(user, claims.auth_time), claims.expires_at


async def sign(
    session: AsyncSession,
    principal: Principal,
    signature: ESignature,
    context: AuditContext,
    *,
    clock: Clock,
    max_age: timedelta,
) -> None:
    """Verify an e-signature and record its meaning on the operation's audit context."""
    if principal.kind != AccountKind.HUMAN:
        raise Forbidden("service accounts cannot sign", code="auth.signature_not_allowed")
    now = clock.now()
    if signature.password is not None:
        user = await get_user(session, principal.username)
        if user.locked_until is not None and user.locked_until > now:
            raise TooManyAttempts(
                f"account locked after repeated wrong passwords until {user.locked_until}",
                code="auth.locked",
            )
        typed = signature.password.get_secret_value()
        if not await passwords.verify_password_off_loop(user.password_hash, typed):
            raise Unauthenticated(
                "the signature's password is wrong", code="auth.signature_invalid"
            )
        method = "password"
    elif principal.auth_time is not None and now - principal.auth_time <= max_age:
        method = "recent_login"
    else:
        raise Unauthenticated(
            "this operation needs an e-signature: send your password with it",
            code="auth.signature_required",
        )
    context.reason = signature.reason
    context.signature_meaning = signature.meaning.value
    context.signature_method = method


def _check_roles(kind: AccountKind, roles: list[Role]) -> list[UserRole]:
    allowed = HUMAN_ROLES if kind == AccountKind.HUMAN else SERVICE_ROLES
    wrong = sorted(r.value for r in roles if r not in allowed)
    if wrong:
        raise InvalidInput(
            f"a {kind.value} account cannot hold roles {wrong}", code="user.invalid_roles"
        )
    return [UserRole(role=r) for r in sorted(set(roles))]


def _new_password_hash(username: str, password: str) -> str:
    problem = passwords.password_problem(password, username)
    if problem:
        raise InvalidInput(problem, code="user.weak_password")
    return passwords.hash_password(password)


async def create_user(session: AsyncSession, data: UserCreate, *, clock: Clock) -> User:
    """Open an individual account for a person or a machine."""
    if await find_user(session, data.username) is not None:
        raise Conflict(f"user {data.username!r} already exists", code="user.duplicate")
    if data.kind == AccountKind.HUMAN and data.password is None:
        raise InvalidInput("a person's account needs a password", code="user.password_required")
    if data.kind == AccountKind.SERVICE and data.password is not None:
        raise InvalidInput(
            "service accounts use API tokens, not passwords", code="user.password_not_allowed"
        )
    user = User(
        username=data.username,
        display_name=data.display_name,
        kind=data.kind,
        roles=_check_roles(data.kind, data.roles),
        password_hash=_new_password_hash(data.username, data.password.get_secret_value())
        if data.password is not None
        else None,
        password_changed_at=clock.now() if data.password is not None else None,
        certifications=[],
    )
    session.add(user)
    await session.flush()
    return user


async def update_user(
    session: AsyncSession, username: str, data: UserUpdate, *, actor: Principal, clock: Clock
) -> User:
    """Change an account's name, roles, activity or password (administrators)."""
    user = await get_user(session, username)
    if user.version != data.version:
        raise StaleVersion(
            f"user {username!r} is at version {user.version}, not {data.version}",
            code="user.stale_version",
            current_version=user.version,
        )
    if user.id == actor.user_id and (
        data.is_active is False or (data.roles is not None and Role.ADMIN not in data.roles)
    ):
        # Nobody locks themselves out of administration by accident.
        raise Conflict(
            "administrators cannot disable or demote themselves", code="user.self_lockout"
        )
    if data.display_name is not None:
        user.display_name = data.display_name
    if data.is_active is not None:
        user.is_active = data.is_active
    if data.roles is not None and set(data.roles) != user.role_set:
        wanted = {r.role for r in _check_roles(user.kind, data.roles)}
        for held in list(user.roles):
            if held.role not in wanted:
                user.roles.remove(held)
        for role in sorted(wanted - user.role_set):
            user.roles.append(UserRole(role=role))
        # Role rows live in their own table: bump the account's version with them.
        flag_modified(user, "display_name")
    if data.password is not None:
        if user.kind != AccountKind.HUMAN:
            raise InvalidInput(
                "service accounts have no password", code="user.password_not_allowed"
            )
        user.password_hash = _new_password_hash(username, data.password.get_secret_value())
        user.password_changed_at = clock.now()
        user.failed_logins = 0
        user.locked_until = None
    await session.flush()
    return user


async def change_own_password(
    session: AsyncSession, principal: Principal, current: str, new: str, *, clock: Clock
) -> None:
    """A person changes their own password, proving the current one. A locked account may not
    (a wrong current password counts toward the lockout: the router counts it)."""
    user = await get_user(session, principal.username)
    if user.kind != AccountKind.HUMAN:
        raise Forbidden("service accounts have no password", code="user.password_not_allowed")
    now = clock.now()
    if user.locked_until is not None and user.locked_until > now:
        raise TooManyAttempts(
            f"account locked after repeated wrong passwords until {user.locked_until}",
            code="auth.locked",
        )
    if not await passwords.verify_password_off_loop(user.password_hash, current):
        raise Unauthenticated("the current password is wrong", code="auth.invalid_credentials")
    user.password_hash = _new_password_hash(user.username, new)
    user.password_changed_at = clock.now()
    await session.flush()


async def certify(
    session: AsyncSession, username: str, data: CertificationCreate, *, actor: str, clock: Clock
) -> User:
    """Certify a person to run a tool group (renews an existing certification)."""
    user = await get_user(session, username)
    if user.kind != AccountKind.HUMAN:
        raise Conflict("only people are certified", code="user.not_human")
    group = await fabs_service.get_tool_group(session, data.tool_group)
    now = clock.now()
    if data.expires_at is not None and data.expires_at <= now:
        raise InvalidInput("the certification would already be expired", code="user.expiry_in_past")
    existing = next((c for c in user.certifications if c.tool_group_id == group.id), None)
    if existing is None:
        user.certifications.append(
            Certification(
                tool_group=group, certified_at=now, expires_at=data.expires_at, certified_by=actor
            )
        )
    else:
        existing.certified_at, existing.expires_at, existing.certified_by = (
            now,
            data.expires_at,
            actor,
        )
    await session.flush()
    return user


async def revoke_certification(session: AsyncSession, username: str, tool_group: str) -> User:
    """Withdraw a person's certification for a tool group."""
    user = await get_user(session, username)
    group = await fabs_service.get_tool_group(session, tool_group)
    existing = next((c for c in user.certifications if c.tool_group_id == group.id), None)
    if existing is None:
        raise NotFound(
            f"user {username!r} is not certified for {tool_group!r}", code="user.not_certified"
        )
    user.certifications.remove(existing)
    await session.flush()
    return user


async def issue_api_token(
    session: AsyncSession, username: str, data: ApiTokenCreate, *, actor: str, clock: Clock
) -> tuple[ApiToken, str]:
    """Issue a bearer token for a service account; the clear text is returned only here."""
    user = await get_user(session, username)
    if user.kind != AccountKind.SERVICE:
        raise Conflict("API tokens are for service accounts", code="token.not_service_account")
    if data.expires_at is not None and data.expires_at <= clock.now():
        raise InvalidInput("the token would already be expired", code="token.expiry_in_past")
    new = tokens.new_api_token()
    row = ApiToken(
        public_id=new.public_id,
        user_id=user.id,
        name=data.name,
        secret_digest=new.secret_digest,
        expires_at=data.expires_at,
        created_by=actor,
    )
    session.add(row)
    await session.flush()
    return row, new.clear_text


async def list_api_tokens(session: AsyncSession, username: str) -> list[ApiToken]:
    user = await get_user(session, username)
    return list(
        await session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
        )
    )


async def revoke_api_token(
    session: AsyncSession, username: str, public_id: str, *, clock: Clock
) -> ApiToken:
    """Revoke a service account's token at once."""
    user = await get_user(session, username)
    row = (
        await session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.public_id == public_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no token {public_id!r} for {username!r}", code="token.not_found")
    if row.revoked_at is None:
        row.revoked_at = clock.now()
        await session.flush()
    return row
