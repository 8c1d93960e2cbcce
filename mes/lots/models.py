from __future__ import annotations

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
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.db.base import Base, BigIntPK, TimestampMixin
from mes.db.types import enum_type
from mes.durables.models import Carrier
from mes.fabs.models import Fab
from mes.lots.states import LotState, PriorityClass, WaferState
from mes.routes.models import Product, RouteVersion, Step

_FINAL = "('Completed', 'Scrapped', 'Terminated')"


class Lot(TimestampMixin, Base):
    """A lot of wafers travelling one route version, owned by the fab it is in."""

    __tablename__ = "lot"
    __table_args__ = (
        UniqueConstraint("id", "fab_id"),
        CheckConstraint("wafer_count BETWEEN 0 AND 25", name="wafer_count_range"),
        # A lot that is still in the line is always at some step.
        CheckConstraint(
            f"state IN {_FINAL} OR current_step_id IS NOT NULL", name="active_lot_has_step"
        ),
        CheckConstraint(f"(state IN {_FINAL}) = (ended_at IS NOT NULL)", name="ended_iff_final"),
        Index("ix_lot_fab_state", "fab_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("product.id"), index=True)
    route_version_id: Mapped[int] = mapped_column(ForeignKey("route_version.id"), index=True)
    current_step_id: Mapped[int | None] = mapped_column(ForeignKey("step.id"), index=True)
    state: Mapped[LotState] = mapped_column(enum_type(LotState, "lot_state"))
    priority_class: Mapped[PriorityClass] = mapped_column(
        enum_type(PriorityClass, "priority_class"), default=PriorityClass.NORMAL
    )
    due_at: Mapped[datetime | None]
    wafer_count: Mapped[int] = mapped_column(Integer)
    carrier_id: Mapped[int | None] = mapped_column(ForeignKey("carrier.id"), index=True)
    parent_lot_id: Mapped[int | None] = mapped_column(ForeignKey("lot.id"), index=True)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1)

    fab: Mapped[Fab] = relationship()
    product: Mapped[Product] = relationship()
    route_version: Mapped[RouteVersion] = relationship()
    current_step: Mapped[Step | None] = relationship()
    carrier: Mapped[Carrier | None] = relationship()
    parent: Mapped[Lot | None] = relationship(remote_side=[id])
    wafers: Mapped[list[Wafer]] = relationship(
        back_populates="lot",
        order_by="Wafer.slot",
        foreign_keys="Wafer.lot_id",
        primaryjoin="Lot.id == Wafer.lot_id",
    )

    # SQLAlchemy types this as an instance attribute, hence no ClassVar.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Wafer(TimestampMixin, Base):
    """One substrate, in a slot of its lot's carrier."""

    __tablename__ = "wafer"
    __table_args__ = (
        UniqueConstraint("lot_id", "slot"),
        CheckConstraint("slot BETWEEN 1 AND 25", name="slot_range"),
        # A wafer lives in its lot's fab; moving a lot between fabs carries its wafers along.
        ForeignKeyConstraint(["lot_id", "fab_id"], ["lot.id", "lot.fab_id"], onupdate="CASCADE"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    scribe_id: Mapped[str] = mapped_column(String(32), unique=True)
    lot_id: Mapped[int] = mapped_column(index=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    slot: Mapped[int] = mapped_column(Integer)
    state: Mapped[WaferState] = mapped_column(
        enum_type(WaferState, "wafer_state"), default=WaferState.ACTIVE
    )

    lot: Mapped[Lot] = relationship(
        back_populates="wafers", foreign_keys=[lot_id], primaryjoin="Lot.id == Wafer.lot_id"
    )


class LotEvent(Base):
    """Append-only history of every lot transition; corrections are new events, never edits."""

    __tablename__ = "lot_event"
    # A history record in its own right; the lot row change it accompanies is audited.
    __audit_exclude__ = True
    __table_args__ = (Index("ix_lot_event_lot_time", "lot_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    # The fab where the event happened; stays what it was if the lot later moves.
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    event_type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    step_id: Mapped[int | None] = mapped_column(ForeignKey("step.id"))
    equipment_id: Mapped[int | None] = mapped_column(ForeignKey("equipment.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    request_id: Mapped[str | None] = mapped_column(String(64))
