"""Writes one audit record per changed row, inside the flush that changes it.

Listening to the ORM flush, rather than asking every service to remember, means a new endpoint
cannot forget its audit record: its writes either carry an audit context or fail.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event, inspect
from sqlalchemy.orm import Mapper, Session, UOWTransaction
from sqlalchemy.orm.base import NO_VALUE

from mes.audit.context import context_of
from mes.audit.models import AuditEvent
from mes.db.types import to_jsonable

# Bookkeeping columns whose changes say nothing about the business.
_IGNORED = frozenset({"updated_at"})
AUDIT_TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]
REDACTED = "***"


class UnauditedChange(RuntimeError):
    """A session tried to write without saying who and why."""


class SignatureMissing(RuntimeError):
    """An operation that needs an e-signature tried to write without one."""


def _audited(obj: object) -> bool:
    return not getattr(type(obj), "__audit_exclude__", False) and not isinstance(obj, AuditEvent)


def _target_id(obj: object, mapper: Mapper[Any]) -> str:
    key = getattr(type(obj), "__audit_key__", None)
    if key is None and "code" in mapper.columns:
        key = "code"
    if key is not None:
        return str(getattr(obj, key))
    return ",".join(str(v) for v in mapper.primary_key_from_instance(obj))


def _snapshot(obj: object, mapper: Mapper[Any]) -> dict[str, Any]:
    state = inspect(obj)
    redact: frozenset[str] = getattr(type(obj), "__audit_redact__", frozenset())
    values: dict[str, Any] = {}
    for attr in mapper.column_attrs:
        value = state.dict.get(attr.key, NO_VALUE)
        if value is NO_VALUE:
            continue
        values[attr.key] = REDACTED if attr.key in redact and value is not None else value
    return dict(to_jsonable(values))


def _changes(obj: object, mapper: Mapper[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    state = inspect(obj)
    redact: frozenset[str] = getattr(type(obj), "__audit_redact__", frozenset())
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    # Only an attribute set since the row was loaded can have history: the session keeps its
    # loaded value in ``committed_state``. Asking every column for its history (a lot has ~30)
    # built a History object per column per flush for the two or three a move sets.
    touched = state.committed_state
    for attr in mapper.column_attrs:
        if attr.key in _IGNORED or attr.key not in touched:
            continue
        history = state.attrs[attr.key].history
        if not history.has_changes():
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else None
        if old == new:
            continue
        hide = attr.key in redact
        before[attr.key] = REDACTED if hide and old is not None else old
        after[attr.key] = REDACTED if hide and new is not None else new
    version_column = mapper.version_id_col
    if after and version_column is not None:
        # The mapper bumps the version counter outside attribute history: record it here, so
        # the trail says which version a change produced.
        key = mapper.get_property_by_column(version_column).key
        current = state.dict.get(key)
        if isinstance(current, int):
            before[key], after[key] = current - 1, current
    return to_jsonable(before), to_jsonable(after)


def _after_flush(session: Session, _flush_context: UOWTransaction) -> None:
    rows: list[tuple[str, object, dict[str, Any] | None, dict[str, Any] | None]] = []
    for obj in session.new:
        if _audited(obj):
            rows.append(("insert", obj, None, _snapshot(obj, inspect(obj).mapper)))
    for obj in session.dirty:
        if _audited(obj):
            old, new = _changes(obj, inspect(obj).mapper)
            if old or new:
                rows.append(("update", obj, old, new))
    for obj in session.deleted:
        if _audited(obj):
            rows.append(("delete", obj, _snapshot(obj, inspect(obj).mapper), None))
    if not rows:
        return
    context = context_of(session)
    if context is None:
        kinds = sorted({type(obj).__name__ for _, obj, _, _ in rows})
        raise UnauditedChange(f"changes to {kinds} without an audit context")
    if context.signature_required and context.signature_method is None:
        raise SignatureMissing(f"operation {context.operation} requires an e-signature")
    records = []
    for action, obj, before, after in rows:
        mapper = inspect(obj).mapper
        records.append(
            {
                "occurred_at": context.at,
                "actor": context.actor,
                "role": context.role,
                "operation": context.operation,
                "action": action,
                "target_type": mapper.local_table.name,
                "target_id": _target_id(obj, mapper)[:96],
                "fab_id": inspect(obj).dict.get("fab_id"),
                "before": before,
                "after": after,
                "reason": context.reason,
                "signature_meaning": context.signature_meaning,
                "signature_method": context.signature_method,
                "request_id": context.request_id,
            }
        )
    # Core insert on the flush's own connection: same transaction, no nested ORM flush.
    session.connection().execute(AUDIT_TABLE.insert(), records)


_installed = False


def install() -> None:
    """Register the recorder on every ORM session (idempotent)."""
    global _installed
    if not _installed:
        event.listen(Session, "after_flush", _after_flush)
        _installed = True
