"""Job orders sent to tools, with what the tools reported about each wafer and process value."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.db.base import Base, BigIntPK, TimestampMixin
from mes.db.types import enum_type
from mes.equipment.models import Equipment
from mes.jobs.states import JobCommand, JobStatus
from mes.lots.models import Lot
from mes.recipes.models import RecipeVersion


class EquipmentJobLot(Base):
    """A lot of a job order: one per job on most tools, several for a batch (furnace, wet
    bench) that the tool runs together. ``position`` 1 is the job's lead lot (``lot_id``)."""

    __tablename__ = "equipment_job_lot"
    __table_args__ = (Index("ix_equipment_job_lot_lot_id", "lot_id"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("equipment_job.id"), primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)

    lot: Mapped[Lot] = relationship()


class EquipmentJob(TimestampMixin, Base):
    """One job order on one tool, for one lot or a batch of lots: the E94-like control job and
    the outbox row.

    ``job_order_id`` is what the tool knows the job by (deterministic: lead lot, step,
    attempt); ``lot_id`` is the lead lot, ``members`` every lot of the job in batch order.
    ``command`` is an operator request (abort, pause, resume) waiting for the owning adapter.
    """

    __tablename__ = "equipment_job"
    __audit_key__ = "job_order_id"
    __table_args__ = (
        Index("ix_equipment_job_tool_status", "equipment_id", "status"),
        Index("ix_equipment_job_lot", "lot_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    job_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lot.id"))
    step_id: Mapped[int] = mapped_column(ForeignKey("step.id"))
    recipe_version_id: Mapped[int] = mapped_column(ForeignKey("recipe_version.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[JobStatus] = mapped_column(enum_type(JobStatus, "job_status"))
    command: Mapped[JobCommand | None] = mapped_column(enum_type(JobCommand, "job_command"))
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    sent_by: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    wafers_processed: Mapped[int | None] = mapped_column(Integer)
    # The tool's last job status event applied (its per-tool Sequence), for diagnosis.
    tool_state: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)

    equipment: Mapped[Equipment] = relationship()
    lot: Mapped[Lot] = relationship()
    recipe_version: Mapped[RecipeVersion] = relationship()
    members: Mapped[list[EquipmentJobLot]] = relationship(order_by=EquipmentJobLot.position)


class JobWaferResult(Base):
    """What the tool reported for one wafer of a job (E90 end state, chamber, measurements)."""

    __tablename__ = "job_wafer_result"
    # Measurement data, not a business change: the job and the lot history carry the decisions.
    __audit_exclude__ = True
    __table_args__ = (UniqueConstraint("job_id", "substrate_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("equipment_job.id"))
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    substrate_id: Mapped[str] = mapped_column(String(64))
    slot: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    chamber: Mapped[str | None] = mapped_column(String(32))
    measurements: Mapped[dict[str, Any] | None]
    recorded_at: Mapped[datetime]


class ProcessValueSummary(Base):
    """Statistics of one process value over one wafer (or the whole job: ``substrate_id`` "")
    as the tool sampled it: the input SPC will chart. Raw samples stay in the adapter."""

    __tablename__ = "process_value_summary"
    __audit_exclude__ = True
    __table_args__ = (UniqueConstraint("job_id", "substrate_id", "name"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("equipment_job.id"))
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    substrate_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    samples: Mapped[int] = mapped_column(Integer)
    mean: Mapped[float] = mapped_column(Float)
    minimum: Mapped[float] = mapped_column(Float)
    maximum: Mapped[float] = mapped_column(Float)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
