from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.db.base import Base, BigIntPK, TimestampMixin
from mes.db.types import enum_type
from mes.fabs.models import ToolGroup
from mes.recipes.rules import Kind as ParameterKind


class RecipeVersionStatus(enum.StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    OBSOLETE = "obsolete"


class Recipe(TimestampMixin, Base):
    """A logical recipe for one tool group; the parameters live in its versions."""

    __tablename__ = "recipe"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    tool_group_id: Mapped[int] = mapped_column(ForeignKey("tool_group.id"), index=True)
    description: Mapped[str | None] = mapped_column(Text)

    tool_group: Mapped[ToolGroup] = relationship()
    versions: Mapped[list[RecipeVersion]] = relationship(
        back_populates="recipe", order_by="RecipeVersion.version"
    )


class RecipeVersion(TimestampMixin, Base):
    __tablename__ = "recipe_version"
    __table_args__ = (
        UniqueConstraint("recipe_id", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            "status = 'draft' OR (approved_at IS NOT NULL AND approved_by IS NOT NULL)",
            name="approval_recorded",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipe.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[RecipeVersionStatus] = mapped_column(
        enum_type(RecipeVersionStatus, "recipe_version_status"),
        default=RecipeVersionStatus.DRAFT,
    )
    body: Mapped[dict[str, Any]]
    checksum: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_at: Mapped[datetime | None]
    obsoleted_by: Mapped[str | None] = mapped_column(String(64))
    obsoleted_at: Mapped[datetime | None]

    recipe: Mapped[Recipe] = relationship(back_populates="versions")


class RecipeQualification(TimestampMixin, Base):
    """A recipe version qualified on a tool (or on one chamber of it), optionally until a date."""

    __tablename__ = "recipe_qualification"
    __table_args__ = (
        ForeignKeyConstraint(["equipment_id", "fab_id"], ["equipment.id", "equipment.fab_id"]),
        # One standing qualification per (version, tool) and per (version, tool, chamber); two
        # partial indexes because NULL chambers are distinct in a plain unique constraint.
        # Disqualified rows stay as history, so a tool can be qualified again later.
        Index(
            "uq_recipe_qualification_tool",
            "recipe_version_id",
            "equipment_id",
            unique=True,
            sqlite_where=text("chamber_id IS NULL AND disqualified_at IS NULL"),
            postgresql_where=text("chamber_id IS NULL AND disqualified_at IS NULL"),
        ),
        Index(
            "uq_recipe_qualification_chamber",
            "recipe_version_id",
            "equipment_id",
            "chamber_id",
            unique=True,
            sqlite_where=text("chamber_id IS NOT NULL AND disqualified_at IS NULL"),
            postgresql_where=text("chamber_id IS NOT NULL AND disqualified_at IS NULL"),
        ),
        CheckConstraint(
            "expires_at IS NULL OR expires_at > qualified_at", name="expiry_after_start"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    recipe_version_id: Mapped[int] = mapped_column(ForeignKey("recipe_version.id"), index=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    equipment_id: Mapped[int] = mapped_column(index=True)
    chamber_id: Mapped[int | None] = mapped_column(ForeignKey("chamber.id"))
    qualified_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    qualified_by: Mapped[str] = mapped_column(String(64))
    disqualified_at: Mapped[datetime | None]
    disqualified_by: Mapped[str | None] = mapped_column(String(64))
    disqualify_reason: Mapped[str | None] = mapped_column(Text)

    recipe_version: Mapped[RecipeVersion] = relationship()


class RecipeParameterSpec(TimestampMixin, Base):
    """What a recipe of a tool group may set: one row per parameter the tools understand."""

    __tablename__ = "recipe_parameter_spec"
    __table_args__ = (
        UniqueConstraint("tool_group_id", "name"),
        CheckConstraint("lower IS NULL OR upper IS NULL OR lower <= upper", name="limits_ordered"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    tool_group_id: Mapped[int] = mapped_column(ForeignKey("tool_group.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[ParameterKind] = mapped_column(enum_type(ParameterKind, "parameter_kind"))
    unit: Mapped[str | None] = mapped_column(String(16))
    # The tool's hard limits; a recipe's own min/max must lie inside them.
    lower: Mapped[float | None] = mapped_column(Float)
    upper: Mapped[float | None] = mapped_column(Float)
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(String(255))


class RecipeContextRule(TimestampMixin, Base):
    """Which recipe a logical recipe name means in a context (product, step, group, tool, chamber).

    Empty context columns match anything; of all matching rules the most specific wins (see
    ``rules.PRECEDENCE``). ``context_key`` is the canonical text of the context, unique, because
    NULLs would make a plain unique constraint over the columns useless.
    """

    __tablename__ = "recipe_context_rule"
    __table_args__ = (
        CheckConstraint(
            "chamber_id IS NULL OR equipment_id IS NOT NULL", name="chamber_needs_tool"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    logical_recipe: Mapped[str] = mapped_column(String(64), index=True)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("product.id"))
    operation: Mapped[str | None] = mapped_column(String(64))
    tool_group_id: Mapped[int | None] = mapped_column(ForeignKey("tool_group.id"))
    equipment_id: Mapped[int | None] = mapped_column(ForeignKey("equipment.id"))
    chamber_id: Mapped[int | None] = mapped_column(ForeignKey("chamber.id"))
    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipe.id"))
    context_key: Mapped[str] = mapped_column(String(400), unique=True)
    created_by: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)

    recipe: Mapped[Recipe] = relationship()
