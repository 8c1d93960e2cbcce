from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from mes.auth.schemas import ESignature
from mes.kit.api import CodeStr, InputModel, Name, Timestamp
from mes.routes.models import RouteVersionStatus

MAX_STEPS = 2000  # SMT2020's longest route has 583 steps


class StepIn(InputModel):
    sequence: int = Field(ge=1, le=100_000)
    operation: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=255)
    tool_group: CodeStr
    # The logical recipe; a draft may leave it empty, activation requires it.
    recipe: str | None = Field(default=None, min_length=1, max_length=64)
    process_time_s: int = Field(ge=0, le=30 * 24 * 3600)
    batch_min: int | None = Field(default=None, ge=1, le=50)
    batch_max: int | None = Field(default=None, ge=1, le=50)
    qtime_to_sequence: int | None = Field(default=None, ge=1, le=100_000)
    qtime_max_s: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    # The least time between the two steps (the closing step may not start earlier).
    qtime_min_s: int | None = Field(default=None, ge=0, le=30 * 24 * 3600)
    rework_to_sequence: int | None = Field(default=None, ge=1, le=100_000)
    rework_limit: int = Field(default=2, ge=0, le=100)
    sampling_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    # The setup the tool must be in (dispatching prefers lots that need no change).
    setup: str | None = Field(default=None, min_length=1, max_length=32)
    # Lens/tool dedication: run on the tool that ran this earlier step.
    same_tool_as_sequence: int | None = Field(default=None, ge=1, le=100_000)


class StepRead(BaseModel):
    sequence: int
    operation: str
    description: str | None
    tool_group: str
    recipe: str | None
    process_time_s: int
    batch_min: int | None
    batch_max: int | None
    qtime_to_sequence: int | None
    qtime_max_s: int | None
    qtime_min_s: int | None = None
    rework_to_sequence: int | None
    rework_limit: int
    sampling_rate: float
    setup: str | None = None
    same_tool_as_sequence: int | None = None


class RouteVersionCreate(InputModel):
    """A new draft: either its steps, or the version to copy them from."""

    steps: list[StepIn] | None = Field(default=None, min_length=1, max_length=MAX_STEPS)
    copy_from: int | None = Field(default=None, ge=1, le=1_000_000)
    notes: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _one_source(self) -> RouteVersionCreate:
        if (self.steps is None) == (self.copy_from is None):
            raise ValueError("give either steps or copy_from")
        return self


class RouteCreate(InputModel):
    code: CodeStr
    name: Name
    product: CodeStr
    steps: list[StepIn] = Field(min_length=1, max_length=MAX_STEPS)
    notes: str | None = Field(default=None, max_length=2000)


class RouteUpdate(InputModel):
    name: Name


class StepsReplace(InputModel):
    steps: list[StepIn] = Field(min_length=1, max_length=MAX_STEPS)


class Renumbering(InputModel):
    """New order of a draft's steps (all of them, by current sequence; default: as they are),
    numbered ``start``, ``start + increment``, …"""

    order: list[int] | None = Field(default=None, max_length=MAX_STEPS)
    start: int = Field(default=10, ge=1, le=100_000)
    increment: int = Field(default=10, ge=1, le=1000)


class Activation(InputModel):
    signature: ESignature
    effective_at: Timestamp | None = Field(
        default=None, description="when new lots start taking this version; default now"
    )


class ActivationCancel(InputModel):
    signature: ESignature


class RouteProblemRead(BaseModel):
    sequence: int | None
    msg: str


class Validation(BaseModel):
    route: str
    version: int
    activatable: bool
    problems: list[RouteProblemRead]


class FieldChangeRead(BaseModel):
    field: str
    before: Any
    after: Any


class StepDifferenceRead(BaseModel):
    kind: str = Field(description="added, removed, changed or moved")
    operation: str
    before_sequence: int | None
    after_sequence: int | None
    changes: list[FieldChangeRead]


class RouteDiff(BaseModel):
    route: str
    before: int
    after: int
    identical: bool
    differences: list[StepDifferenceRead]


class RouteVersionSummary(BaseModel):
    version: int
    status: RouteVersionStatus
    in_force: bool
    step_count: int
    created_by: str
    created_at: datetime
    activated_at: datetime | None
    activated_by: str | None
    effective_at: datetime | None


class RouteRead(BaseModel):
    code: str
    name: str
    product: str
    active_version: int | None = Field(description="the version new lots take now")
    versions: list[RouteVersionSummary]


class RouteVersionRead(BaseModel):
    route: str
    version: int
    status: RouteVersionStatus
    created_by: str
    created_at: datetime
    activated_at: datetime | None
    activated_by: str | None
    effective_at: datetime | None
    in_force: bool
    notes: str | None
    steps: list[StepRead]
