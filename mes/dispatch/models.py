from __future__ import annotations

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


class FabTransferTime(TimestampMixin, Base):
    """How long a lot travels from one fab to another (where-next adds it to the wait)."""

    __tablename__ = "fab_transfer_time"
    __table_args__ = (
        UniqueConstraint("from_fab_id", "to_fab_id"),
        CheckConstraint("from_fab_id <> to_fab_id", name="between_fabs"),
        CheckConstraint("time_s >= 0", name="time_nonnegative"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    from_fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    to_fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    time_s: Mapped[int] = mapped_column(Integer)
