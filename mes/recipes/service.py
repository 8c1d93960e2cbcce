"""Recipes and recipe versions: drafts change, approved versions are immutable."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.clock import Clock
from mes.equipment import service as equipment_service
from mes.equipment.models import Chamber, Equipment
from mes.errors import Conflict, NotFound
from mes.fabs import service as fabs_service
from mes.kit.lookup import get_by_key
from mes.recipes.models import Recipe, RecipeQualification, RecipeVersion, RecipeVersionStatus
from mes.recipes.rules import body_checksum
from mes.recipes.schemas import (
    QualificationCreate,
    RecipeBody,
    RecipeCreate,
    RecipeUpdate,
    RecipeVersionCreate,
)

RECIPE_OPTIONS = (selectinload(Recipe.tool_group), selectinload(Recipe.versions))


async def get_recipe(session: AsyncSession, name: str, *, for_update: bool = False) -> Recipe:
    """The recipe ``name`` with its versions, or recipe.not_found."""
    return await get_by_key(
        session,
        Recipe,
        Recipe.name,
        name,
        code="recipe.not_found",
        what="recipe",
        options=RECIPE_OPTIONS,
        for_update=for_update,
    )


def find_version(recipe: Recipe, version: int) -> RecipeVersion:
    for candidate in recipe.versions:
        if candidate.version == version:
            return candidate
    raise NotFound(
        f"recipe {recipe.name!r} has no version {version}", code="recipe.version_not_found"
    )


def _new_version(number: int, body: RecipeBody, actor: str) -> RecipeVersion:
    document = body.model_dump(mode="json")
    return RecipeVersion(
        version=number, body=document, checksum=body_checksum(document), created_by=actor
    )


async def create_recipe(session: AsyncSession, data: RecipeCreate, *, actor: str) -> Recipe:
    """Create a recipe for a tool group with version 1 as a draft."""
    if await session.scalar(select(Recipe.id).where(Recipe.name == data.name)) is not None:
        raise Conflict(f"recipe {data.name!r} already exists", code="recipe.duplicate")
    group = await fabs_service.get_tool_group(session, data.tool_group)
    recipe = Recipe(name=data.name, tool_group_id=group.id, description=data.description)
    recipe.versions = [_new_version(1, data.body, actor)]
    session.add(recipe)
    await session.flush()
    return await get_recipe(session, data.name)


async def update_recipe(session: AsyncSession, name: str, data: RecipeUpdate) -> Recipe:
    """Change a recipe's description."""
    recipe = await get_recipe(session, name)
    recipe.description = data.description
    await session.flush()
    return recipe


async def add_version(
    session: AsyncSession, name: str, data: RecipeVersionCreate, *, actor: str
) -> RecipeVersion:
    """Start a new draft version of a recipe."""
    recipe = await get_recipe(session, name, for_update=True)
    latest = await session.scalar(
        select(func.max(RecipeVersion.version)).where(RecipeVersion.recipe_id == recipe.id)
    )
    version = _new_version((latest or 0) + 1, data.body, actor)
    recipe.versions.append(version)
    await session.flush()
    return version


def _require_draft(recipe: Recipe, version: RecipeVersion) -> None:
    if version.status != RecipeVersionStatus.DRAFT:
        raise Conflict(
            f"recipe {recipe.name!r} version {version.version} is {version.status.value}; "
            "approved and obsolete versions never change",
            code="recipe.version_not_draft",
        )


async def update_draft(
    session: AsyncSession, name: str, number: int, body: RecipeBody
) -> RecipeVersion:
    """Replace the body of a draft version (its checksum follows)."""
    recipe = await get_recipe(session, name, for_update=True)
    version = find_version(recipe, number)
    _require_draft(recipe, version)
    document = body.model_dump(mode="json")
    version.body = document
    version.checksum = body_checksum(document)
    await session.flush()
    return version


async def approve_version(
    session: AsyncSession, name: str, number: int, *, actor: str, clock: Clock
) -> RecipeVersion:
    """Approve a draft; its author may not approve it (four eyes)."""
    recipe = await get_recipe(session, name, for_update=True)
    version = find_version(recipe, number)
    _require_draft(recipe, version)
    if version.created_by == actor:
        raise Conflict(
            "a recipe version needs a second engineer's approval, not its author's",
            code="recipe.four_eyes",
        )
    version.status = RecipeVersionStatus.APPROVED
    version.approved_by = actor
    version.approved_at = clock.now()
    await session.flush()
    return version


async def qualify(
    session: AsyncSession,
    name: str,
    number: int,
    data: QualificationCreate,
    *,
    actor: str,
    clock: Clock,
) -> tuple[RecipeQualification, Equipment, str | None]:
    """Qualify a recipe version on a tool, or on one chamber of it."""
    recipe = await get_recipe(session, name)
    version = find_version(recipe, number)
    if version.status == RecipeVersionStatus.OBSOLETE:
        raise Conflict("an obsolete recipe version cannot be qualified", code="recipe.obsolete")
    tool = await equipment_service.get_equipment(session, data.tool)
    if tool.tool_group_id != recipe.tool_group_id:
        raise Conflict(
            f"tool {tool.code!r} is not in the recipe's tool group",
            code="recipe.tool_group_mismatch",
        )
    chamber: Chamber | None = None
    if data.chamber is not None:
        chamber = next((c for c in tool.chambers if c.name == data.chamber), None)
        if chamber is None:
            raise NotFound(
                f"tool {tool.code!r} has no chamber {data.chamber!r}",
                code="tool.chamber_not_found",
            )
    existing = await session.scalar(
        select(RecipeQualification.id).where(
            RecipeQualification.recipe_version_id == version.id,
            RecipeQualification.equipment_id == tool.id,
            RecipeQualification.chamber_id.is_(None)
            if chamber is None
            else RecipeQualification.chamber_id == chamber.id,
        )
    )
    if existing is not None:
        raise Conflict("this qualification already exists", code="recipe.already_qualified")
    now = clock.now()
    if data.expires_at is not None and data.expires_at <= now:
        raise Conflict("the expiry lies in the past", code="recipe.expiry_in_past")
    qualification = RecipeQualification(
        recipe_version_id=version.id,
        fab_id=tool.fab_id,
        equipment_id=tool.id,
        chamber_id=chamber.id if chamber else None,
        qualified_at=now,
        expires_at=data.expires_at,
        qualified_by=actor,
    )
    session.add(qualification)
    await session.flush()
    return qualification, tool, chamber.name if chamber else None


async def qualifications(
    session: AsyncSession, name: str, number: int
) -> list[tuple[RecipeQualification, str, str | None]]:
    """Where a recipe version is qualified: (qualification, tool code, chamber name)."""
    version = find_version(await get_recipe(session, name), number)
    rows = await session.execute(
        select(RecipeQualification, Equipment.code, Chamber.name)
        .join(Equipment, Equipment.id == RecipeQualification.equipment_id)
        .outerjoin(Chamber, Chamber.id == RecipeQualification.chamber_id)
        .where(RecipeQualification.recipe_version_id == version.id)
        # NULLS FIRST: the tool-wide qualification before its chambers on every backend
        # (SQLite sorts NULL first by default, PostgreSQL last).
        .order_by(Equipment.code, Chamber.name.nulls_first())
    )
    return [(q, tool, chamber) for q, tool, chamber in rows.all()]
