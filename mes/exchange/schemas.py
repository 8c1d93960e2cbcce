"""The process exchange document, format ``mes-process/1``.

One JSON object holding what an engineer owns: tool groups (with their recipe parameter
schemas), products, recipes with every version, routes with every version and its steps,
context rules and qualifications. Everything is named by business code, never by database id,
so a document moves between fabs and databases unchanged. ``GET /api/v1/process/schema``
serves the JSON Schema of this model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from mes.auth.schemas import ESignature
from mes.fabs.models import ProcessingKind
from mes.kit.api import CodeStr, InputModel, Name, Timestamp
from mes.recipes.models import RecipeVersionStatus
from mes.recipes.schemas import ContextRuleCreate, ParameterSpecIn, RecipeBody, RecipeName
from mes.routes.models import RouteVersionStatus
from mes.routes.schemas import MAX_STEPS, StepIn

MAX_ITEMS = 10_000


class ToolGroupDoc(InputModel):
    code: CodeStr
    name: Name
    processing_kind: ProcessingKind
    parameter_schema: list[ParameterSpecIn] = Field(default_factory=list, max_length=500)


class ProductDoc(InputModel):
    code: CodeStr
    name: Name
    description: str | None = Field(default=None, max_length=2000)


class RecipeVersionDoc(InputModel):
    version: int = Field(ge=1, le=1_000_000)
    status: RecipeVersionStatus
    body: RecipeBody
    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_by: str = Field(min_length=1, max_length=64)
    approved_by: str | None = Field(default=None, max_length=64)
    approved_at: Timestamp | None = None
    obsoleted_by: str | None = Field(default=None, max_length=64)
    obsoleted_at: Timestamp | None = None


class RecipeDoc(InputModel):
    name: RecipeName
    tool_group: CodeStr
    description: str | None = Field(default=None, max_length=2000)
    versions: list[RecipeVersionDoc] = Field(min_length=1, max_length=1000)


class RouteVersionDoc(InputModel):
    version: int = Field(ge=1, le=1_000_000)
    status: RouteVersionStatus
    created_by: str = Field(min_length=1, max_length=64)
    activated_at: Timestamp | None = None
    activated_by: str | None = Field(default=None, max_length=64)
    effective_at: Timestamp | None = None
    notes: str | None = Field(default=None, max_length=2000)
    steps: list[StepIn] = Field(min_length=1, max_length=MAX_STEPS)


class RouteDoc(InputModel):
    code: CodeStr
    name: Name
    product: CodeStr
    versions: list[RouteVersionDoc] = Field(min_length=1, max_length=1000)


class ContextRuleDoc(ContextRuleCreate):
    created_by: str = Field(min_length=1, max_length=64)


class QualificationDoc(InputModel):
    recipe: RecipeName
    version: int = Field(ge=1, le=1_000_000)
    tool: CodeStr
    chamber: str | None = Field(default=None, min_length=1, max_length=16)
    qualified_at: Timestamp
    qualified_by: str = Field(min_length=1, max_length=64)
    expires_at: Timestamp | None = None
    disqualified_at: Timestamp | None = None
    disqualified_by: str | None = Field(default=None, max_length=64)
    disqualify_reason: str | None = Field(default=None, max_length=2000)


class ProcessDocument(InputModel):
    format: Literal["mes-process/1"] = "mes-process/1"
    exported_at: datetime | None = None
    exported_by: str | None = None
    tool_groups: list[ToolGroupDoc] = Field(default_factory=list, max_length=MAX_ITEMS)
    products: list[ProductDoc] = Field(default_factory=list, max_length=MAX_ITEMS)
    recipes: list[RecipeDoc] = Field(default_factory=list, max_length=MAX_ITEMS)
    routes: list[RouteDoc] = Field(default_factory=list, max_length=MAX_ITEMS)
    context_rules: list[ContextRuleDoc] = Field(default_factory=list, max_length=MAX_ITEMS)
    qualifications: list[QualificationDoc] = Field(default_factory=list, max_length=MAX_ITEMS)


class ImportRequest(InputModel):
    document: ProcessDocument
    signature: ESignature
    dry_run: bool = Field(
        default=False, description="validate and report what would change, apply nothing"
    )


class KindSummary(BaseModel):
    created: int = 0
    unchanged: int = 0


class ImportSummary(BaseModel):
    dry_run: bool
    tool_groups: KindSummary
    parameter_schemas: KindSummary
    products: KindSummary
    recipe_versions: KindSummary
    route_versions: KindSummary
    context_rules: KindSummary
    qualifications: KindSummary
