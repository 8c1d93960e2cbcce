from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.db.base import Base, BigIntPK, TimestampMixin
from mes.db.types import enum_type
from mes.durables.rules import CarrierLocation, DurableKind, DurableLocation, DurableState
from mes.equipment.models import Equipment, LoadPort
from mes.fabs.models import Fab, ToolGroup


class CarrierState(enum.StrEnum):
    AVAILABLE = "available"
    IN_USE = "in_use"
    DIRTY = "dirty"
    OUT_OF_SERVICE = "out_of_service"


class Carrier(TimestampMixin, Base):
    """A FOUP: 25 slots, located in one fab, cleaned after a number of uses."""

    __tablename__ = "carrier"
    __table_args__ = (
        CheckConstraint("capacity BETWEEN 1 AND 25", name="capacity_range"),
        CheckConstraint("uses_since_clean >= 0", name="uses_nonnegative"),
        CheckConstraint(
            "(location = 'load_port') = (load_port_id IS NOT NULL)", name="port_iff_at_port"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    capacity: Mapped[int] = mapped_column(Integer, default=25)
    state: Mapped[CarrierState] = mapped_column(
        enum_type(CarrierState, "carrier_state"), default=CarrierState.AVAILABLE
    )
    uses_since_clean: Mapped[int] = mapped_column(Integer, default=0)
    last_cleaned_at: Mapped[datetime | None]
    # Cleaning cycles done (a lot leaving the carrier makes it dirty; cleaning makes it available).
    cleanings: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Where it is (mes.carriers): a stocker (``stocker`` names it, None = not recorded), a
    # tool's load port (one carrier per port: the unique index), or travelling between them.
    location: Mapped[CarrierLocation] = mapped_column(
        enum_type(CarrierLocation, "carrier_location"),
        default=CarrierLocation.STOCKER,
        server_default=CarrierLocation.STOCKER.value,
    )
    stocker: Mapped[str | None] = mapped_column(String(32))
    load_port_id: Mapped[int | None] = mapped_column(ForeignKey("load_port.id"), unique=True)
    location_since: Mapped[datetime | None]

    fab: Mapped[Fab] = relationship()
    load_port: Mapped[LoadPort | None] = relationship()


class Durable(TimestampMixin, Base):
    """A reticle (mask) or probe card: where it is, how often it was used, whether usable."""

    __tablename__ = "durable"
    __table_args__ = (
        CheckConstraint("usage_count >= 0", name="usage_nonnegative"),
        CheckConstraint("usage_limit IS NULL OR usage_limit > 0", name="limit_positive"),
        CheckConstraint(
            "(location = 'tool') = (equipment_id IS NOT NULL)", name="tool_iff_at_tool"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[DurableKind] = mapped_column(enum_type(DurableKind, "durable_kind"))
    # The design a recipe names (mask layer, probe card type); several copies may share it.
    design: Mapped[str] = mapped_column(String(64), index=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    # The tool group it fits (a reticle fits one scanner type).
    tool_group_id: Mapped[int | None] = mapped_column(ForeignKey("tool_group.id"))
    state: Mapped[DurableState] = mapped_column(
        enum_type(DurableState, "durable_state"), default=DurableState.AVAILABLE
    )
    location: Mapped[DurableLocation] = mapped_column(
        enum_type(DurableLocation, "durable_location"), default=DurableLocation.LIBRARY
    )
    equipment_id: Mapped[int | None] = mapped_column(ForeignKey("equipment.id"), index=True)
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    usage_limit: Mapped[int | None] = mapped_column(Integer)
    location_since: Mapped[datetime]

    fab: Mapped[Fab] = relationship()
    equipment: Mapped[Equipment | None] = relationship()
    tool_group: Mapped[ToolGroup | None] = relationship()
