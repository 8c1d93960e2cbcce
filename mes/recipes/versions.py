"""Recipes and their versions: drafts change, approved versions are immutable (four eyes to
approve), an approved version may be retired (obsolete); parameter differences between versions.
Bodies are checked against the tool group's parameter schema (``parameters``)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.clock import Clock
from mes.errors import Conflict, NotFound
from mes.fabs import service as fabs_service
from mes.kit.lookup import get_by_key
from mes.recipes import rules
from mes.recipes.models import Recipe, RecipeVersion, RecipeVersionStatus
from mes.recipes.parameters import check_body
from mes.recipes.rules import body_checksum
from mes.recipes.schemas import RecipeBody, RecipeCreate, RecipeUpdate, RecipeVersionCreate

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
    await check_body(session, group.id, recipe.versions[0].body)
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
    await check_body(session, recipe.tool_group_id, version.body)
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
    await check_body(session, recipe.tool_group_id, document)
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
            code="recipe.same_approver",
        )
    # The schema may have tightened since the draft was written.
    await check_body(session, recipe.tool_group_id, version.body)
    version.status = RecipeVersionStatus.APPROVED
    version.approved_by = actor
    version.approved_at = clock.now()
    await session.flush()
    return version


async def obsolete_version(
    session: AsyncSession, name: str, number: int, *, actor: str, clock: Clock
) -> RecipeVersion:
    """Retire an approved version: it no longer resolves, so no lot runs it any more."""
    recipe = await get_recipe(session, name, for_update=True)
    version = find_version(recipe, number)
    if version.status != RecipeVersionStatus.APPROVED:
        raise Conflict(
            f"recipe {name!r} version {number} is {version.status.value}; "
            "only approved versions become obsolete",
            code="recipe.not_approved",
        )
    version.status = RecipeVersionStatus.OBSOLETE
    version.obsoleted_by = actor
    version.obsoleted_at = clock.now()
    await session.flush()
    return version


async def diff_versions(
    session: AsyncSession, name: str, before: int, after: int
) -> tuple[RecipeVersion, RecipeVersion, list[rules.ParameterChange]]:
    """Parameter-level differences between two versions of a recipe."""
    recipe = await get_recipe(session, name)
    a, b = find_version(recipe, before), find_version(recipe, after)
    return a, b, rules.diff_bodies(a.body["parameters"], b.body["parameters"])
