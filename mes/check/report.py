"""What the invariant checker reports: violations, each with the rows involved."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which (``kind``), what, and the rows involved (as dicts)."""

    kind: str
    message: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "rows": self.rows}


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # rows looked at, per table

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations}


def plain(value: Any) -> Any:
    """An enum column read through Core as its plain value (SQLite and PostgreSQL alike)."""
    return getattr(value, "value", value)


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return plain(value)


def row_dict(row: Any) -> dict[str, Any]:
    return {k: _json(v) for k, v in row._mapping.items()}
