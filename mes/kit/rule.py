"""The refusal that pure domain rules raise (no framework imports, so rules stay pure).

The API renders it as problem+json with its ``code``, like any MesError.
"""

from __future__ import annotations

from typing import Any


class RuleViolation(Exception):
    status = 409
    title = "Refused by a business rule"
    # Commit what the operation did before refusing (e.g. the hold placed on a lot whose
    # Q-time expired at track-in), instead of rolling it back.
    keep_changes = False

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        keep_changes: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        if status is not None:
            self.status = status
        self.keep_changes = keep_changes
        self.extra = extra
