"""Bearer credentials: short-lived JWT access tokens for people, API tokens for machines.

API tokens look like ``mes_<id>_<secret>``: the id finds the row, the secret is compared with a
SHA-256 digest (the secret is 256 random bits, so a slow hash adds nothing), and the clear text
exists only in the response that issued it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

ALGORITHM = "HS256"
API_TOKEN_PREFIX = "mes_"


@dataclass(frozen=True)
class AccessClaims:
    username: str
    issued_at: datetime
    # When the user last proved their password: e-signatures accept a recent one.
    auth_time: datetime
    token_id: str
    expires_at: datetime


class InvalidToken(Exception):
    pass


def issue_access_token(
    username: str, *, secret: str, now: datetime, ttl: timedelta, auth_time: datetime
) -> str:
    payload = {
        "sub": username,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "auth_time": int(auth_time.timestamp()),
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, *, secret: str, now: datetime) -> AccessClaims:
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp", "iat", "auth_time", "jti"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken("malformed or wrongly signed token") from exc
    if payload.get("typ") != "access":
        raise InvalidToken("not an access token")
    # Expiry is checked against the service clock, not the wall clock, so tests and the
    # simulator can control time.
    if int(payload["exp"]) <= int(now.timestamp()):
        raise InvalidToken("token expired")
    return AccessClaims(
        username=str(payload["sub"]),
        issued_at=datetime.fromtimestamp(int(payload["iat"]), tz=now.tzinfo),
        auth_time=datetime.fromtimestamp(int(payload["auth_time"]), tz=now.tzinfo),
        token_id=str(payload["jti"]),
        expires_at=datetime.fromtimestamp(int(payload["exp"]), tz=now.tzinfo),
    )


@dataclass(frozen=True)
class NewApiToken:
    public_id: str
    secret_digest: str
    clear_text: str


def new_api_token() -> NewApiToken:
    public_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewApiToken(
        public_id=public_id,
        secret_digest=digest(secret),
        clear_text=f"{API_TOKEN_PREFIX}{public_id}_{secret}",
    )


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def split_api_token(token: str) -> tuple[str, str] | None:
    """(public id, secret) of a well-formed API token, else None."""
    if not token.startswith(API_TOKEN_PREFIX):
        return None
    public_id, sep, secret = token[len(API_TOKEN_PREFIX) :].partition("_")
    if not sep or len(public_id) != 12 or not secret or len(secret) > 128:
        return None
    return public_id, secret


def secret_matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)
