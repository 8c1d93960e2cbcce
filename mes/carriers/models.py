from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.db.base import Base, BigIntPK
from mes.db.types import JsonDocument, enum_type
from mes.durables.models import Carrier
from mes.fabs.models import Fab
from mes.lots.models import Lot


class SorterJobKind(enum.StrEnum):
    TRANSFER = "transfer"  # a lot's wafers into another carrier
    RESLOT = "reslot"  # new slots within the same carrier
    SPLIT = "split"  # chosen wafers into a child lot in another carrier
    MERGE = "merge"  # a lot's wafers into another lot's carrier


class SorterJob(Base):
    """One sorter operation, run as one MES transaction: which wafers went where.

    The lots' events say the same per lot; this row is the sorter's own record."""

    __tablename__ = "sorter_job"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    kind: Mapped[SorterJobKind] = mapped_column(enum_type(SorterJobKind, "sorter_job_kind"))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"), index=True)
    # The other lot: the split's child, the merge's source.
    other_lot_id: Mapped[int | None] = mapped_column(ForeignKey("lot.id"))
    source_carrier_id: Mapped[int | None] = mapped_column(ForeignKey("carrier.id"))
    target_carrier_id: Mapped[int | None] = mapped_column(ForeignKey("carrier.id"))
    # [[scribe id, from carrier, from slot, to carrier, to slot], ...]
    moves: Mapped[list[Any]] = mapped_column(JsonDocument)
    requested_by: Mapped[str] = mapped_column(String(64))
    completed_at: Mapped[datetime]

    fab: Mapped[Fab] = relationship()
    lot: Mapped[Lot] = relationship(foreign_keys=[lot_id])
    other_lot: Mapped[Lot | None] = relationship(foreign_keys=[other_lot_id])
    source_carrier: Mapped[Carrier | None] = relationship(foreign_keys=[source_carrier_id])
    target_carrier: Mapped[Carrier | None] = relationship(foreign_keys=[target_carrier_id])
