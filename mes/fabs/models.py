from __future__ import annotations

import enum

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.db.base import Base, BigIntPK, TimestampMixin
from mes.db.types import enum_type


class ProcessingKind(enum.StrEnum):
    """How a tool of the group handles wafers; it decides capacity and batching rules."""

    SINGLE_WAFER = "single_wafer"
    CLUSTER = "cluster"
    BATCH = "batch"
    WET_BENCH = "wet_bench"


class Fab(TimestampMixin, Base):
    """A fab (ISA-95 site) of the company's network."""

    __tablename__ = "fab"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    # IANA zone of the site: shift reports are local, stored times are UTC.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")

    areas: Mapped[list[Area]] = relationship(back_populates="fab", order_by="Area.code")


class Area(TimestampMixin, Base):
    """A production area of one fab (photo, etch, diffusion …)."""

    __tablename__ = "area"
    __table_args__ = (
        UniqueConstraint("fab_id", "code"),
        # Target of composite foreign keys that keep a tool in its area's fab.
        UniqueConstraint("id", "fab_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))

    fab: Mapped[Fab] = relationship(back_populates="areas")


class ToolGroup(TimestampMixin, Base):
    """A capability such as ``LITHO_193``, shared across fabs.

    Routes name tool groups, not tools; because a capability means the same in every fab, a
    route can run in any fab that has tools of the group (copy-exact), and where-next
    dispatching can compare fabs.
    """

    __tablename__ = "tool_group"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    processing_kind: Mapped[ProcessingKind] = mapped_column(
        enum_type(ProcessingKind, "processing_kind")
    )


class FabTransferTime(TimestampMixin, Base):
    """How long a lot travels from one fab to another: the expected arrival of a shipment, and
    the wait where-next and the dispatcher add for a lot in another fab."""

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
