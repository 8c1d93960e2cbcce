from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
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
from mes.equipment.pm_rules import PmTrigger
from mes.equipment.states import E10State
from mes.fabs.models import Area, Fab, ToolGroup


class LoadPortTransferState(enum.StrEnum):
    """SEMI E87 load-port transfer state."""

    OUT_OF_SERVICE = "OutOfService"
    TRANSFER_BLOCKED = "TransferBlocked"
    READY_TO_LOAD = "ReadyToLoad"
    READY_TO_UNLOAD = "ReadyToUnload"


class StateChangeSource(enum.StrEnum):
    API = "api"  # an operator or technician
    TOOL = "tool"  # reported by the tool over OPC UA
    SYSTEM = "system"  # derived by the MES (track-in, PM start, missing signal)


class Equipment(TimestampMixin, Base):
    """A process tool of one fab, with its current E10 state."""

    __tablename__ = "equipment"
    __table_args__ = (
        UniqueConstraint("id", "fab_id"),
        # The area must be in the tool's own fab.
        ForeignKeyConstraint(["area_id", "fab_id"], ["area.id", "area.fab_id"]),
        CheckConstraint("max_lots >= 1", name="max_lots_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"), index=True)
    area_id: Mapped[int] = mapped_column(index=True)
    tool_group_id: Mapped[int] = mapped_column(ForeignKey("tool_group.id"), index=True)
    vendor: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(64))
    opcua_endpoint: Mapped[str | None] = mapped_column(String(255))
    # Lots the tool may hold at once: 1 for most tools, the batch size in lots for furnaces.
    max_lots: Mapped[int] = mapped_column(Integer, default=1)
    e10_state: Mapped[E10State] = mapped_column(
        enum_type(E10State, "e10_state"), default=E10State.SBY
    )
    e10_substate: Mapped[str] = mapped_column(String(48), default="SBY.NO_PRODUCT")
    state_since: Mapped[datetime]
    # SEMI E30 control state as the tool's adapter last read it (Offline, OnlineLocal,
    # OnlineRemote); None until an adapter has reported. Only OnlineRemote takes remote jobs.
    control_state: Mapped[str | None] = mapped_column(String(16))
    # Last time the tool (its adapter) or a person reported its state; the silence watchdog
    # puts a tool that should be up into UDT.NO_SIGNAL when this gets too old.
    last_signal_at: Mapped[datetime | None]
    # Wafers tracked in since installation: PM plans by wafer count measure against it.
    wafers_processed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The setup the tool is in (the last step it ran needed it) and lots run since changing to
    # it: setup avoidance and minimum runs in dispatching. Track-in keeps both.
    current_setup: Mapped[str | None] = mapped_column(String(32))
    setup_lots: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    version: Mapped[int] = mapped_column(Integer, default=1)

    fab: Mapped[Fab] = relationship()
    area: Mapped[Area] = relationship(
        foreign_keys=[area_id], primaryjoin=lambda: Area.id == Equipment.area_id
    )
    tool_group: Mapped[ToolGroup] = relationship()
    chambers: Mapped[list[Chamber]] = relationship(
        back_populates="equipment", order_by="Chamber.name", cascade="all, delete-orphan"
    )
    load_ports: Mapped[list[LoadPort]] = relationship(
        back_populates="equipment", order_by="LoadPort.port_number", cascade="all, delete-orphan"
    )

    # SQLAlchemy types this as an instance attribute, hence no ClassVar.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Chamber(TimestampMixin, Base):
    """A process module of a cluster tool; it has its own E10 state."""

    __tablename__ = "chamber"
    __table_args__ = (
        UniqueConstraint("equipment_id", "name"),
        ForeignKeyConstraint(
            ["equipment_id", "fab_id"], ["equipment.id", "equipment.fab_id"], ondelete="CASCADE"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    equipment_id: Mapped[int] = mapped_column(index=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    name: Mapped[str] = mapped_column(String(16))
    e10_state: Mapped[E10State] = mapped_column(
        enum_type(E10State, "e10_state"), default=E10State.SBY
    )
    e10_substate: Mapped[str] = mapped_column(String(48), default="SBY.NO_PRODUCT")

    equipment: Mapped[Equipment] = relationship(
        back_populates="chambers",
        foreign_keys=[equipment_id],
        primaryjoin=lambda: Equipment.id == Chamber.equipment_id,
    )


class LoadPort(TimestampMixin, Base):
    __tablename__ = "load_port"
    __table_args__ = (
        UniqueConstraint("equipment_id", "port_number"),
        ForeignKeyConstraint(
            ["equipment_id", "fab_id"], ["equipment.id", "equipment.fab_id"], ondelete="CASCADE"
        ),
        CheckConstraint("port_number BETWEEN 1 AND 16", name="port_number_range"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    equipment_id: Mapped[int] = mapped_column(index=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    port_number: Mapped[int] = mapped_column(Integer)
    transfer_state: Mapped[LoadPortTransferState] = mapped_column(
        enum_type(LoadPortTransferState, "load_port_transfer_state"),
        default=LoadPortTransferState.READY_TO_LOAD,
    )

    equipment: Mapped[Equipment] = relationship(
        back_populates="load_ports",
        foreign_keys=[equipment_id],
        primaryjoin=lambda: Equipment.id == LoadPort.equipment_id,
    )


class EquipmentStateEvent(Base):
    """Append-only E10 history of a tool or one of its chambers."""

    __tablename__ = "equipment_state_event"
    # A history record in its own right; the tool row change it accompanies is audited.
    __audit_exclude__ = True
    __table_args__ = (
        ForeignKeyConstraint(["equipment_id", "fab_id"], ["equipment.id", "equipment.fab_id"]),
        Index("ix_equipment_state_event_equipment_time", "equipment_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    equipment_id: Mapped[int] = mapped_column()
    chamber_id: Mapped[int | None] = mapped_column(ForeignKey("chamber.id"))
    from_state: Mapped[E10State | None] = mapped_column(enum_type(E10State, "from_state"))
    to_state: Mapped[E10State] = mapped_column(enum_type(E10State, "to_state"))
    substate: Mapped[str] = mapped_column(String(48))
    # When the change took effect on the floor; recorded_at is when the MES learned of it.
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    source: Mapped[StateChangeSource] = mapped_column(
        enum_type(StateChangeSource, "state_change_source")
    )
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)


class EquipmentSubstate(TimestampMixin, Base):
    """The configurable table of E10 substates (reason codes) a state change may name."""

    __tablename__ = "equipment_substate"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(48), unique=True)
    state: Mapped[E10State] = mapped_column(enum_type(E10State, "e10_state"))
    description: Mapped[str] = mapped_column(String(255))
    # Retired, not deleted: the state history still names it, new state changes may not.
    retired_at: Mapped[datetime | None]
    retired_by: Mapped[str | None] = mapped_column(String(64))


class EquipmentStateCorrection(Base):
    """A past interval re-qualified after the fact (e.g. NO_SIGNAL time explained).

    Append-only: the state events stay as they were recorded; history reads and metrics overlay
    the corrections on them, later corrections over earlier ones.
    """

    __tablename__ = "equipment_state_correction"
    __table_args__ = (
        ForeignKeyConstraint(["equipment_id", "fab_id"], ["equipment.id", "equipment.fab_id"]),
        Index("ix_equipment_state_correction_equipment", "equipment_id", "start_at"),
        CheckConstraint("end_at > start_at", name="interval_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    equipment_id: Mapped[int] = mapped_column()
    chamber_id: Mapped[int | None] = mapped_column(ForeignKey("chamber.id"))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    state: Mapped[E10State] = mapped_column(enum_type(E10State, "e10_state"))
    substate: Mapped[str] = mapped_column(String(48))
    recorded_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)


class PmPlan(TimestampMixin, Base):
    """A preventive-maintenance plan for one tool or every tool of a tool group."""

    __tablename__ = "pm_plan"
    __table_args__ = (
        CheckConstraint("(tool_group_id IS NULL) <> (equipment_id IS NULL)", name="one_scope"),
        CheckConstraint("interval_value > 0", name="interval_positive"),
        CheckConstraint(
            "warning_value >= 0 AND warning_value < interval_value", name="warning_range"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    tool_group_id: Mapped[int | None] = mapped_column(ForeignKey("tool_group.id"), index=True)
    equipment_id: Mapped[int | None] = mapped_column(ForeignKey("equipment.id"), index=True)
    trigger: Mapped[PmTrigger] = mapped_column(enum_type(PmTrigger, "pm_trigger"))
    # In the trigger's unit: days, wafers or process hours.
    interval_value: Mapped[float] = mapped_column(Float)
    warning_value: Mapped[float] = mapped_column(Float)
    # Calendar plans count from here for tools that have not had this PM yet.
    starts_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(64))

    tool_group: Mapped[ToolGroup | None] = relationship()
    equipment: Mapped[Equipment | None] = relationship()


class PmBaseline(Base):
    """Where a usage-based PM plan starts counting on a tool that had run before the plan
    existed: its wafer counter when the plan was created. Without it a new plan would count
    every wafer since installation and be due at once on every mature tool."""

    __tablename__ = "pm_baseline"

    pm_plan_id: Mapped[int] = mapped_column(ForeignKey("pm_plan.id"), primary_key=True)
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"), primary_key=True)
    wafers: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime]


class PmRecord(Base):
    """One PM performed on a tool: started (tool to SDT.PM), then completed (tool to SBY)."""

    __tablename__ = "pm_record"
    __table_args__ = (
        ForeignKeyConstraint(["equipment_id", "fab_id"], ["equipment.id", "equipment.fab_id"]),
        Index("ix_pm_record_plan_equipment", "pm_plan_id", "equipment_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    pm_plan_id: Mapped[int] = mapped_column(ForeignKey("pm_plan.id"))
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    equipment_id: Mapped[int] = mapped_column()
    started_at: Mapped[datetime]
    started_by: Mapped[str] = mapped_column(String(64))
    completed_at: Mapped[datetime | None]
    completed_by: Mapped[str | None] = mapped_column(String(64))
    # The tool's wafer counter when the PM completed: the next wafer-count PM measures from it.
    wafers_at_completion: Mapped[int | None] = mapped_column(Integer)
    notes: Mapped[str | None] = mapped_column(Text)

    pm_plan: Mapped[PmPlan] = relationship()


class EquipmentAlarm(Base):
    """One occurrence of an alarm a tool reported: raised, perhaps acknowledged, cleared.

    ``alarm_code`` is the tool's alarm id; at most one occurrence per tool and code is open
    (``cleared_at`` NULL), so a replayed alarm event (ConditionRefresh) finds it and adds nothing.
    """

    __tablename__ = "equipment_alarm"
    __table_args__ = (Index("ix_equipment_alarm_tool_code", "equipment_id", "alarm_code"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fab_id: Mapped[int] = mapped_column(ForeignKey("fab.id"))
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    alarm_code: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    severity: Mapped[int] = mapped_column(Integer)
    breaking: Mapped[bool] = mapped_column(Boolean)
    raised_at: Mapped[datetime]
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    cleared_at: Mapped[datetime | None]
    # What the MES did about it (from the alarm action table): "udt", "hold", "abort".
    actions: Mapped[str] = mapped_column(String(64), default="")
