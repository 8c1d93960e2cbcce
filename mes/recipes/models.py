from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
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

    recipe: Mapped[Recipe] = relationship(back_populates="versions")


class RecipeQualification(TimestampMixin, Base):
    """A recipe version qualified on a tool (or on one chamber of it), optionally until a date."""

    __tablename__ = "recipe_qualification"
    __table_args__ = (
        ForeignKeyConstraint(["equipment_id", "fab_id"], ["equipment.id", "equipment.fab_id"]),
        # One qualification per (version, tool) and per (version, tool, chamber); two partial
        # indexes because NULL chambers are distinct in a plain unique constraint.
        Index(
            "uq_recipe_qualification_tool",
            "recipe_version_id",
            "equipment_id",
            unique=True,
            sqlite_where=text("chamber_id IS NULL"),
            postgresql_where=text("chamber_id IS NULL"),
        ),
        Index(
            "uq_recipe_qualification_chamber",
            "recipe_version_id",
            "equipment_id",
            "chamber_id",
            unique=True,
            sqlite_where=text("chamber_id IS NOT NULL"),
            postgresql_where=text("chamber_id IS NOT NULL"),
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

    recipe_version: Mapped[RecipeVersion] = relationship()
