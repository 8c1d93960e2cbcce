from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.db.base import Base, BigIntPK, TimestampMixin
from mes.db.types import enum_type
from mes.fabs.models import Fab


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

    fab: Mapped[Fab] = relationship()
