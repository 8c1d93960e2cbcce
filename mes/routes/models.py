from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
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
from mes.products.models import Product


class RouteVersionStatus(enum.StrEnum):
    DRAFT = "draft"
    # Signed for activation at a future effective time; becomes active when that time comes.
    PENDING = "pending"
    ACTIVE = "active"
    OBSOLETE = "obsolete"


class Route(TimestampMixin, Base):
    """A process flow of a product; its content lives in versions."""

    __tablename__ = "route"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id"), index=True)

    product: Mapped[Product] = relationship()
    versions: Mapped[list[RouteVersion]] = relationship(
        back_populates="route", order_by="RouteVersion.version"
    )


class RouteVersion(TimestampMixin, Base):
    """One version of a route. Lots keep the version they started on."""

    __tablename__ = "route_version"
    __table_args__ = (
        UniqueConstraint("route_id", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            "status = 'draft' OR (activated_at IS NOT NULL AND effective_at IS NOT NULL)",
            name="activated_has_time",
        ),
        # At most one active version per route, enforced by the database.
        Index(
            "uq_route_version_one_active",
            "route_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    route_id: Mapped[int] = mapped_column(ForeignKey("route.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[RouteVersionStatus] = mapped_column(
        enum_type(RouteVersionStatus, "route_version_status"), default=RouteVersionStatus.DRAFT
    )
    created_by: Mapped[str] = mapped_column(String(64))
    # activated_at: when the engineer signed; effective_at: from when new lots take it.
    activated_at: Mapped[datetime | None]
    activated_by: Mapped[str | None] = mapped_column(String(64))
    effective_at: Mapped[datetime | None]
    notes: Mapped[str | None] = mapped_column(Text)

    route: Mapped[Route] = relationship(back_populates="versions")
    steps: Mapped[list[Step]] = relationship(
        back_populates="route_version", order_by="Step.sequence", cascade="all, delete-orphan"
    )


class Step(Base):
    """One operation of a route version.

    Q-time and rework targets name other steps of the same version by sequence number, so a
    version can be copied (or imported into another fab) without remapping row ids.
    """

    __tablename__ = "step"
    __table_args__ = (
        UniqueConstraint("route_version_id", "sequence"),
        CheckConstraint("sequence >= 1", name="sequence_positive"),
        CheckConstraint("process_time_s >= 0", name="process_time_nonnegative"),
        CheckConstraint("sampling_rate >= 0 AND sampling_rate <= 1", name="sampling_rate_range"),
        CheckConstraint(
            "(qtime_to_sequence IS NULL) = (qtime_max_s IS NULL)", name="qtime_complete"
        ),
        CheckConstraint(
            "qtime_to_sequence IS NULL OR qtime_to_sequence > sequence", name="qtime_forward"
        ),
        CheckConstraint("qtime_max_s IS NULL OR qtime_max_s > 0", name="qtime_positive"),
        CheckConstraint(
            "qtime_min_s IS NULL OR (qtime_max_s IS NOT NULL AND qtime_min_s >= 0"
            " AND qtime_min_s < qtime_max_s)",
            name="qtime_min_range",
        ),
        CheckConstraint("rework_limit >= 0", name="rework_limit_nonnegative"),
        CheckConstraint(
            "rework_to_sequence IS NULL OR rework_to_sequence <= sequence",
            name="rework_backward",
        ),
        CheckConstraint(
            "batch_min IS NULL OR (batch_min >= 1 AND batch_max >= batch_min)",
            name="batch_range",
        ),
        CheckConstraint(
            "same_tool_as_sequence IS NULL OR same_tool_as_sequence < sequence",
            name="dedication_backward",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    route_version_id: Mapped[int] = mapped_column(
        ForeignKey("route_version.id", ondelete="CASCADE"), index=True
    )
    sequence: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255))
    tool_group_id: Mapped[int] = mapped_column(ForeignKey("tool_group.id"), index=True)
    # Logical recipe name; the recipe and version to run are resolved by context at track-in.
    # A draft may leave it empty; activation refuses a step without one.
    recipe_name: Mapped[str | None] = mapped_column(String(64))
    process_time_s: Mapped[int] = mapped_column(Integer)
    # Batch size in lots, for batch tools only.
    batch_min: Mapped[int | None] = mapped_column(Integer)
    batch_max: Mapped[int | None] = mapped_column(Integer)
    # Q-time: a lot that leaves this step must start step qtime_to_sequence within qtime_max_s.
    qtime_to_sequence: Mapped[int | None] = mapped_column(Integer)
    qtime_max_s: Mapped[int | None] = mapped_column(Integer)
    # ... and not before qtime_min_s (a wait the process needs, e.g. a cool-down or outgassing).
    qtime_min_s: Mapped[int | None] = mapped_column(Integer)
    rework_to_sequence: Mapped[int | None] = mapped_column(Integer)
    # Reworks allowed from this step before the lot goes on hold instead.
    rework_limit: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    # Fraction of lots that run the step; the others skip it.
    sampling_rate: Mapped[float] = mapped_column(Float, default=1.0)
    # The tool setup the step needs (setup avoidance in dispatching; SMT2020 SETUP).
    setup: Mapped[str | None] = mapped_column(String(32))
    # Lens/tool dedication: the step runs on the tool that ran this earlier step.
    same_tool_as_sequence: Mapped[int | None] = mapped_column(Integer)

    route_version: Mapped[RouteVersion] = relationship(back_populates="steps")
    tool_group: Mapped[ToolGroup] = relationship()
