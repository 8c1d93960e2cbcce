"""Quality tables: data collection (EDC) plans and the values they collect, SPC charts with their
limits, points and violations, and the notifications the OCAP actions leave for other systems."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.db.base import Base, BigIntPK, TimestampMixin
from mes.db.types import enum_type


class PlanVersionStatus(enum.StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    OBSOLETE = "obsolete"


class EdcPlan(TimestampMixin, Base):
    """What to measure at a step: attached to an operation (optionally narrowed to a route, a
    product, a tool group); the parameters live in its versions."""

    __tablename__ = "edc_plan"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    operation: Mapped[str] = mapped_column(String(64), index=True)
    route_id: Mapped[int | None] = mapped_column(ForeignKey("route.id"))
    product_id: Mapped[int | None] = mapped_column(ForeignKey("product.id"))
    tool_group_id: Mapped[int | None] = mapped_column(ForeignKey("tool_group.id"))
    # Canonical text of the attachment, unique: two plans for one context would be ambiguous
    # (NULLs make a plain unique constraint over the columns useless).
    context_key: Mapped[str] = mapped_column(String(300), unique=True)
    description: Mapped[str | None] = mapped_column(Text)

    versions: Mapped[list[EdcPlanVersion]] = relationship(
        back_populates="plan", order_by="EdcPlanVersion.version"
    )


class EdcPlanVersion(TimestampMixin, Base):
    __tablename__ = "edc_plan_version"
    __table_args__ = (
        UniqueConstraint("plan_id", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            "status = 'draft' OR (approved_at IS NOT NULL AND approved_by IS NOT NULL)",
            name="approval_recorded",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("edc_plan.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[PlanVersionStatus] = mapped_column(
        enum_type(PlanVersionStatus, "edc_plan_version_status"), default=PlanVersionStatus.DRAFT
    )
    body: Mapped[dict[str, Any]]
    created_by: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_at: Mapped[datetime | None]
    obsoleted_by: Mapped[str | None] = mapped_column(String(64))
    obsoleted_at: Mapped[datetime | None]

    plan: Mapped[EdcPlan] = relationship(back_populates="versions")


class EdcValue(Base):
    """One collected value (a site of a wafer, or a wafer's process-value statistic) with the
    context it was measured in, as SPC charts select them."""

    __tablename__ = "edc_value"
    # Measurement data, not a business change: the lot's TRACK_OUT event and the violations
    # carry the decisions taken on it.
    __audit_exclude__ = True
    __table_args__ = (
        Index("ix_edc_value_parameter", "plan_id", "parameter", "collected_at"),
        Index("ix_edc_value_lot", "lot_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("edc_plan.id"))
    plan_version_id: Mapped[int] = mapped_column(ForeignKey("edc_plan_version.id"))
    parameter: Mapped[str] = mapped_column(String(64))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    slot: Mapped[int | None] = mapped_column(Integer)
    scribe_id: Mapped[str | None] = mapped_column(String(32))
    site: Mapped[int | None] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id"))
    step_id: Mapped[int] = mapped_column(ForeignKey("step.id"))
    operation: Mapped[str] = mapped_column(String(64))
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    chamber: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))  # "operator" or "tool"
    collected_at: Mapped[datetime]


class SpcChart(TimestampMixin, Base):
    """One control chart: a plan parameter in one context (any of product, step operation,
    tool, chamber; the keys given are the chart's context keys), its chart type, run rules and
    the OCAP actions a violation triggers."""

    __tablename__ = "spc_chart"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("edc_plan.id"), index=True)
    parameter: Mapped[str] = mapped_column(String(64))
    # {"tool": "F1-MET01", "product": "P1"}: values must match every key given.
    context: Mapped[dict[str, Any]]
    kind: Mapped[str] = mapped_column(String(16))  # limits.ChartKind
    subgroup: Mapped[str] = mapped_column(String(8))  # "wafer" or "lot"
    rules: Mapped[dict[str, Any]]  # {"enabled": [...], "run_length": 9}
    # {"*": ["hold_lot", "inhibit_tool", "notify"], "nelson_2": ["notify"]}
    actions: Mapped[dict[str, Any]]
    baseline_points: Mapped[int] = mapped_column(Integer)
    next_lots: Mapped[int] = mapped_column(Integer, default=3)  # for the hold_next_lots action
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str] = mapped_column(String(64))

    limits: Mapped[list[SpcLimits]] = relationship(
        back_populates="chart", order_by="SpcLimits.version"
    )


class SpcLimits(Base):
    """One version of a chart's control limits: computed from a baseline window and frozen, or
    set by an engineer. Never edited: a change is a new version (audited)."""

    __tablename__ = "spc_limits"
    __table_args__ = (
        UniqueConstraint("chart_id", "version"),
        CheckConstraint("sigma_within > 0", name="sigma_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    chart_id: Mapped[int] = mapped_column(ForeignKey("spc_chart.id"))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))  # "baseline" or "engineer"
    center: Mapped[float] = mapped_column(Float)
    sigma_within: Mapped[float] = mapped_column(Float)
    dispersion_center: Mapped[float] = mapped_column(Float)
    subgroup_size: Mapped[int] = mapped_column(Integer)
    baseline_first: Mapped[int | None] = mapped_column(Integer)  # point numbers of the window
    baseline_last: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime]

    chart: Mapped[SpcChart] = relationship(back_populates="limits")


class SpcPoint(Base):
    """One plotted point: a wafer's (or lot's) subgroup of values, with the limits version it
    was judged against (None: collected before the chart had limits)."""

    __tablename__ = "spc_point"
    __audit_exclude__ = True  # data; violations and their actions are audited
    __table_args__ = (
        UniqueConstraint("chart_id", "number"),
        # The console's charts of a tool and of a lot.
        Index("ix_spc_point_equipment", "equipment_id", "chart_id"),
        Index("ix_spc_point_lot", "lot_id", "chart_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    chart_id: Mapped[int] = mapped_column(ForeignKey("spc_chart.id"))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... along the chart
    value: Mapped[float] = mapped_column(Float)  # the mean of the subgroup
    dispersion: Mapped[float | None] = mapped_column(Float)  # range or s (None: one value)
    size: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, Any]]  # {"values": [...]}
    limits_version: Mapped[int | None] = mapped_column(Integer)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    slot: Mapped[int | None] = mapped_column(Integer)
    scribe_id: Mapped[str | None] = mapped_column(String(32))
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    chamber: Mapped[str | None] = mapped_column(String(32))
    collected_at: Mapped[datetime]


class SpcViolation(Base):
    """A run-rule violation on a chart, or an out-of-spec value of a plan: what happened, what
    the OCAP actions did, and the engineer's acknowledgement (the OCAP closure)."""

    __tablename__ = "spc_violation"
    __table_args__ = (
        Index("ix_spc_violation_open", "acknowledged_at", "detected_at"),
        CheckConstraint(
            "(acknowledged_at IS NULL) = (acknowledged_by IS NULL)", name="ack_recorded"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    chart_id: Mapped[int | None] = mapped_column(ForeignKey("spc_chart.id"), index=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("edc_plan.id"))
    parameter: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(16))  # run rule code, or "out_of_spec"
    point_number: Mapped[int | None] = mapped_column(Integer)
    points: Mapped[dict[str, Any]]  # {"points": [...]} or the out-of-spec values
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    chamber: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    actions: Mapped[dict[str, Any]]  # {"done": [{"action": ..., "result": ...}]}
    detected_at: Mapped[datetime]
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None]
    comment: Mapped[str | None] = mapped_column(Text)


class QualityNotification(Base):
    """What the ``notify`` action leaves for other systems (paging, e-mail, a host) to read."""

    __tablename__ = "quality_notification"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    violation_id: Mapped[int] = mapped_column(ForeignKey("spc_violation.id"))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class SpcToolWatch(Base):
    """The ``hold_next_lots`` action in force: the next ``lots_left`` lots tracked out of the
    tool are held too (what ran after the excursion began is suspect), until the violation is
    acknowledged."""

    __tablename__ = "spc_tool_watch"
    __table_args__ = (CheckConstraint("lots_left >= 0", name="lots_left_nonnegative"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"), index=True)
    violation_id: Mapped[int] = mapped_column(ForeignKey("spc_violation.id"))
    lots_left: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
