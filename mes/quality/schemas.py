"""HTTP shapes of the quality endpoints: EDC plans, SPC charts, points, violations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, FiniteFloat, field_validator

from mes.auth.schemas import ESignature
from mes.kit.api import CodeStr
from mes.quality.edc_rules import MAX_SITES, SOURCE_PATTERN, ValueKind
from mes.quality.limits import ChartKind
from mes.quality.models import PlanVersionStatus
from mes.quality.rules import DISPERSION_RULES, RunRule

PlanName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.\-]*$")]
ParameterName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][\w.\-]*$")]
Comment = Annotated[str, Field(min_length=1, max_length=2000)]


class ParameterIn(BaseModel):
    """One parameter of a plan: what it is, where its values come from, how many, its spec."""

    name: ParameterName
    kind: ValueKind = ValueKind.NUMBER
    unit: str | None = Field(default=None, max_length=16)
    source: str = Field(default="operator", pattern=SOURCE_PATTERN, max_length=64)
    wafers: list[int] = Field(default_factory=list, max_length=25, description="sampled slots")
    sites: int = Field(default=1, ge=1, le=MAX_SITES)
    lsl: FiniteFloat | None = None
    target: FiniteFloat | None = None
    usl: FiniteFloat | None = None
    required: bool = True


class PlanBody(BaseModel):
    parameters: list[ParameterIn] = Field(min_length=1, max_length=100)


class PlanCreate(BaseModel):
    name: PlanName
    operation: str = Field(min_length=1, max_length=64)
    route: CodeStr | None = None
    product: CodeStr | None = None
    tool_group: CodeStr | None = None
    description: str | None = Field(default=None, max_length=2000)
    body: PlanBody


class PlanVersionSummary(BaseModel):
    version: int
    status: PlanVersionStatus
    created_by: str
    approved_by: str | None
    approved_at: datetime | None
    obsoleted_by: str | None
    obsoleted_at: datetime | None


class PlanRead(BaseModel):
    name: str
    operation: str
    route: str | None
    product: str | None
    tool_group: str | None
    description: str | None
    versions: list[PlanVersionSummary]


class PlanVersionRead(PlanVersionSummary):
    plan: str
    body: PlanBody


class Signed(BaseModel):
    signature: ESignature


# --- charts -------------------------------------------------------------------------------

Action = Literal["hold_lot", "hold_next_lots", "inhibit_tool", "inhibit_chamber", "notify"]
ContextKey = Literal["product", "operation", "tool", "chamber"]


class RuleSet(BaseModel):
    enabled: list[RunRule] = Field(
        default_factory=lambda: [
            RunRule.BEYOND_3_SIGMA,
            RunRule.SAME_SIDE_RUN,
            RunRule.TWO_OF_THREE_BEYOND_2_SIGMA,
            RunRule.FOUR_OF_FIVE_BEYOND_1_SIGMA,
        ]
    )
    run_length: Literal[8, 9] = 9
    # The rules of the dispersion chart (MR, R or S): beyond its limits, runs on one side of
    # its centre, trends (rules.DISPERSION_RULES); violations are coded r_/s_/mr_<rule>.
    # Unset: rule 1 on R and S charts, none on the moving range (a single shift already fires
    # on the individuals chart, and would fire twice more there).
    dispersion: list[RunRule] | None = None

    @field_validator("dispersion")
    @classmethod
    def _dispersion_rules(cls, value: list[RunRule] | None) -> list[RunRule] | None:
        wrong = sorted(r.value for r in set(value or ()) - DISPERSION_RULES)
        if wrong:
            raise ValueError(f"not a dispersion chart rule: {wrong}")
        return value


def _default_actions() -> dict[str, list[Action]]:
    return {"*": ["hold_lot", "notify"]}


class ChartCreate(BaseModel):
    code: PlanName
    plan: PlanName
    parameter: ParameterName
    context: dict[ContextKey, Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=dict, description="values must match every key given"
    )
    kind: ChartKind = ChartKind.INDIVIDUALS
    subgroup: Literal["wafer", "lot"] = "wafer"
    rules: RuleSet = Field(default_factory=RuleSet)
    # Per rule code, or "*" for every rule without its own entry.
    actions: dict[str, list[Action]] = Field(default_factory=_default_actions)
    baseline_points: int = Field(default=25, ge=2, le=1000)
    next_lots: int = Field(default=3, ge=1, le=100, description="for hold_next_lots")


class ChartUpdate(BaseModel):
    rules: RuleSet | None = None
    actions: dict[str, list[Action]] | None = None
    active: bool | None = None


class LimitsSet(BaseModel):
    """New limits: given by the engineer (``center`` and ``sigma``), or recomputed from the
    chart's points ``first``..``last`` (a new baseline window)."""

    center: FiniteFloat | None = None
    sigma: FiniteFloat | None = Field(default=None, gt=0)
    first: int | None = Field(default=None, ge=1)
    last: int | None = Field(default=None, ge=1)
    reason: Comment


class LimitsRead(BaseModel):
    version: int
    source: str
    center: float
    sigma_within: float
    ucl: float
    lcl: float
    dispersion_center: float
    subgroup_size: int
    baseline_first: int | None
    baseline_last: int | None
    reason: str | None
    set_by: str
    set_at: datetime


class ChartRead(BaseModel):
    id: int
    code: str
    plan: str
    parameter: str
    context: dict[str, Any]
    kind: str
    subgroup: str
    rules: RuleSet
    actions: dict[str, list[str]]
    baseline_points: int
    next_lots: int
    active: bool
    spec: dict[str, float | None]
    limits: LimitsRead | None


class PointRead(BaseModel):
    number: int
    value: float
    dispersion: float | None  # moving range, range or standard deviation
    size: int
    ucl: float | None
    lcl: float | None
    center: float | None
    zone: float | None  # signed distance from the centre in sigmas
    limits_version: int | None
    lot: str
    slot: int | None
    scribe_id: str | None
    tool: str
    chamber: str | None
    collected_at: datetime
    violations: list[str]
    out_of_spec: bool
    # The dispersion chart's limits at this point (MR, R or S; None before the limits)
    dispersion_ucl: float | None = None
    dispersion_lcl: float | None = None
    dispersion_center: float | None = None


class ChartData(BaseModel):
    chart: ChartRead
    points: list[PointRead]
    zones: dict[str, float] | None  # the current limits' sigma lines
    capability: dict[str, float | None] | None


class ViolationRead(BaseModel):
    id: int
    chart: str | None
    plan: str
    parameter: str
    rule: str
    point_number: int | None
    points: dict[str, Any]
    lot: str
    tool: str
    chamber: str | None
    detail: str
    actions: dict[str, Any]
    detected_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    comment: str | None


class Acknowledge(BaseModel):
    comment: Comment
    # Return the tool (or chamber) this violation inhibited to standby, if no other open
    # violation keeps it down.
    release_tool: bool = False


class NotificationRead(BaseModel):
    id: int
    violation_id: int
    message: str
    created_at: datetime


class ValueRead(BaseModel):
    plan: str
    parameter: str
    slot: int | None
    scribe_id: str | None
    site: int | None
    value: float
    operation: str
    tool: str
    chamber: str | None
    source: str
    collected_at: datetime
