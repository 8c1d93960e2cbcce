from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, FiniteFloat, model_validator

from mes.kit.api import CodeStr, InputModel, Timestamp
from mes.recipes.models import RecipeVersionStatus
from mes.recipes.rules import Kind

RecipeName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.\-]*$")]


class Parameter(InputModel):
    """One recipe parameter; numeric values are checked against their limits."""

    name: str = Field(min_length=1, max_length=64)
    # Finite numbers only: NaN and infinities have no JSON form, so no canonical body either.
    value: FiniteFloat | int | str | bool
    unit: str | None = Field(default=None, max_length=16)
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _within_limits(self) -> Parameter:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"parameter {self.name}: min is above max")
        numeric = isinstance(self.value, int | float) and not isinstance(self.value, bool)
        if numeric:
            if self.min is not None and self.value < self.min:  # type: ignore[operator]
                raise ValueError(f"parameter {self.name}: value below its minimum")
            if self.max is not None and self.value > self.max:  # type: ignore[operator]
                raise ValueError(f"parameter {self.name}: value above its maximum")
        return self


class RecipeBody(InputModel):
    parameters: list[Parameter] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _unique_names(self) -> RecipeBody:
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        return self


class RecipeCreate(InputModel):
    name: RecipeName
    tool_group: CodeStr
    description: str | None = Field(default=None, max_length=2000)
    body: RecipeBody


class RecipeUpdate(InputModel):
    description: str | None = Field(default=None, max_length=2000)


class RecipeVersionCreate(InputModel):
    body: RecipeBody


class RecipeVersionSummary(BaseModel):
    version: int
    status: RecipeVersionStatus
    checksum: str
    created_by: str
    approved_by: str | None
    approved_at: datetime | None
    obsoleted_by: str | None = None
    obsoleted_at: datetime | None = None


class RecipeRead(BaseModel):
    name: str
    tool_group: str
    description: str | None
    versions: list[RecipeVersionSummary]


class RecipeVersionRead(RecipeVersionSummary):
    recipe: str
    body: RecipeBody
    created_at: datetime


class QualificationCreate(InputModel):
    tool: CodeStr
    chamber: str | None = Field(default=None, min_length=1, max_length=16)
    expires_at: Timestamp | None = None


class QualificationRead(BaseModel):
    recipe: str
    version: int
    tool: str
    chamber: str | None
    qualified_at: datetime
    expires_at: datetime | None
    qualified_by: str
    disqualified_at: datetime | None = None
    disqualified_by: str | None = None
    disqualify_reason: str | None = None
    standing: bool = True


class Disqualification(InputModel):
    chamber: str | None = Field(default=None, min_length=1, max_length=16)
    reason: str = Field(min_length=3, max_length=2000)


class ParameterSpecIn(InputModel):
    name: str = Field(min_length=1, max_length=64)
    kind: Kind
    unit: str | None = Field(default=None, min_length=1, max_length=16)
    lower: FiniteFloat | None = None
    upper: FiniteFloat | None = None
    required: bool = False
    description: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _limits(self) -> ParameterSpecIn:
        if self.kind != Kind.NUMBER and (self.lower is not None or self.upper is not None):
            raise ValueError(f"parameter {self.name}: only numbers have limits")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"parameter {self.name}: lower limit above upper")
        return self


class ParameterSchema(InputModel):
    """The parameters recipes of a tool group may set. Empty: recipes are not checked."""

    parameters: list[ParameterSpecIn] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _unique_names(self) -> ParameterSchema:
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        return self


class ParameterSchemaRead(ParameterSchema):
    tool_group: str


class ParameterChangeRead(BaseModel):
    kind: str
    name: str
    fields: list[str]
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class RecipeDiff(BaseModel):
    recipe: str
    before: int
    after: int
    before_checksum: str
    after_checksum: str
    identical: bool
    changes: list[ParameterChangeRead]


class ContextRuleCreate(InputModel):
    """Where ``logical_recipe`` (a step's recipe name) means ``recipe``. Unnamed dimensions
    match anything; a chamber needs its tool."""

    logical_recipe: RecipeName
    recipe: RecipeName
    product: CodeStr | None = None
    step: str | None = Field(default=None, min_length=1, max_length=64)
    tool_group: CodeStr | None = None
    tool: CodeStr | None = None
    chamber: str | None = Field(default=None, min_length=1, max_length=16)
    note: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _chamber_needs_tool(self) -> ContextRuleCreate:
        if self.chamber is not None and self.tool is None:
            raise ValueError("a chamber rule must name its tool")
        return self


class ContextRuleRead(BaseModel):
    id: int
    logical_recipe: str
    recipe: str
    product: str | None
    step: str | None
    tool_group: str | None
    tool: str | None
    chamber: str | None
    specificity: list[str] = Field(description="the context dimensions the rule names")
    created_by: str
    note: str | None


class ResolutionContext(BaseModel):
    product: str
    step: str
    tool_group: str
    tool: str
    chamber: str | None


class Refusal(BaseModel):
    code: str
    detail: str


class ResolvedStep(BaseModel):
    route: str
    route_version: int
    sequence: int
    operation: str


class Resolution(BaseModel):
    """What would run for a lot on a tool, and why."""

    lot: str
    step: ResolvedStep
    logical_recipe: str | None
    context: ResolutionContext
    precedence: list[str]
    rule: ContextRuleRead | None = Field(
        description="the winning context rule; null when the logical name itself is the recipe"
    )
    matched_rules: list[ContextRuleRead]
    recipe: str | None
    version: int | None
    checksum: str | None
    qualification: QualificationRead | None
    runnable: bool
    refusal: Refusal | None
    # The chambers a track-in would run the lot in (cluster tools; empty otherwise).
    chambers: list[str] = []
