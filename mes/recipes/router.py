"""Recipes, their versions, and where each version is qualified."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from mes.auth import roles
from mes.auth.dependencies import requires, sign
from mes.auth.schemas import ESignature
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.fabs import service as fabs_service
from mes.fabs.models import ToolGroup
from mes.kit.api import (
    ClockDep,
    CodePath,
    CodeStr,
    InputModel,
    Page,
    PageQuery,
    VersionPath,
    fetch_page,
)
from mes.kit.idempotency import OnceDep
from mes.recipes import service
from mes.recipes.models import (
    Recipe,
    RecipeParameterSpec,
    RecipeVersion,
)
from mes.recipes.reads import qualification_read, rule_read
from mes.recipes.schemas import (
    ContextRuleCreate,
    ContextRuleRead,
    Disqualification,
    ParameterChangeRead,
    ParameterSchema,
    ParameterSchemaRead,
    ParameterSpecIn,
    QualificationCreate,
    QualificationRead,
    RecipeBody,
    RecipeCreate,
    RecipeDiff,
    RecipeRead,
    RecipeUpdate,
    RecipeVersionCreate,
    RecipeVersionRead,
    RecipeVersionSummary,
)

router = APIRouter(prefix="/recipes", tags=["recipes"])

RecipeWriter = Annotated[Principal, requires(roles.RECIPE_WRITE)]
RecipeApprover = Annotated[Principal, requires(roles.RECIPE_APPROVE)]
RecipeQualifier = Annotated[Principal, requires(roles.RECIPE_QUALIFY)]
RecipeDisqualifier = Annotated[Principal, requires(roles.RECIPE_DISQUALIFY)]
RecipeRetirer = Annotated[Principal, requires(roles.RECIPE_OBSOLETE)]


class Approval(InputModel):
    signature: ESignature


RecipePath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.\-]*$")]


def _summary(version: RecipeVersion) -> RecipeVersionSummary:
    return RecipeVersionSummary(
        version=version.version,
        status=version.status,
        checksum=version.checksum,
        created_by=version.created_by,
        approved_by=version.approved_by,
        approved_at=version.approved_at,
        obsoleted_by=version.obsoleted_by,
        obsoleted_at=version.obsoleted_at,
    )


def recipe_read(recipe: Recipe) -> RecipeRead:
    return RecipeRead(
        name=recipe.name,
        tool_group=recipe.tool_group.code,
        description=recipe.description,
        versions=[_summary(v) for v in recipe.versions],
    )


def version_read(recipe: Recipe, version: RecipeVersion) -> RecipeVersionRead:
    return RecipeVersionRead(
        recipe=recipe.name,
        body=RecipeBody.model_validate(version.body),
        created_at=version.created_at,
        **_summary(version).model_dump(),
    )


@router.get("/context-rules", response_model=list[ContextRuleRead])
async def list_context_rules(
    session: ReadSession,
    logical_recipe: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> list[ContextRuleRead]:
    """Context rules, optionally for one logical recipe name."""
    found = await service.context_rules(
        session, logical_recipes=None if logical_recipe is None else [logical_recipe]
    )
    return [rule_read(r, row) for r, row in found]


@router.post("/context-rules", response_model=ContextRuleRead, status_code=status.HTTP_201_CREATED)
async def create_context_rule(
    body: ContextRuleCreate, by: RecipeWriter, session: WriteSession, once: OnceDep
) -> ContextRuleRead | JSONResponse:
    """Say which recipe a logical recipe means in a context (product, step, tool group, tool,
    chamber); the most specific matching rule wins."""

    async def op() -> ContextRuleRead:
        rule, row = await service.create_context_rule(session, body, actor=by.username)
        return rule_read(rule, row)

    return await once.run(op)


@router.delete("/context-rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_context_rule(
    rule_id: Annotated[int, Path(ge=1, le=2**62)], _by: RecipeWriter, session: WriteSession
) -> None:
    """Remove a context rule."""
    await service.delete_context_rule(session, rule_id)


@router.get("/qualifications", response_model=list[QualificationRead])
async def qualification_matrix(
    session: ReadSession,
    clock: ClockDep,
    tool: Annotated[CodeStr | None, Query()] = None,
    recipe: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    tool_group: Annotated[CodeStr | None, Query()] = None,
    fab: Annotated[CodeStr | None, Query()] = None,
    include_history: Annotated[
        bool, Query(description="also expired and withdrawn qualifications")
    ] = False,
) -> list[QualificationRead]:
    """The qualification matrix: which tools and chambers may run which recipe versions."""
    now = clock.now()
    rows = await service.qualification_matrix(
        session,
        now=now,
        tool=tool,
        recipe=recipe,
        tool_group=tool_group,
        fab=fab,
        include_history=include_history,
    )
    return [qualification_read(r, v, q, t, c, now) for q, r, v, t, c in rows]


@router.get("/parameter-schemas/{tool_group}", response_model=ParameterSchemaRead)
async def get_parameter_schema(tool_group: CodePath, session: ReadSession) -> ParameterSchemaRead:
    """The parameters recipes of a tool group may set (empty: recipes are not checked)."""
    group = await fabs_service.get_tool_group(session, tool_group)
    specs = await service.parameter_specs(session, group.id)
    return _schema_read(group.code, specs)


@router.put("/parameter-schemas/{tool_group}", response_model=ParameterSchemaRead)
async def replace_parameter_schema(
    tool_group: CodePath, body: ParameterSchema, _by: RecipeWriter, session: WriteSession
) -> ParameterSchemaRead:
    """Set the parameter schema of a tool group; new drafts and approvals are checked against
    it, approved versions stay as they are."""
    group, specs = await service.replace_parameter_schema(session, tool_group, body)
    return _schema_read(group.code, specs)


def _schema_read(group: str, specs: list[RecipeParameterSpec]) -> ParameterSchemaRead:
    return ParameterSchemaRead(
        tool_group=group,
        parameters=[
            ParameterSpecIn(
                name=p.name,
                kind=p.kind,
                unit=p.unit,
                lower=p.lower,
                upper=p.upper,
                required=p.required,
                description=p.description,
            )
            for p in specs
        ],
    )


@router.get("", response_model=Page[RecipeRead])
async def list_recipes(
    session: ReadSession,
    page: PageQuery,
    tool_group: Annotated[CodeStr | None, Query()] = None,
) -> Page[RecipeRead]:
    """Recipes with their version summaries, optionally of one tool group."""
    stmt = (
        select(Recipe)
        .options(selectinload(Recipe.tool_group), selectinload(Recipe.versions))
        .order_by(Recipe.name)
    )
    if tool_group is not None:
        stmt = stmt.join(ToolGroup, ToolGroup.id == Recipe.tool_group_id).where(
            ToolGroup.code == tool_group
        )
    rows, total = await fetch_page(session, stmt, page)
    return Page(items=[recipe_read(r) for r in rows], total=total, **page.model_dump())


@router.post("", response_model=RecipeRead, status_code=status.HTTP_201_CREATED)
async def create_recipe(
    body: RecipeCreate, by: RecipeWriter, session: WriteSession, once: OnceDep
) -> RecipeRead | JSONResponse:
    """Create a recipe; its body becomes version 1, a draft."""

    async def op() -> RecipeRead:
        return recipe_read(await service.create_recipe(session, body, actor=by.username))

    return await once.run(op)


@router.get("/{recipe}", response_model=RecipeRead)
async def get_recipe(recipe: RecipePath, session: ReadSession) -> RecipeRead:
    """One recipe with its version summaries."""
    return recipe_read(await service.get_recipe(session, recipe))


@router.patch("/{recipe}", response_model=RecipeRead)
async def update_recipe(
    recipe: RecipePath, body: RecipeUpdate, _by: RecipeWriter, session: WriteSession
) -> RecipeRead:
    """Change a recipe's description."""
    return recipe_read(await service.update_recipe(session, recipe, body))


@router.post(
    "/{recipe}/versions", response_model=RecipeVersionRead, status_code=status.HTTP_201_CREATED
)
async def add_version(
    recipe: RecipePath,
    body: RecipeVersionCreate,
    by: RecipeWriter,
    session: WriteSession,
    once: OnceDep,
) -> RecipeVersionRead | JSONResponse:
    """Start a new draft version."""

    async def op() -> RecipeVersionRead:
        version = await service.add_version(session, recipe, body, actor=by.username)
        return version_read(await service.get_recipe(session, recipe), version)

    return await once.run(op)


@router.get("/{recipe}/versions/{version}", response_model=RecipeVersionRead)
async def get_version(
    recipe: RecipePath, version: VersionPath, session: ReadSession
) -> RecipeVersionRead:
    """One version with its parameters and checksum."""
    found = await service.get_recipe(session, recipe)
    return version_read(found, service.find_version(found, version))


@router.put("/{recipe}/versions/{version}/body", response_model=RecipeVersionRead)
async def update_draft(
    recipe: RecipePath,
    version: VersionPath,
    body: RecipeBody,
    _by: RecipeWriter,
    session: WriteSession,
) -> RecipeVersionRead:
    """Replace the parameters of a draft version."""
    updated = await service.update_draft(session, recipe, version, body)
    return version_read(await service.get_recipe(session, recipe), updated)


@router.post("/{recipe}/versions/{version}/approve", response_model=RecipeVersionRead)
async def approve_version(
    request: Request,
    recipe: RecipePath,
    version: VersionPath,
    body: Approval,
    by: RecipeApprover,
    session: WriteSession,
    clock: ClockDep,
) -> RecipeVersionRead:
    """Approve a draft (e-signature; four eyes: not by its author). It is immutable after."""
    await sign(request, session, by, body.signature)
    approved = await service.approve_version(
        session, recipe, version, actor=by.username, clock=clock
    )
    return version_read(await service.get_recipe(session, recipe), approved)


@router.get("/{recipe}/versions/{version}/qualifications", response_model=list[QualificationRead])
async def list_qualifications(
    recipe: RecipePath, version: VersionPath, session: ReadSession, clock: ClockDep
) -> list[QualificationRead]:
    """The tools and chambers a version is qualified on, withdrawn ones included."""
    rows = await service.qualifications(session, recipe, version)
    now = clock.now()
    return [qualification_read(recipe, version, q, t, c, now) for q, t, c in rows]


@router.post(
    "/{recipe}/versions/{version}/qualifications",
    response_model=QualificationRead,
    status_code=status.HTTP_201_CREATED,
)
async def qualify(
    recipe: RecipePath,
    version: VersionPath,
    body: QualificationCreate,
    by: RecipeQualifier,
    session: WriteSession,
    clock: ClockDep,
    once: OnceDep,
) -> QualificationRead | JSONResponse:
    """Qualify a version on a tool (or one chamber)."""

    async def op() -> QualificationRead:
        q, tool, chamber = await service.qualify(
            session, recipe, version, body, actor=by.username, clock=clock
        )
        return qualification_read(recipe, version, q, tool.code, chamber, clock.now())

    return await once.run(op)


@router.post(
    "/{recipe}/versions/{version}/qualifications/{tool}/disqualify",
    response_model=QualificationRead,
)
async def disqualify(
    recipe: RecipePath,
    version: VersionPath,
    tool: CodePath,
    body: Disqualification,
    by: RecipeDisqualifier,
    session: WriteSession,
    clock: ClockDep,
) -> QualificationRead:
    """Withdraw a qualification (of the tool, or of one chamber) with a reason. Track-in and
    dispatch of lots needing it stop at once; the row stays as history."""
    q, found, chamber = await service.disqualify(
        session, recipe, version, tool, body, actor=by.username, clock=clock
    )
    return qualification_read(recipe, version, q, found.code, chamber, clock.now())


@router.post("/{recipe}/versions/{version}/obsolete", response_model=RecipeVersionRead)
async def obsolete_version(
    request: Request,
    recipe: RecipePath,
    version: VersionPath,
    body: Approval,
    by: RecipeRetirer,
    session: WriteSession,
    clock: ClockDep,
) -> RecipeVersionRead:
    """Retire an approved version (e-signature): it is no longer resolved for any lot."""
    await sign(request, session, by, body.signature)
    retired = await service.obsolete_version(
        session, recipe, version, actor=by.username, clock=clock
    )
    return version_read(await service.get_recipe(session, recipe), retired)


@router.get("/{recipe}/versions/{before}/diff/{after}", response_model=RecipeDiff)
async def diff_versions(
    recipe: RecipePath,
    before: VersionPath,
    after: Annotated[int, Path(ge=1, le=1_000_000)],
    session: ReadSession,
) -> RecipeDiff:
    """Parameter-level differences between two versions of a recipe."""
    a, b, changes = await service.diff_versions(session, recipe, before, after)
    return RecipeDiff(
        recipe=recipe,
        before=before,
        after=after,
        before_checksum=a.checksum,
        after_checksum=b.checksum,
        identical=a.checksum == b.checksum,
        changes=[
            ParameterChangeRead(
                kind=c.kind,
                name=c.name,
                fields=list(c.fields),
                before=dict(c.before) if c.before is not None else None,
                after=dict(c.after) if c.after is not None else None,
            )
            for c in changes
        ],
    )
