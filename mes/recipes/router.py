"""Recipes, their versions, and where each version is qualified."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from mes.auth import roles
from mes.auth.dependencies import requires, sign
from mes.auth.schemas import ESignature
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.fabs.models import ToolGroup
from mes.kit.api import ClockDep, CodeStr, Page, PageQuery, VersionPath, fetch_page
from mes.recipes import service
from mes.recipes.models import Recipe, RecipeQualification, RecipeVersion
from mes.recipes.schemas import (
    QualificationCreate,
    QualificationRead,
    RecipeBody,
    RecipeCreate,
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


class Approval(BaseModel):
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


def _qualification_read(
    recipe: str, version: int, q: RecipeQualification, tool: str, chamber: str | None
) -> QualificationRead:
    return QualificationRead(
        recipe=recipe,
        version=version,
        tool=tool,
        chamber=chamber,
        qualified_at=q.qualified_at,
        expires_at=q.expires_at,
        qualified_by=q.qualified_by,
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
async def create_recipe(body: RecipeCreate, by: RecipeWriter, session: WriteSession) -> RecipeRead:
    """Create a recipe; its body becomes version 1, a draft."""
    return recipe_read(await service.create_recipe(session, body, actor=by.username))


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
    recipe: RecipePath, body: RecipeVersionCreate, by: RecipeWriter, session: WriteSession
) -> RecipeVersionRead:
    """Start a new draft version."""
    version = await service.add_version(session, recipe, body, actor=by.username)
    return version_read(await service.get_recipe(session, recipe), version)


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
    recipe: RecipePath, version: VersionPath, session: ReadSession
) -> list[QualificationRead]:
    """The tools and chambers a version is qualified on."""
    rows = await service.qualifications(session, recipe, version)
    return [_qualification_read(recipe, version, q, t, c) for q, t, c in rows]


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
) -> QualificationRead:
    """Qualify a version on a tool (or one chamber)."""
    q, tool, chamber = await service.qualify(
        session, recipe, version, body, actor=by.username, clock=clock
    )
    return _qualification_read(recipe, version, q, tool.code, chamber)
