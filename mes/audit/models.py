from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mes.db.base import Base, BigIntPK


class AuditEvent(Base):
    """One changed row of one business operation. Append-only.

    Writers insert with the chain columns empty (no contention between concurrent
    transactions); the sealer then links committed records in the order it finds them
    (``chain_seq``, ``prev_hash``, ``hash``). See mes/audit/chain.py for what that guarantees.
    """

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_target", "target_type", "target_id"),
        Index("ix_audit_event_occurred_at", "occurred_at"),
        Index("uq_audit_event_chain_seq", "chain_seq", unique=True),
        CheckConstraint("(chain_seq IS NULL) = (hash IS NULL)", name="sealed_fields_together"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    occurred_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(96))
    action: Mapped[str] = mapped_column(String(8))  # insert / update / delete
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str] = mapped_column(String(96))
    fab_id: Mapped[int | None] = mapped_column(index=True)
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    reason: Mapped[str | None] = mapped_column(Text)
    # E-signature: what the signer meant (e.g. "approval") and how the signature was given.
    signature_meaning: Mapped[str | None] = mapped_column(String(32))
    signature_method: Mapped[str | None] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(64))
    chain_seq: Mapped[int | None] = mapped_column(BigInteger)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


class AuditChainHead(Base):
    """The last sealed record (one row): truncating the chain's tail shows up against it."""

    __tablename__ = "audit_chain_head"
    __audit_exclude__ = True
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime]
