from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, FiniteFloat

from mes.auth.roles import Role
from mes.auth.schemas import ESignature
from mes.kit.api import InputModel, Timestamp
from mes.lots.commands import TrackOutcome
from mes.lots.rules import MAX_STARTED_LOT_CODE_LENGTH
from mes.lots.states import (
    FutureActionKind,
    GenealogyRelation,
    LotState,
    LotType,
    PriorityClass,
    WaferState,
)


class WaferRead(BaseModel):
    scribe_id: str
    slot: int | None  # None: the wafer left the carrier (scrapped)
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
    lot_type: LotType
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
    holds: list[HoldRead]


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


# --- commands ------------------------------------------------------------------------------

Version = Annotated[int | None, Field(default=None, ge=1, le=2**31 - 1)]
Reason = Annotated[str, Field(min_length=1, max_length=2000)]
Code = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]


class LotStart(InputModel):
    product: Code
    fab: Code
    route: Code | None = Field(default=None, description="default: the product's only route")
    # Short enough for the wafers' scribe ids (<code>-W01 …).
    code: Code | None = Field(
        default=None,
        max_length=MAX_STARTED_LOT_CODE_LENGTH,
        description="default: the next L<yy>-<nnnn>",
    )
    wafer_count: int = Field(default=25, ge=1, le=25)
    lot_type: LotType = LotType.PRODUCTION
    priority_class: PriorityClass = PriorityClass.NORMAL
    due_at: Timestamp | None = None
    carrier: Code | None = None


class BulkStart(InputModel):
    product: Code
    fab: Code
    route: Code | None = None
    count: int = Field(ge=1, le=200)
    wafer_count: int = Field(default=25, ge=1, le=25)
    lot_type: LotType = LotType.PRODUCTION
    priority_class: PriorityClass = PriorityClass.NORMAL
    due_at: Timestamp | None = None


class EngineeringRelease(InputModel):
    """An engineer's signed release of an engineering lot's run on a tool in ENG, or on a
    recipe version not approved or not qualified on the tool (the signer tracks the lot in)."""

    recipe_version: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="the version of the step's recipe to run (default: the newest approved and "
        "qualified one, else the newest one that is not obsolete)",
    )
    signature: ESignature


class TrackIn(InputModel):
    tool: Code
    version: Version = None
    # The step the operator believes the lot is at; refused if the lot is elsewhere.
    step_sequence: int | None = Field(default=None, ge=1, le=100_000)
    # Cluster tools: the chambers to run in; without them, every up chamber qualified to run
    # the step's recipe version.
    chambers: list[Annotated[str, Field(min_length=1, max_length=16)]] | None = Field(
        default=None, min_length=1, max_length=16
    )
    # Engineering lots only: run on an ENG tool or an unreleased recipe version.
    engineering: EngineeringRelease | None = None
    # A supervisor starts the lot although the Q-time gate refuses it: e-signature and reason.
    qtime_gate_override: ESignature | None = None


class Measurement(InputModel):
    name: str = Field(min_length=1, max_length=64)
    values: list[FiniteFloat] = Field(min_length=1, max_length=1000)
    unit: str | None = Field(default=None, max_length=16)


class ReadingIn(InputModel):
    """One value for the step's data collection plan: a parameter on a wafer slot and site
    (site 1 if omitted). Its kind and unit are checked against the plan."""

    parameter: str = Field(min_length=1, max_length=64)
    value: FiniteFloat | int | str | bool | None
    unit: str | None = Field(default=None, max_length=16)
    slot: int | None = Field(default=None, ge=1, le=25)
    site: int | None = Field(default=None, ge=1, le=25)
    chamber: str | None = Field(default=None, max_length=16)


class TrackOut(InputModel):
    version: Version = None
    wafers_processed: int | None = Field(default=None, ge=0, le=25)
    outcome: TrackOutcome = TrackOutcome.PASS
    measurements: list[Measurement] = Field(default_factory=list, max_length=100)
    edc: list[ReadingIn] = Field(
        default_factory=list, max_length=2500, description="data collection values"
    )


class HoldRequest(InputModel):
    hold_code: Code
    reason: Reason
    version: Version = None


class ReleaseRequest(InputModel):
    # Release these holds (ids from the lot detail); default: every hold of ``hold_code``.
    hold_ids: list[int] | None = Field(default=None, max_length=50)
    hold_code: Code | None = None
    signature: ESignature
    version: Version = None


class MassHold(InputModel):
    hold_code: Code
    reason: Reason
    fab: Code | None = None
    product: Code | None = None
    tool: Code | None = None
    route: Code | None = None
    step_sequence: int | None = Field(default=None, ge=1, le=100_000)


class FutureActionCreate(InputModel):
    step_sequence: int = Field(ge=1, le=100_000)
    kind: FutureActionKind = FutureActionKind.HOLD_ON_ARRIVAL
    hold_code: Code
    reason: Reason


class SplitRequest(InputModel):
    wafers: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        min_length=1, max_length=24, description="scribe ids of the wafers that move"
    )
    carrier: Code | None = None
    version: Version = None


class MergeRequest(InputModel):
    source: Code = Field(description="the lot whose wafers move into this one")
    version: Version = None


class ScrapRequest(InputModel):
    wafers: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        min_length=1, max_length=25
    )
    reason_code: Code
    comment: str | None = Field(default=None, max_length=2000)
    signature: ESignature
    version: Version = None


class BonusRequest(InputModel):
    count: int = Field(ge=1, le=24)
    reason_code: Code
    comment: str | None = Field(default=None, max_length=2000)
    version: Version = None


class JumpRequest(InputModel):
    to_sequence: int = Field(ge=1, le=100_000)
    signature: ESignature
    version: Version = None


class PriorityChange(InputModel):
    priority_class: PriorityClass
    reason: Reason
    due_at: Timestamp | None = None
    version: Version = None


class LotTypeChange(InputModel):
    lot_type: LotType
    signature: ESignature
    version: Version = None


class TerminateRequest(InputModel):
    signature: ESignature
    version: Version = None


class CancelTrackInRequest(InputModel):
    signature: ESignature
    version: Version = None


class ShipRequest(InputModel):
    to_fab: Code
    version: Version = None


class ReceiveRequest(InputModel):
    version: Version = None


class RecallRequest(InputModel):
    reason: str = Field(min_length=3, max_length=500)
    version: Version = None


# --- answers -------------------------------------------------------------------------------


class HoldRead(BaseModel):
    id: int
    lot: str
    fab: str
    hold_code: str
    release_role: str
    reason: str
    placed_by: str
    placed_at: datetime
    age_s: int


class RecipeToRun(BaseModel):
    name: str
    version: int
    checksum: str
    body: dict[str, Any]


class LotList(BaseModel):
    lots: list[LotRead]


class QTimeWindowRead(BaseModel):
    lot: str
    fab: str
    to_step_sequence: int
    opened_at: datetime
    deadline_at: datetime
    remaining_s: float  # negative: already past (the watch holds it at its next round)


class InTransitRead(BaseModel):
    lot: str
    from_fab: str
    to_fab: str
    step_sequence: int | None  # the step it resumes at once received
    operation: str | None
    wafer_count: int
    priority_class: str
    shipped_at: datetime
    shipped_by: str
    expected_arrival_at: datetime  # shipped at + the transfer time between the two fabs
    remaining_s: float  # negative: overdue


class SkippedLot(BaseModel):
    lot: str
    reason: str


class MassHoldResult(LotList):
    """The lots held, and the matching lots left as they were, with why."""

    skipped: list[SkippedLot]


class SplitResult(BaseModel):
    parent: LotRead
    child: LotRead


class TrackInResult(BaseModel):
    lot: LotRead
    tool: str
    recipe: RecipeToRun
    # The chambers the lot runs in (cluster tools; empty for a tool without chambers).
    chambers: list[str] = []


class FutureActionRead(BaseModel):
    id: int
    step_sequence: int
    kind: FutureActionKind
    hold_code: str
    reason: str
    created_by: str
    created_at: datetime


class GenealogyLink(BaseModel):
    parent: str
    child: str
    relation: GenealogyRelation
    wafer_count: int
    occurred_at: datetime


class GenealogyRead(BaseModel):
    lot: str
    ancestors: list[GenealogyLink]
    descendants: list[GenealogyLink]


class HoldCodeRead(BaseModel):
    code: str
    description: str
    release_role: str


class HoldCodeCreate(InputModel):
    code: Code
    description: str = Field(min_length=1, max_length=255)
    release_role: Role
