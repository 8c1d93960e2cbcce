from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.db.base import Base, BigIntPK, TimestampMixin
from mes.db.types import enum_type
from mes.fabs.models import Fab
from mes.lots.models import Lot
from mes.lots.states import LotType
from mes.planning.rules import DueRule, RatePer
from mes.products.models import Product


class StartPlan(TimestampMixin, Base):
    """How a fab releases new lots of one product: at what rate, with which due date and
    priority mix, how many wafers, on which route. Master data: changed by people (audited,
    optimistic locking on ``version``), read by the releaser."""

    __tablename__ = "start_plan"
    __table_args__ = (
        CheckConstraint("rate > 0", name="rate_positive"),
        CheckConstraint("wafer_count >= 1", name="wafer_count_positive"),
        CheckConstraint("due_value > 0", name="due_value_positive"),
        CheckConstraint("catch_up_max >= 1", name="catch_up_positive"),
        CheckConstraint("max_wip IS NULL OR max_wip >= 1", name="max_wip_positive"),
        CheckConstraint("anchor_sequence >= 1", name="anchor_sequence_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id"), index=True)
    # None: the product's only route (as for POST /lots).
    route_code: Mapped[str | None] = mapped_column(String(32))
    rate: Mapped[float] = mapped_column(Float)
    rate_per: Mapped[RatePer] = mapped_column(enum_type(RatePer, "start_plan_rate_per"))
    wafer_count: Mapped[int] = mapped_column(Integer)
    due_rule: Mapped[DueRule] = mapped_column(enum_type(DueRule, "start_plan_due_rule"))
    due_value: Mapped[float] = mapped_column(Float)
    # {"normal": 80, "hot": 15, "super_hot": 5}: weights, not percentages.
    priority_mix: Mapped[dict[str, Any]]
    # The type of the lots it releases (monitor plans start monitor lots).
    lot_type: Mapped[LotType] = mapped_column(
        enum_type(LotType, "start_plan_lot_type"),
        default=LotType.PRODUCTION,
        server_default="production",
    )
    max_wip: Mapped[int | None] = mapped_column(Integer)
    catch_up_max: Mapped[int] = mapped_column(Integer, default=1)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    starts_at: Mapped[datetime]
    # The release grid: sequence ``anchor_sequence`` is due at ``anchor_at``; moved when the
    # rate or the start changes, so a new rate applies from the next release on.
    anchor_at: Mapped[datetime]
    anchor_sequence: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(default=True)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)

    fab: Mapped[Fab] = relationship()
    product: Mapped[Product] = relationship()

    # SQLAlchemy types this as an instance attribute, hence no ClassVar.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class StartPlanRelease(Base):
    """One slot of a plan, released: the lot it started. (plan, sequence) is unique, so a slot
    is released once whatever happens to the leases; ``skipped_before`` says how many older
    slots the catch-up cap gave up just before this one."""

    __tablename__ = "start_plan_release"
    __audit_exclude__ = True  # a log; the lot's START and its audit record tell the rest
    __table_args__ = (
        UniqueConstraint("start_plan_id", "sequence"),
        CheckConstraint("sequence >= 1", name="sequence_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    start_plan_id: Mapped[int] = mapped_column(ForeignKey("start_plan.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    slot_at: Mapped[datetime]
    released_at: Mapped[datetime]
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"), unique=True)
    priority_class: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime | None]
    skipped_before: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str] = mapped_column(String(128))

    lot: Mapped[Lot] = relationship()


class ReleaseLeader(Base):
    """The releaser's lease per fab (``mes.kit.lease``): only its holder releases the fab's
    plans, and every release transaction re-checks it."""

    __tablename__ = "release_leader"
    __audit_exclude__ = True  # bookkeeping renewed every cycle

    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[datetime]
    renewed_at: Mapped[datetime]
    expires_at: Mapped[datetime]
