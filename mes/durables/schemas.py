from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from mes.durables.models import CarrierState
from mes.durables.rules import CarrierLocation, DurableKind, DurableLocation, DurableState
from mes.kit.api import CodeStr, InputModel


class CarrierCreate(InputModel):
    code: CodeStr
    fab: CodeStr
    capacity: int = Field(default=25, ge=1, le=25)
    stocker: str | None = Field(default=None, min_length=1, max_length=32)


class CarrierRead(BaseModel):
    code: str
    fab: str
    capacity: int
    state: CarrierState
    uses_since_clean: int
    last_cleaned_at: datetime | None
    cleanings: int
    location: CarrierLocation
    stocker: str | None  # in a stocker: which (None: not recorded)
    tool: str | None  # on a load port: the tool and the port
    port_number: int | None


class DurableCreate(InputModel):
    code: CodeStr
    design: str = Field(min_length=1, max_length=64)
    kind: DurableKind = DurableKind.RETICLE
    fab: CodeStr
    tool_group: CodeStr | None = None
    usage_limit: int | None = Field(default=None, ge=1, le=10**9)


class DurableMove(InputModel):
    to: DurableLocation
    tool: CodeStr | None = None


class DurableStateChange(InputModel):
    state: DurableState
    reason: str = Field(min_length=1, max_length=2000)
    # Reset the use counter (a requalified probe card, a re-pelliclised reticle).
    reset_usage: bool = False
    usage_limit: int | None = Field(default=None, ge=1, le=10**9)


class DurableRead(BaseModel):
    code: str
    design: str
    kind: DurableKind
    fab: str
    tool_group: str | None
    state: DurableState
    location: DurableLocation
    tool: str | None
    location_since: datetime
    usage_count: int
    usage_limit: int | None
