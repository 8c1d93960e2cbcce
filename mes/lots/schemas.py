from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from mes.lots.states import LotState, PriorityClass, WaferState


class WaferRead(BaseModel):
    scribe_id: str
    slot: int
    state: WaferState


class CurrentStep(BaseModel):
    sequence: int
    operation: str
    tool_group: str


class LotRead(BaseModel):
    code: str
    fab: str
    product: str
    route: str
    route_version: int
    step: CurrentStep | None
    state: LotState
    priority_class: PriorityClass
    due_at: datetime | None
    wafer_count: int
    carrier: str | None
    parent: str | None
    started_at: datetime
    ended_at: datetime | None
    version: int


class LotDetail(LotRead):
    wafers: list[WaferRead]


class LotEventRead(BaseModel):
    event_type: str
    occurred_at: datetime
    actor: str
    fab: str
    step_sequence: int | None
    tool: str | None
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
