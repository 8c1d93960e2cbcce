"""Bearer tokens this process has already verified, so a request does not pay for its token.

Without it every request opened a read transaction of its own (a pool checkout, BEGIN, the
account query with its roles, COMMIT) and checked the JWT signature: six database round trips
and ~4 ms of CPU, a quarter of a lot move. A token's answer depends only on its account (active,
roles, password changed), so it is kept for the token's life, with two limits:

- any commit in this process that changes an account (``user_account``, ``user_role``,
  ``api_token``) forgets every cached answer at once (``install`` listens to the ORM), and an
  answer looked up while such a change committed is never stored (generations below);
- another process (a second worker, the CLI) cannot tell this one, so an answer is re-checked
  against the database after ``ttl_s`` seconds (``MES_AUTH_CACHE_S``; 0 turns the cache off):
  deactivating an account or revoking a token takes effect there within that time.

The token's own expiry is checked on every request against the service clock, as before.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

from mes.auth.models import ApiToken, User, UserRole
from mes.auth.service import Principal

_ACCOUNT_TYPES = (User, UserRole, ApiToken)
_CHANGED_KEY = "mes.auth.accounts_changed"
# Bumped by every commit that changed an account; a cached answer from before is void.
_generation = 0


def generation() -> int:
    return _generation


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    expires_at: datetime | None  # the token's own expiry (None: never)
    checked_at: float  # time.monotonic() of the database check
    generation: int


class PrincipalCache:
    """Token → principal, per service (each app has its own: tests run many databases)."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_entries, self.monotonic = ttl_s, max_entries, monotonic
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, token: str, now: datetime) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if (
            entry.generation != _generation
            or self.monotonic() - entry.checked_at >= self.ttl_s
            or (entry.expires_at is not None and entry.expires_at <= now)
        ):
            del self._entries[token]
            return None
        return entry.principal

    def put(
        self, token: str, principal: Principal, expires_at: datetime | None, since: int
    ) -> None:
        """Remember a verified token; ``since`` is the generation read before the check."""
        if self.ttl_s <= 0 or since != _generation:
            return
        self._entries[token] = _Entry(principal, expires_at, self.monotonic(), since)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def _after_flush(session: Session, _context: UOWTransaction) -> None:
    # Forgotten at the flush (whatever then commits it, a savepoint included) and again at the
    # commit: an answer read from the database in between is not kept either.
    global _generation
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, _ACCOUNT_TYPES):
            session.info[_CHANGED_KEY] = True
            _generation += 1
            return


def _after_commit(session: Session) -> None:
    global _generation
    if session.info.pop(_CHANGED_KEY, False):
        _generation += 1


def _after_rollback(session: Session, *_: Any) -> None:
    session.info.pop(_CHANGED_KEY, None)


_installed = False


def install() -> None:
    """Listen for account changes on every ORM session (idempotent)."""
    global _installed
    if not _installed:
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", _after_rollback)
        _installed = True
