"""Password hashing with Argon2id (argon2-cffi, RFC 9106 parameters by default)."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so that a wrong username costs as much
    time as a wrong password and response times do not reveal which accounts exist. Made on first
    use, not at import: every process that imports the package (CLI commands, role processes)
    would otherwise pay a whole Argon2 hash to start."""
    return _hasher.hash("not-a-real-password")


MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        verified = _hasher.verify(password_hash or _dummy_hash(), password)
        return verified and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# Argon2id costs tens of milliseconds of CPU and 64 MiB per hash. Run on the event loop it would
# stall every other request for that long (a login, an e-signed hold); run in the loop's default
# pool a burst of logins could take 32 x 64 MiB. Two workers: the machine's cores, not more.
_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")


async def verify_password_off_loop(password_hash: str | None, password: str) -> bool:
    """``verify_password`` in the hashing threads, so the event loop keeps serving."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_HASHING, verify_password, password_hash, password)


async def hash_password_off_loop(password: str) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_HASHING, hash_password, password)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def password_problem(password: str, username: str) -> str | None:
    """Why a new password is unacceptable, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if username.lower() in password.lower():
        return "a password must not contain the username"
    return None
