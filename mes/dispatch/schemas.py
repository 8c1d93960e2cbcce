from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from mes.kit.api import CodeStr, InputModel


class RuleEntry(InputModel):
    rule: str = Field(min_length=1, max_length=32)
    weight: float = Field(default=1.0, ge=-1e6, le=1e6)
    params: dict[str, float] = Field(default_factory=dict, max_length=16)


class RuleSetPublish(InputModel):
    """A new version of a scope's rule set: a fab's default, or an area or a tool group of it."""

    fab: CodeStr
    area: CodeStr | None = None
    tool_group: CodeStr | None = None
    rules: list[RuleEntry] = Field(max_length=32)
    note: str | None = Field(default=None, max_length=2000)
    # A shadow set: ranked beside the scope's production set in every automatic dispatch
    # cycle, its choice logged (outcome "shadow") and never executed.
    shadow: bool = False


class RuleSetRead(BaseModel):
    scope: str
    fab: str
    area: str | None
    tool_group: str | None
    version: int
    active: bool
    shadow: bool = False
    rules: list[dict[str, Any]]
    created_by: str
    created_at: datetime
    note: str | None


class RuleRead(BaseModel):
    rule: str
    defaults: dict[str, float]
    formula: str


class Reason(BaseModel):
    code: str
    detail: str


class ContributionRead(BaseModel):
    rule: str
    weight: float
    value: float
    contribution: float
    why: str


class RankedLot(BaseModel):
    rank: int
    lot: str
    priority_class: str
    step_sequence: int
    operation: str
    recipe: str | None
    waiting_s: float
    score: float
    contributions: list[ContributionRead]


class ExcludedLot(BaseModel):
    lot: str
    state: str
    step_sequence: int
    operation: str
    reasons: list[Reason]


class DispatchListRead(BaseModel):
    tool: str
    fab: str
    rule_set: str
    rule_set_version: int
    at: datetime
    tool_blocked: Reason | None
    ranked: list[RankedLot]
    excluded: list[ExcludedLot]


class ToolOptionRead(BaseModel):
    rank: int
    tool: str
    fab: str
    start_in_s: float
    transfer_s: float
    queue_s: float
    busy_s: float
    setup_s: float


class RefusedTool(BaseModel):
    tool: str
    fab: str
    reasons: list[Reason]


class WhereNextRead(BaseModel):
    lot: str
    fab: str
    step_sequence: int
    operation: str
    at: datetime
    lot_blocked: Reason | None
    options: list[ToolOptionRead]
    refused: list[RefusedTool]


class SendToFab(InputModel):
    to_fab: CodeStr
    version: int | None = Field(default=None, ge=1)


class TransferTimeSet(InputModel):
    from_fab: CodeStr
    to_fab: CodeStr
    time_s: int = Field(ge=0, le=30 * 24 * 3600)


class TransferTimeRead(TransferTimeSet):
    pass


SETUP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}$"
SetupCode = Field(min_length=1, max_length=32, pattern=SETUP_PATTERN)


class SetupChangeSet(InputModel):
    """How long a tool takes to change over to ``to_setup`` (from ``from_setup``; none: any)."""

    from_setup: str | None = Field(default=None, min_length=1, max_length=32, pattern=SETUP_PATTERN)
    to_setup: str = SetupCode
    time_s: int = Field(ge=0, le=7 * 24 * 3600)


class MinRunSet(InputModel):
    """Lots to run after changing over to ``setup`` before changing again."""

    setup: str = SetupCode
    min_run: int = Field(ge=1, le=1000)


class SetupDataRead(BaseModel):
    changes: list[SetupChangeSet]
    min_runs: list[MinRunSet]


class DecisionRead(BaseModel):
    id: int
    tool: str
    cycle_at: datetime
    rule_set: str
    rule_set_version: int
    chosen_lot: str | None
    chosen_score: float | None
    outcome: str
    refusal_code: str | None
    job_order_id: str | None
    top: list[dict[str, Any]]
    excluded: dict[str, int]
    owner: str


class DeviationRead(BaseModel):
    tool: str
    at: datetime
    actor: str
    lot: str
    rank_of_lot: int | None
    top_lot: str
    top_score: float | None
    list_at: datetime
    rule_set: str
    rule_set_version: int


class ComplianceRead(BaseModel):
    fab: str
    since: datetime
    until: datetime
    method: str
    track_ins: int
    with_list: int
    without_list: int
    followed: int
    compliance_rate: float | None
    deviations: list[DeviationRead]


class ShadowChoice(BaseModel):
    rule_set: str
    rule_set_version: int
    lot: str | None
    score: float | None
    outcome: str
    contributions: list[dict[str, Any]] | None


class ShadowDifference(BaseModel):
    tool: str
    at: datetime
    production: ShadowChoice
    shadow: ShadowChoice


class ShadowReportRead(BaseModel):
    fab: str
    since: datetime | None
    compared: int
    agreed: int
    agreement_rate: float | None
    differences: list[ShadowDifference]
