from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql import expression

from mes.db.base import Base, BigIntPK, TimestampMixin


class DispatchRuleSet(TimestampMixin, Base):
    """One version of the dispatching rule set of a scope: a fab (its default), an area of
    it, or a tool group in it. Versions are never edited: a change is a new version, which
    becomes the scope's active one (the database allows one active version per scope)."""

    __tablename__ = "dispatch_rule_set"
    __table_args__ = (
        UniqueConstraint("scope_key", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("area_id IS NULL OR tool_group_id IS NULL", name="one_scope"),
        Index(
            "uq_dispatch_rule_set_one_active",
            "scope_key",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )
    __audit_key__ = "label"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    area_id: Mapped[int | None] = mapped_column(ForeignKey("area.id"))
    tool_group_id: Mapped[int | None] = mapped_column(ForeignKey("tool_group.id"))
    # "F1", "F1/area/ETCH" or "F1/group/LITHO_193": one key per scope, for the unique indexes.
    scope_key: Mapped[str] = mapped_column(String(80))
    version: Mapped[int] = mapped_column(Integer)
    # {"rules": [{"rule": "priority", "weight": 1000, "params": {...}}, ...]}: see
    # policy.RuleSet.build, which validates it before it is stored.
    definition: Mapped[dict[str, Any]]
    active: Mapped[bool] = mapped_column(default=True)
    # A shadow set is ranked beside the scope's production set in every dispatch cycle and
    # only logged, never executed (its scope key ends in "#shadow", so it has its own versions
    # and its own one active version).
    shadow: Mapped[bool] = mapped_column(default=False, server_default=expression.false())
    created_by: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)

    @property
    def label(self) -> str:
        return f"{self.scope_key}@v{self.version}"


class SetupChange(TimestampMixin, Base):
    """Time to change a tool over from one setup to another ("*": from any setup)."""

    __tablename__ = "setup_change"
    __table_args__ = (
        UniqueConstraint("from_setup", "to_setup"),
        CheckConstraint("time_s >= 0", name="time_nonnegative"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    from_setup: Mapped[str] = mapped_column(String(32))
    to_setup: Mapped[str] = mapped_column(String(32))
    time_s: Mapped[int] = mapped_column(Integer)


class SetupMinRun(TimestampMixin, Base):
    """Lots a tool should run after changing over to a setup before changing again."""

    __tablename__ = "setup_min_run"
    __table_args__ = (CheckConstraint("min_run >= 1", name="min_run_positive"),)
    __audit_key__ = "setup"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    setup: Mapped[str] = mapped_column(String(32), unique=True)
    min_run: Mapped[int] = mapped_column(Integer)


class DispatchLeader(Base):
    """The lease that makes one dispatcher process the active one of a fab.

    Taken with a conditional UPDATE (ours already, or expired) or an INSERT (no row yet: the
    primary key lets one of two racing dispatchers win), renewed every cycle; a standby takes it
    over once ``expires_at`` has passed. Every decision transaction re-checks it (FOR SHARE on
    PostgreSQL), so a stalled leader that lost it requests nothing.
    """

    __tablename__ = "dispatch_leader"
    # Bookkeeping renewed every cycle, not a business change.
    __audit_exclude__ = True

    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[datetime]
    renewed_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class DispatchDecision(Base):
    """One dispatching decision for one tool in one cycle, with the list it came from.

    ``outcome``: ``requested`` (a job was requested for ``chosen_lot``), ``refused`` (the
    request was refused with ``refusal_code``), ``waiting`` (a batch worth waiting for),
    ``none`` (nothing offered), ``advisory`` (the fab is in advise mode: logged only),
    ``shadow`` (the shadow rule set's choice: never executed).
    """

    __tablename__ = "dispatch_decision"
    __audit_exclude__ = True  # an append-only log in its own right
    __table_args__ = (
        Index("ix_dispatch_decision_fab_time", "fab_id", "cycle_at"),
        Index("ix_dispatch_decision_tool_time", "equipment_id", "cycle_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    cycle_at: Mapped[datetime]
    rule_set: Mapped[str] = mapped_column(String(96))
    rule_set_version: Mapped[int] = mapped_column(Integer)
    chosen_lot: Mapped[str | None] = mapped_column(String(64))
    chosen_score: Mapped[float | None]
    # {"ranked": [{"rank", "lot", "score", "contributions": [{"rule", "contribution", "why"}]}]}
    top: Mapped[dict[str, Any]]
    # {"lot.on_hold": 3, ...}: every reason counted once per excluded lot
    excluded: Mapped[dict[str, Any]]
    outcome: Mapped[str] = mapped_column(String(16))
    refusal_code: Mapped[str | None] = mapped_column(String(64))
    # The job orders requested (comma-separated for a batch).
    job_order_id: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(128))
