from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, Field, field_validator

from mes.equipment.models import LoadPortTransferState, StateChangeSource
from mes.equipment.states import E10State
from mes.kit.api import CodeStr, Name

ChamberName = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_\-]+$")]


class EquipmentCreate(BaseModel):
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


class EquipmentUpdate(BaseModel):
    """Master-data changes. ``version`` is the one the caller read (optimistic locking)."""

    version: int = Field(ge=1, le=2**31 - 1)
    name: Name | None = None
    vendor: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=64)
    opcua_endpoint: str | None = Field(default=None, max_length=255, pattern=r"^opc\.tcp://[^\s]+$")
    max_lots: int | None = Field(default=None, ge=1, le=50)


class StateChange(BaseModel):
    version: int = Field(ge=1, le=2**31 - 1)
    state: E10State
    substate: str | None = Field(default=None, max_length=48)
    chamber: ChamberName | None = None
    reason: str | None = Field(default=None, max_length=2000)
    # When it happened on the floor, if earlier than now (e.g. a tool that reports late).
    occurred_at: AwareDatetime | None = None


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
