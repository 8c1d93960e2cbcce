from __future__ import annotations

from datetime import datetime
from typing import Any

from mes.kit.api import ReadModel


class AuditEventRead(ReadModel):
    id: int
    occurred_at: datetime
    actor: str
    role: str
    operation: str
    action: str
    target_type: str
    target_id: str
    fab_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None
    signature_meaning: str | None
    signature_method: str | None
    request_id: str | None
    chain_seq: int | None
    hash: str | None
