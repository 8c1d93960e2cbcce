"""The one error tree of the service.

Every refusal the service makes is a ``MesError`` with a stable machine-readable ``code``
(``<domain>.<condition>``) and an HTTP status. Routers never raise ``HTTPException``; they let
domain errors travel up to the problem+json handlers of ``mes.problems``. This module imports
no framework, so pure rule modules (``rules.py``, ``policy.py``…) raise these errors too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar


class MesError(Exception):
    """Base of every error the service reports to a caller."""

    status: int = 400
    code: str = "mes.error"
    title: str = "Request refused"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.headers = headers or {}
        self.extra = extra


class NotFound(MesError):
    status = 404
    code = "mes.not_found"
    title = "Not found"


class Conflict(MesError):
    status = 409
    code = "mes.conflict"
    title = "Conflict with the current state"


class StaleVersion(Conflict):
    """The caller changed a record on the basis of a version that is no longer current."""

    code = "mes.stale_version"
    title = "Stale version"


class InvalidInput(MesError):
    status = 422
    code = "mes.invalid_input"
    title = "Invalid input"


class Unauthenticated(MesError):
    """No valid credentials: the caller must (re-)authenticate."""

    status = 401
    code = "auth.unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail, code=code, headers={"WWW-Authenticate": "Bearer"}, **extra)


class Forbidden(MesError):
    """Authenticated, but the caller's roles do not allow the operation."""

    status = 403
    code = "auth.forbidden"
    title = "Not allowed"


class TooManyAttempts(MesError):
    status = 429
    code = "auth.locked"
    title = "Too many failed attempts"


class RuleViolation(MesError):
    """A refusal raised by a pure domain rule, named by its code (``lot.on_hold``...)."""

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
        super().__init__(detail, code=code, **extra)
        if status is not None:
            self.status = status
        self.keep_changes = keep_changes


F = TypeVar("F", bound=Callable[..., Any])


def refuses(*codes: str, status: int = 409) -> Callable[[F], F]:
    """Name the refusal codes a function raises with a code computed at run time.

    The API contract (``mes.contract``) reads literal codes from the source; a code taken from
    data (an exclusion's code, a table) is declared here instead, so that /openapi.json lists it.
    """

    def mark(fn: F) -> F:
        declared = set(getattr(fn, "__refuses__", ()))
        fn.__refuses__ = declared | {(status, code) for code in codes}  # type: ignore[attr-defined]
        return fn

    return mark
