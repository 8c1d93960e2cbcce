from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from mes.equipment.models import LoadPortTransferState, StateChangeSource
from mes.equipment.pm_rules import PmStatus, PmTrigger
from mes.equipment.states import E10State
from mes.kit.api import CodeStr, InputModel, Name, Timestamp

ChamberName = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_\-]+$")]


class EquipmentCreate(InputModel):
    code: CodeStr
    name: Name
    fab: CodeStr
    area: CodeStr
    tool_group: CodeStr
    vendor: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=64)
    opcua_endpoint: str | None = Field(default=None, max_length=255, pattern=r"^opc\.tcp://[^\s]+$")
    max_lots: int = Field(default=1, ge=1, le=50)
    chambers: list[ChamberName] = Field(default_factory=list, max_length=16)
    load_ports: int = Field(default=2, ge=0, le=16)

    @field_validator("chambers")
    @classmethod
    def _unique_chambers(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("chamber names must be unique")
        return names


class EquipmentUpdate(InputModel):
    """Master-data changes. ``version`` is the one the caller read (optimistic locking)."""

    version: int = Field(ge=1, le=2**31 - 1)
    name: Name | None = None
    vendor: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=64)
    opcua_endpoint: str | None = Field(default=None, max_length=255, pattern=r"^opc\.tcp://[^\s]+$")
    max_lots: int | None = Field(default=None, ge=1, le=50)


class StateChange(InputModel):
    version: int = Field(ge=1, le=2**31 - 1)
    state: E10State
    substate: str | None = Field(default=None, max_length=48)
    chamber: ChamberName | None = None
    reason: str | None = Field(default=None, max_length=2000)
    # When it happened on the floor, if earlier than now (e.g. a tool that reports late).
    occurred_at: Timestamp | None = None


class ChamberRead(BaseModel):
    name: str
    e10_state: E10State
    e10_substate: str


class LoadPortRead(BaseModel):
    port_number: int
    transfer_state: LoadPortTransferState


class EquipmentRead(BaseModel):
    code: str
    name: str
    fab: str
    area: str
    tool_group: str
    vendor: str | None
    model: str | None
    opcua_endpoint: str | None
    max_lots: int
    e10_state: E10State
    e10_substate: str
    state_since: datetime
    control_state: str | None = None
    # The last sign of life (a state report, or a healthy adapter session): what the silence
    # watchdog (MES_SIGNAL_TIMEOUT_S) measures from.
    last_signal_at: datetime | None = None
    version: int
    chambers: list[ChamberRead]
    load_ports: list[LoadPortRead]


class StateEventRead(BaseModel):
    chamber: str | None
    from_state: E10State | None
    to_state: E10State
    substate: str
    occurred_at: datetime
    recorded_at: datetime
    source: StateChangeSource
    actor: str
    reason: str | None


SubstateCode = Annotated[
    str, Field(min_length=5, max_length=48, pattern=r"^[A-Z]{3}\.[A-Z0-9_]{1,40}$")
]


class SubstateCreate(InputModel):
    code: SubstateCode
    description: str = Field(min_length=1, max_length=255)


class SubstateRead(BaseModel):
    code: str
    state: E10State
    description: str
    retired_at: datetime | None = None
    retired_by: str | None = None


class SignalReport(InputModel):
    """A sign of life from a tool's adapter, optionally with an alarm."""

    alarm: str | None = Field(default=None, max_length=64)
    # A breaking alarm stops the tool: it goes to UDT.ALARM.
    breaking: bool = False


class CorrectionCreate(InputModel):
    start_at: Timestamp
    end_at: Timestamp
    substate: SubstateCode
    chamber: ChamberName | None = None
    reason: str = Field(min_length=1, max_length=2000)


class CorrectionRead(BaseModel):
    chamber: str | None
    start_at: datetime
    end_at: datetime
    state: E10State
    substate: str
    recorded_at: datetime
    actor: str
    reason: str


class IntervalRead(BaseModel):
    start_at: datetime
    end_at: datetime
    state: E10State
    substate: str
    seconds: float


class PmPlanCreate(InputModel):
    code: CodeStr
    name: Name
    tool: CodeStr | None = None
    tool_group: CodeStr | None = None
    trigger: PmTrigger
    # In the trigger's unit: days (calendar), wafers, or process hours.
    interval: float = Field(gt=0, le=1e9)
    warning: float = Field(default=0, ge=0, le=1e9)
    starts_at: Timestamp | None = None


class PmPlanChange(InputModel):
    """Change a PM plan: its name, interval, warning, or whether it is in force. The change is
    audited; the plan's history of PMs done stays as it is."""

    name: Name | None = None
    interval: float | None = Field(default=None, gt=0, le=1e9)
    warning: float | None = Field(default=None, ge=0, le=1e9)
    active: bool | None = None


class PmPlanRead(BaseModel):
    code: str
    name: str
    tool: str | None
    tool_group: str | None
    trigger: PmTrigger
    interval: float
    warning: float
    unit: str
    starts_at: datetime
    active: bool


class PmStart(InputModel):
    plan: CodeStr


class PmComplete(InputModel):
    notes: str | None = Field(default=None, max_length=2000)


class PmRecordRead(BaseModel):
    plan: str
    tool: str
    started_at: datetime
    started_by: str
    completed_at: datetime | None
    completed_by: str | None
    notes: str | None


class PmStateRead(BaseModel):
    plan: str
    tool: str
    fab: str
    trigger: PmTrigger
    status: PmStatus
    used: float
    interval: float
    remaining: float
    unit: str
    due_at: datetime | None
    in_progress: bool


class OeeRead(BaseModel):
    """E79: oee = availability x performance x quality; performance = operational x rate."""

    total_s: float
    uptime_s: float
    productive_s: float
    units: int
    good_units: int
    theoretical_s: float
    theoretical_good_s: float
    availability: float | None
    operational_efficiency: float | None
    rate_efficiency: float | None
    performance: float | None
    quality: float | None
    oee: float | None


class MetricsRead(BaseModel):
    start: datetime
    end: datetime
    tools: list[str]
    chamber: str | None
    state_seconds: dict[E10State, float]
    total_s: float
    operations_s: float
    uptime_s: float
    downtime_s: float
    # Equipment-dependent failures (E10); UDT for other causes is reported apart.
    failures: int
    repairs: int
    other_failures: int
    other_udt_s: float
    pm_count: int
    pm_s: float
    total_uptime: float | None
    operational_uptime: float | None
    mtbf_p_s: float | None
    mttr_s: float | None
    mtpm_s: float | None
    operational_utilisation: float | None
    total_utilisation: float | None
    oee: OeeRead
