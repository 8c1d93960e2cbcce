"""Who is changing data, and why: bound to a session before it writes.

HTTP requests get theirs from the route guard (via ``request.state``); the CLI, the seed loader,
OPC UA adapters and the dispatcher bind one explicitly. A session that flushes changes without
one fails: no write goes unaudited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from mes.db.transaction import REQUEST_STATE_KEY

SESSION_KEY = "mes.audit"


@dataclass
class AuditContext:
    actor: str
    role: str
    operation: str
    at: datetime
    request_id: str | None = None
    reason: str | None = None
    # Set by an e-signature; operations that require one refuse to flush without it.
    signature_required: bool = False
    signature_meaning: str | None = None
    signature_method: str | None = None


def bind(session: Any, context: AuditContext) -> None:
    """Attach ``context`` to a Session or AsyncSession."""
    session.info[SESSION_KEY] = context


def context_of(session: Session) -> AuditContext | None:
    found = session.info.get(SESSION_KEY)
    if isinstance(found, AuditContext):
        return found
    state = session.info.get(REQUEST_STATE_KEY)
    from_request = getattr(state, "audit", None) if state is not None else None
    return from_request if isinstance(from_request, AuditContext) else None
