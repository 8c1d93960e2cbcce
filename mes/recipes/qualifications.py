"""The qualification matrix: which recipe version may run on which tool (or chamber), until
when; qualifying, withdrawing (disqualifying) and listing qualifications."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.equipment import service as equipment_service
from mes.equipment.models import Chamber, Equipment
from mes.errors import Conflict, NotFound
from mes.fabs.models import Fab, ToolGroup
from mes.recipes.models import Recipe, RecipeQualification, RecipeVersion, RecipeVersionStatus
from mes.recipes.schemas import Disqualification, QualificationCreate
from mes.recipes.versions import find_version, get_recipe


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
            RecipeQualification.disqualified_at.is_(None),
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


def standing(now: datetime) -> ColumnElement[bool]:
    """A qualification that allows running now: not withdrawn, not expired."""
    return and_(
        RecipeQualification.disqualified_at.is_(None),
        or_(RecipeQualification.expires_at.is_(None), RecipeQualification.expires_at > now),
    )


async def disqualify(
    session: AsyncSession,
    name: str,
    number: int,
    tool_code: str,
    data: Disqualification,
    *,
    actor: str,
    clock: Clock,
) -> tuple[RecipeQualification, Equipment, str | None]:
    """Withdraw a standing qualification. Track-in and dispatch stop using it at once: track-in
    reads qualifications under a share lock, so this update waits for track-ins in flight and
    every later one sees it."""
    recipe = await get_recipe(session, name)
    version = find_version(recipe, number)
    tool = await equipment_service.get_equipment(session, tool_code)
    chamber_id: int | None = None
    if data.chamber is not None:
        chamber_id = next((c.id for c in tool.chambers if c.name == data.chamber), None)
        if chamber_id is None:
            raise NotFound(
                f"tool {tool.code!r} has no chamber {data.chamber!r}",
                code="tool.chamber_not_found",
            )
    qualification = await session.scalar(
        select(RecipeQualification)
        .where(
            RecipeQualification.recipe_version_id == version.id,
            RecipeQualification.equipment_id == tool.id,
            RecipeQualification.chamber_id.is_(None)
            if chamber_id is None
            else RecipeQualification.chamber_id == chamber_id,
            RecipeQualification.disqualified_at.is_(None),
        )
        .with_for_update(key_share=True)
    )
    if qualification is None:
        raise NotFound(
            f"recipe {name!r} version {number} is not qualified on {tool.code!r}"
            + (f" chamber {data.chamber!r}" if data.chamber else ""),
            code="recipe.not_qualified",
        )
    qualification.disqualified_at = clock.now()
    qualification.disqualified_by = actor
    qualification.disqualify_reason = data.reason
    await session.flush()
    return qualification, tool, data.chamber


async def qualification_matrix(
    session: AsyncSession,
    *,
    now: datetime,
    tool: str | None = None,
    recipe: str | None = None,
    tool_group: str | None = None,
    fab: str | None = None,
    include_history: bool = False,
) -> list[tuple[RecipeQualification, str, int, str, str | None]]:
    """Qualifications as (row, recipe, version, tool, chamber); standing ones unless history."""
    stmt = (
        select(
            RecipeQualification, Recipe.name, RecipeVersion.version, Equipment.code, Chamber.name
        )
        .join(RecipeVersion, RecipeVersion.id == RecipeQualification.recipe_version_id)
        .join(Recipe, Recipe.id == RecipeVersion.recipe_id)
        .join(Equipment, Equipment.id == RecipeQualification.equipment_id)
        .outerjoin(Chamber, Chamber.id == RecipeQualification.chamber_id)
        .order_by(
            Recipe.name,
            RecipeVersion.version,
            Equipment.code,
            Chamber.name.nulls_first(),
            RecipeQualification.qualified_at,
        )
    )
    if not include_history:
        stmt = stmt.where(standing(now))
    if tool is not None:
        stmt = stmt.where(Equipment.code == tool)
    if recipe is not None:
        stmt = stmt.where(Recipe.name == recipe)
    if tool_group is not None:
        stmt = stmt.join(ToolGroup, ToolGroup.id == Recipe.tool_group_id).where(
            ToolGroup.code == tool_group
        )
    if fab is not None:
        stmt = stmt.join(Fab, Fab.id == RecipeQualification.fab_id).where(Fab.code == fab)
    return [tuple(row) for row in (await session.execute(stmt)).all()]  # type: ignore[misc]
