from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from mes.jobs.states import JobCommand, JobStatus
from mes.kit.api import InputModel
from mes.lots.schemas import Code, EngineeringRelease, Version


class JobRequest(InputModel):
    """Track the lot in on ``tool`` and have the tool's adapter start the job there."""

    tool: Code
    version: Version = None
    step_sequence: int | None = Field(default=None, ge=1, le=100_000)
    # Cluster tools: the chambers to run in (checked and recorded as at track-in).
    chambers: list[Annotated[str, Field(min_length=1, max_length=16)]] | None = Field(
        default=None, min_length=1, max_length=16
    )
    # An engineering lot's signed run on an ENG tool or an unreleased version (as at track-in).
    engineering: EngineeringRelease | None = None


class JobBatchRequest(InputModel):
    """Track the lots in on ``tool`` together and have its adapter start one job order that
    runs them as a batch (furnace, wet bench); the first lot leads."""

    tool: Code
    lots: list[Code] = Field(min_length=1, max_length=25)
    step_sequence: int | None = Field(default=None, ge=1, le=100_000)


class JobCommandRequest(InputModel):
    command: JobCommand


class JobRead(BaseModel):
    job_order_id: str
    lot: str  # the lead lot
    lots: list[str]  # every lot of the job order, in batch order
    tool: str
    recipe: str
    recipe_version: int
    attempt: int
    status: JobStatus
    command: JobCommand | None
    requested_by: str
    requested_at: datetime
    sent_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    wafers_processed: int | None
    tool_state: str | None
    last_error: str | None
