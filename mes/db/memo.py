"""A per-database memo of rows that never change once committed (the steps of a released route
version, say), so that a hot path does not read them again on every request.

Only what cannot change may go in: there is no invalidation, and another process cannot tell
this one about a change. An entry is remembered when the transaction that read it commits (a
row read inside a transaction that then rolls back may never have existed; SQLite reuses its
ids). Each ``Database`` has its own memo (tests run many databases in one process, with the
same ids in each); a session made without one simply reads every time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

SESSION_KEY = "mes.memo"
_PENDING_KEY = "mes.memo.pending"


class Memo:
    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        return self._entries.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        self._entries[key] = value
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def recall(session: Any, key: Hashable) -> Any | None:
    """The remembered value of ``key`` for the session's database (None: not known)."""
    memo = session.info.get(SESSION_KEY)
    return memo.get(key) if isinstance(memo, Memo) else None


def remember(session: Any, key: Hashable, value: Any) -> None:
    """Remember ``value`` once the session's transaction commits."""
    if isinstance(session.info.get(SESSION_KEY), Memo):
        session.info.setdefault(_PENDING_KEY, []).append((key, value))


def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    memo = session.info.get(SESSION_KEY)
    if pending and isinstance(memo, Memo):
        for key, value in pending:
            memo.put(key, value)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_rollback", _after_rollback)
