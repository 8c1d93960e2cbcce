from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from mes.kit.api import CodeStr, Name, ReadModel
from mes.routes.models import RouteVersionStatus

MAX_STEPS = 2000  # SMT2020's longest route has 583 steps


class ProductCreate(BaseModel):
    code: CodeStr
    name: Name
    description: str | None = Field(default=None, max_length=2000)


class ProductUpdate(BaseModel):
    name: Name | None = None
    description: str | None = Field(default=None, max_length=2000)


class ProductRead(ReadModel):
    code: str
    name: str
    description: str | None


class StepIn(BaseModel):
    sequence: int = Field(ge=1, le=100_000)
    operation: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=255)
    tool_group: CodeStr
    recipe: str = Field(min_length=1, max_length=64)
    process_time_s: int = Field(ge=0, le=30 * 24 * 3600)
    batch_min: int | None = Field(default=None, ge=1, le=50)
    batch_max: int | None = Field(default=None, ge=1, le=50)
    qtime_to_sequence: int | None = Field(default=None, ge=1, le=100_000)
    qtime_max_s: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    rework_to_sequence: int | None = Field(default=None, ge=1, le=100_000)
    rework_limit: int = Field(default=2, ge=0, le=100)
    sampling_rate: float = Field(default=1.0, ge=0.0, le=1.0)


class StepRead(BaseModel):
    sequence: int
    operation: str
    description: str | None
    tool_group: str
    recipe: str
    process_time_s: int
    batch_min: int | None
    batch_max: int | None
    qtime_to_sequence: int | None
    qtime_max_s: int | None
    rework_to_sequence: int | None
    rework_limit: int
    sampling_rate: float


class RouteVersionCreate(BaseModel):
    steps: list[StepIn] = Field(min_length=1, max_length=MAX_STEPS)
    notes: str | None = Field(default=None, max_length=2000)


class RouteCreate(RouteVersionCreate):
    code: CodeStr
    name: Name
    product: CodeStr


class RouteUpdate(BaseModel):
    name: Name


class StepsReplace(BaseModel):
    steps: list[StepIn] = Field(min_length=1, max_length=MAX_STEPS)


class RouteVersionSummary(BaseModel):
    version: int
    status: RouteVersionStatus
    step_count: int
    created_by: str
    created_at: datetime
    activated_at: datetime | None
    activated_by: str | None


class RouteRead(BaseModel):
    code: str
    name: str
    product: str
    active_version: int | None
    versions: list[RouteVersionSummary]


class RouteVersionRead(BaseModel):
    route: str
    version: int
    status: RouteVersionStatus
    created_by: str
    created_at: datetime
    activated_at: datetime | None
    activated_by: str | None
    notes: str | None
    steps: list[StepRead]
