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
from mes.equipment.models import Equipment
from mes.fabs.models import Fab
from mes.lots.states import (
    FutureActionKind,
    GenealogyRelation,
    LotState,
    LotType,
    PriorityClass,
    QTimeStatus,
    WaferState,
)
from mes.products.models import Product
from mes.routes.models import RouteVersion, Step

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
        # A lot is on a tool exactly while it runs.
        CheckConstraint(
            "(state = 'Running') = (equipment_id IS NOT NULL)", name="running_iff_on_tool"
        ),
        CheckConstraint(
            "(state = 'InTransit') = (destination_fab_id IS NOT NULL)",
            name="in_transit_iff_destination",
        ),
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
    # What the lot is for (mes.lots.type_rules): set at start, changed by an audited operation.
    lot_type: Mapped[LotType] = mapped_column(
        enum_type(LotType, "lot_type"), default=LotType.PRODUCTION, server_default="production"
    )
    due_at: Mapped[datetime | None]
    wafer_count: Mapped[int] = mapped_column(Integer)
    carrier_id: Mapped[int | None] = mapped_column(ForeignKey("carrier.id"), index=True)
    parent_lot_id: Mapped[int | None] = mapped_column(ForeignKey("lot.id"), index=True)
    equipment_id: Mapped[int | None] = mapped_column(ForeignKey("equipment.id"), index=True)
    destination_fab_id: Mapped[int | None] = mapped_column(ForeignKey("fab.id"))
    started_at: Mapped[datetime]
    # When the lot arrived at its current step (queue time, FIFO) and when it went on its tool.
    step_entered_at: Mapped[datetime]
    tracked_in_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    # When the lot tracked out of its last step while holds kept it: it stays OnHold there and
    # completes when its last hold is released (held material never leaves silently).
    route_completed_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1)

    fab: Mapped[Fab] = relationship(foreign_keys=[fab_id])
    destination_fab: Mapped[Fab | None] = relationship(foreign_keys=[destination_fab_id])
    equipment: Mapped[Equipment | None] = relationship()
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
    # None once the wafer has left its carrier (scrapped): its slot is free for others.
    slot: Mapped[int | None] = mapped_column(Integer)
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
    __table_args__ = (
        Index("ix_lot_event_lot_time", "lot_id", "occurred_at"),
        # The morning reports read a range of days across all lots (mes.reports.morning).
        Index("ix_lot_event_time", "occurred_at"),
    )

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


class HoldCode(TimestampMixin, Base):
    """Why a lot can be held, and which role may release such a hold."""

    __tablename__ = "hold_code"
    __audit_key__ = "code"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    description: Mapped[str] = mapped_column(String(255))
    release_role: Mapped[str] = mapped_column(String(32))


class LotHold(Base):
    """One hold on a lot; a lot may carry several, and is released when all are cleared."""

    __tablename__ = "lot_hold"
    __table_args__ = (
        Index("ix_lot_hold_active", "lot_id", "released_at"),
        CheckConstraint("(released_at IS NULL) = (released_by IS NULL)", name="release_recorded"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    hold_code_id: Mapped[int] = mapped_column(ForeignKey("hold_code.id"))
    step_id: Mapped[int | None] = mapped_column(ForeignKey("step.id"))
    reason: Mapped[str] = mapped_column(Text)
    placed_by: Mapped[str] = mapped_column(String(64))
    placed_at: Mapped[datetime]
    released_by: Mapped[str | None] = mapped_column(String(64))
    released_at: Mapped[datetime | None]
    release_reason: Mapped[str | None] = mapped_column(Text)

    hold_code: Mapped[HoldCode] = relationship()
    lot: Mapped[Lot] = relationship()


class FutureAction(Base):
    """A hold armed at a later step of one lot."""

    __tablename__ = "lot_future_action"
    __table_args__ = (Index("ix_lot_future_action_open", "lot_id", "done_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    step_id: Mapped[int] = mapped_column(ForeignKey("step.id"))
    kind: Mapped[FutureActionKind] = mapped_column(
        enum_type(FutureActionKind, "future_action_kind")
    )
    hold_code_id: Mapped[int] = mapped_column(ForeignKey("hold_code.id"))
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    # Set when it fired or was cancelled.
    done_at: Mapped[datetime | None]
    cancelled: Mapped[bool] = mapped_column(default=False)

    hold_code: Mapped[HoldCode] = relationship()
    step: Mapped[Step] = relationship()


class QTimeWindow(Base):
    """A queue-time window a lot opened on leaving one step, to be met at a later one."""

    __tablename__ = "lot_qtime"
    __table_args__ = (Index("ix_lot_qtime_open", "lot_id", "status"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    from_step_id: Mapped[int] = mapped_column(ForeignKey("step.id"))
    to_step_id: Mapped[int] = mapped_column(ForeignKey("step.id"))
    opened_at: Mapped[datetime]
    deadline_at: Mapped[datetime]
    # A minimum Q-time: the closing step may not start before this (None: no minimum).
    earliest_at: Mapped[datetime | None]
    status: Mapped[QTimeStatus] = mapped_column(enum_type(QTimeStatus, "qtime_status"))
    closed_at: Mapped[datetime | None]


class ReworkCount(Base):
    """How often a lot was sent back from one step."""

    __tablename__ = "lot_rework"
    __table_args__ = (
        UniqueConstraint("lot_id", "step_id"),
        CheckConstraint("count >= 1", name="count_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    step_id: Mapped[int] = mapped_column(ForeignKey("step.id"))
    count: Mapped[int] = mapped_column(Integer)


class Genealogy(Base):
    """Parent and child lots of splits and merges (ISA-95 AssembledFromLot)."""

    __tablename__ = "lot_genealogy"
    __table_args__ = (
        Index("ix_lot_genealogy_parent", "parent_lot_id"),
        Index("ix_lot_genealogy_child", "child_lot_id"),
        CheckConstraint("parent_lot_id <> child_lot_id", name="not_self"),
        CheckConstraint("wafer_count >= 1", name="wafers_moved"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    parent_lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    child_lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    relation: Mapped[GenealogyRelation] = mapped_column(
        enum_type(GenealogyRelation, "genealogy_relation")
    )
    wafer_count: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime]


class LotTransfer(Base):
    """A lot shipped from one fab to another."""

    __tablename__ = "lot_transfer"
    __table_args__ = (
        CheckConstraint("from_fab_id <> to_fab_id", name="between_fabs"),
        CheckConstraint("(received_at IS NULL) = (received_by IS NULL)", name="receipt_recorded"),
        CheckConstraint(
            "(recalled_at IS NULL) = (recalled_by IS NULL)"
            " AND (recalled_at IS NULL) = (recall_reason IS NULL)",
            name="recall_recorded",
        ),
        CheckConstraint("received_at IS NULL OR recalled_at IS NULL", name="received_or_recalled"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"), index=True)
    from_fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    to_fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    # Every fab-owned row carries its fab: the transfer belongs to the shipping fab.
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    shipped_at: Mapped[datetime]
    shipped_by: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime | None]
    received_by: Mapped[str | None] = mapped_column(String(64))
    # Called back by the shipping fab before the destination received it.
    recalled_at: Mapped[datetime | None]
    recalled_by: Mapped[str | None] = mapped_column(String(64))
    recall_reason: Mapped[str | None] = mapped_column(String(500))


class LotCounter(Base):
    """Next number of the business lot ids of one year (L26-0001 …)."""

    __tablename__ = "lot_counter"
    __audit_exclude__ = True

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_number: Mapped[int] = mapped_column(Integer)
