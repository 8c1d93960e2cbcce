from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, Field, FiniteFloat, model_validator

from mes.kit.api import CodeStr
from mes.recipes.models import RecipeVersionStatus

RecipeName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.\-]*$")]


class Parameter(BaseModel):
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


class RecipeBody(BaseModel):
    parameters: list[Parameter] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _unique_names(self) -> RecipeBody:
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        return self


class RecipeCreate(BaseModel):
    name: RecipeName
    tool_group: CodeStr
    description: str | None = Field(default=None, max_length=2000)
    body: RecipeBody


class RecipeUpdate(BaseModel):
    description: str | None = Field(default=None, max_length=2000)


class RecipeVersionCreate(BaseModel):
    body: RecipeBody


class RecipeVersionSummary(BaseModel):
    version: int
    status: RecipeVersionStatus
    checksum: str
    created_by: str
    approved_by: str | None
    approved_at: datetime | None


class RecipeRead(BaseModel):
    name: str
    tool_group: str
    description: str | None
    versions: list[RecipeVersionSummary]


class RecipeVersionRead(RecipeVersionSummary):
    recipe: str
    body: RecipeBody
    created_at: datetime


class QualificationCreate(BaseModel):
    tool: CodeStr
    chamber: str | None = Field(default=None, min_length=1, max_length=16)
    expires_at: AwareDatetime | None = None


class QualificationRead(BaseModel):
    recipe: str
    version: int
    tool: str
    chamber: str | None
    qualified_at: datetime
    expires_at: datetime | None
    qualified_by: str
