"""Recipes and recipe versions: drafts change, approved versions are immutable; parameter
schemas per tool group, context rules, the qualification matrix, and what runs where."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, selectinload

from mes.clock import Clock
from mes.equipment import service as equipment_service
from mes.equipment.models import Chamber, Equipment
from mes.errors import Conflict, InvalidInput, NotFound, RuleViolation
from mes.fabs import service as fabs_service
from mes.fabs.models import Fab, ToolGroup
from mes.kit.lookup import get_by_key
from mes.recipes import rules
from mes.recipes.models import (
    Recipe,
    RecipeContextRule,
    RecipeParameterSpec,
    RecipeQualification,
    RecipeVersion,
    RecipeVersionStatus,
)
from mes.recipes.rules import body_checksum
from mes.recipes.schemas import (
    ContextRuleCreate,
    Disqualification,
    ParameterSchema,
    QualificationCreate,
    RecipeBody,
    RecipeCreate,
    RecipeUpdate,
    RecipeVersionCreate,
)
from mes.routes.models import Product

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


# ---- parameter schema ------------------------------------------------------------------


async def parameter_specs(session: AsyncSession, tool_group_id: int) -> list[RecipeParameterSpec]:
    return list(
        await session.scalars(
            select(RecipeParameterSpec)
            .where(RecipeParameterSpec.tool_group_id == tool_group_id)
            .order_by(RecipeParameterSpec.name)
        )
    )


def _spec(row: RecipeParameterSpec) -> rules.ParameterSpec:
    return rules.ParameterSpec(
        name=row.name,
        kind=row.kind,
        unit=row.unit,
        lower=row.lower,
        upper=row.upper,
        required=row.required,
    )


async def check_body(session: AsyncSession, tool_group_id: int, document: dict[str, Any]) -> None:
    """Refuse a body that the tool group's parameter schema does not allow."""
    specs = {r.name: _spec(r) for r in await parameter_specs(session, tool_group_id)}
    problems = rules.body_problems(document["parameters"], specs)
    if problems:
        raise InvalidInput(
            "the recipe body does not fit its tool group's parameter schema",
            code="recipe.invalid_body",
            errors=[{"msg": p} for p in problems],
        )


async def replace_parameter_schema(
    session: AsyncSession, tool_group_code: str, schema: ParameterSchema
) -> tuple[ToolGroup, list[RecipeParameterSpec]]:
    """Set the parameters recipes of a tool group may use (approved versions stay as they are;
    new drafts and approvals are checked against the new schema)."""
    group = await fabs_service.get_tool_group(session, tool_group_code)
    existing = {r.name: r for r in await parameter_specs(session, group.id)}
    wanted = {p.name: p for p in schema.parameters}
    for name, row in existing.items():
        if name not in wanted:
            await session.delete(row)
    for name, spec in wanted.items():
        if name in existing:
            row = existing[name]
        else:
            row = RecipeParameterSpec(tool_group_id=group.id, name=name)
            session.add(row)
        for field, value in spec.model_dump(exclude={"name"}).items():
            # Assign only real changes, so the audit trail shows what changed.
            if getattr(row, field, None) != value:
                setattr(row, field, value)
    await session.flush()
    return group, await parameter_specs(session, group.id)


# ---- lifecycle beyond approval ---------------------------------------------------------


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


# ---- qualification matrix --------------------------------------------------------------


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


# ---- context rules ---------------------------------------------------------------------


def _rule_query() -> Select[RecipeContextRule, str, str, str, str, str, str]:
    RecipeGroup = aliased(ToolGroup)
    RuleGroup = aliased(ToolGroup)
    return (
        select(
            RecipeContextRule,
            Recipe.name,
            RecipeGroup.code,
            Product.code,
            RuleGroup.code,
            Equipment.code,
            Chamber.name,
        )
        .join(Recipe, Recipe.id == RecipeContextRule.recipe_id)
        .join(RecipeGroup, RecipeGroup.id == Recipe.tool_group_id)
        .outerjoin(Product, Product.id == RecipeContextRule.product_id)
        .outerjoin(RuleGroup, RuleGroup.id == RecipeContextRule.tool_group_id)
        .outerjoin(Equipment, Equipment.id == RecipeContextRule.equipment_id)
        .outerjoin(Chamber, Chamber.id == RecipeContextRule.chamber_id)
        .order_by(RecipeContextRule.logical_recipe, RecipeContextRule.context_key)
    )


def _rule_view(row: Any) -> rules.ContextRule:
    rule, recipe, recipe_group, product, group, tool, chamber = row
    return rules.ContextRule(
        id=rule.id,
        logical_recipe=rule.logical_recipe,
        recipe=recipe,
        recipe_tool_group=recipe_group,
        product=product,
        step=rule.operation,
        tool_group=group,
        tool=tool,
        chamber=chamber,
    )


async def context_rules(
    session: AsyncSession, *, logical_recipes: Collection[str] | None = None
) -> list[tuple[rules.ContextRule, RecipeContextRule]]:
    """Context rules with their codes, optionally only those for some logical recipe names."""
    stmt = _rule_query()
    if logical_recipes is not None:
        stmt = stmt.where(RecipeContextRule.logical_recipe.in_(logical_recipes))
    rows: list[Any] = list((await session.execute(stmt)).all())
    return [(_rule_view(row), row[0]) for row in rows]


async def create_context_rule(
    session: AsyncSession, data: ContextRuleCreate, *, actor: str
) -> tuple[rules.ContextRule, RecipeContextRule]:
    """Say which recipe a logical recipe means in a context."""
    recipe = await get_recipe(session, data.recipe)
    product_id = group_id = tool_id = chamber_id = None
    if data.product is not None:
        product_id = (
            await get_by_key(
                session,
                Product,
                Product.code,
                data.product,
                code="product.not_found",
                what="product",
            )
        ).id
    if data.tool_group is not None:
        group_id = (await fabs_service.get_tool_group(session, data.tool_group)).id
        if group_id != recipe.tool_group_id:
            raise Conflict(
                f"recipe {recipe.name!r} is for tool group {recipe.tool_group.code!r}",
                code="recipe.tool_group_mismatch",
            )
    if data.tool is not None:
        tool = await equipment_service.get_equipment(session, data.tool)
        if tool.tool_group_id != recipe.tool_group_id:
            raise Conflict(
                f"tool {tool.code!r} is not in the tool group of recipe {recipe.name!r}",
                code="recipe.tool_group_mismatch",
            )
        tool_id = tool.id
        if data.chamber is not None:
            chamber_id = next((c.id for c in tool.chambers if c.name == data.chamber), None)
            if chamber_id is None:
                raise NotFound(
                    f"tool {tool.code!r} has no chamber {data.chamber!r}",
                    code="tool.chamber_not_found",
                )
    key = rules.context_key(
        data.logical_recipe,
        {
            "product": data.product,
            "step": data.step,
            "tool_group": data.tool_group,
            "tool": data.tool,
            "chamber": data.chamber,
        },
    )
    if await session.scalar(
        select(RecipeContextRule.id).where(RecipeContextRule.context_key == key)
    ):
        raise Conflict(
            f"a rule for {data.logical_recipe!r} in this context already exists",
            code="recipe.context_rule_exists",
        )
    row = RecipeContextRule(
        logical_recipe=data.logical_recipe,
        product_id=product_id,
        operation=data.step,
        tool_group_id=group_id,
        equipment_id=tool_id,
        chamber_id=chamber_id,
        recipe_id=recipe.id,
        context_key=key,
        created_by=actor,
        note=data.note,
    )
    session.add(row)
    await session.flush()
    found = await session.execute(_rule_query().where(RecipeContextRule.id == row.id))
    return _rule_view(found.one()), row


async def delete_context_rule(session: AsyncSession, rule_id: int) -> None:
    """Remove a context rule; the logical name falls back to the next matching rule."""
    row = await session.get(RecipeContextRule, rule_id, with_for_update={"key_share": True})
    if row is None:
        raise NotFound(
            f"context rule {rule_id} does not exist", code="recipe.context_rule_not_found"
        )
    await session.delete(row)
    await session.flush()


# ---- what runs where -------------------------------------------------------------------


@dataclass(frozen=True)
class RunnableRecipe:
    """The outcome of resolving a step on a tool: the recipe version to run, or why none."""

    resolution: rules.Resolution
    version: RecipeVersion | None
    qualification: RecipeQualification | None
    refusal: RuleViolation | None


async def resolve_on_tool(
    session: AsyncSession,
    *,
    logical_recipe: str,
    product_id: int,
    operation: str,
    tool: Equipment,
    chamber: str | None,
    now: datetime,
    lock: bool = False,
) -> RunnableRecipe:
    """Resolve a step's logical recipe by context, then pick the newest approved version of it
    with a standing qualification on the tool (or the chamber).

    ``lock`` takes a share lock on the qualification used (track-in), so that a concurrent
    disqualification waits for this transaction and never races it.
    """
    candidates = await context_rules(session, logical_recipes=[logical_recipe])
    product_code = group_code = ""
    if candidates:  # codes are needed only to match rules, and most recipes have none
        product_code = (
            await session.scalar(select(Product.code).where(Product.id == product_id)) or ""
        )
        group_code = (
            await session.scalar(select(ToolGroup.code).where(ToolGroup.id == tool.tool_group_id))
            or ""
        )
    context = rules.Context(
        product=product_code,
        step=operation,
        tool_group=group_code,
        tool=tool.code,
        chamber=chamber,
    )
    resolution = rules.resolve(logical_recipe, [c for c, _ in candidates], context)
    approved = (
        select(RecipeVersion)
        .join(Recipe, Recipe.id == RecipeVersion.recipe_id)
        .where(
            Recipe.name == resolution.recipe,
            RecipeVersion.status == RecipeVersionStatus.APPROVED,
        )
    )
    chamber_id = None
    if chamber is not None:
        chamber_id = next((c.id for c in tool.chambers if c.name == chamber), None)
    where_qualified = [
        RecipeQualification.equipment_id == tool.id,
        standing(now),
    ]
    if chamber is not None:
        # A chamber runs what the whole tool is qualified for, or what it is itself.
        where_qualified.append(
            or_(
                RecipeQualification.chamber_id.is_(None),
                RecipeQualification.chamber_id == chamber_id,
            )
        )
    stmt = (
        select(RecipeVersion, RecipeQualification)
        .join(Recipe, Recipe.id == RecipeVersion.recipe_id)
        .join(RecipeQualification, RecipeQualification.recipe_version_id == RecipeVersion.id)
        .where(
            Recipe.name == resolution.recipe,
            RecipeVersion.status == RecipeVersionStatus.APPROVED,
            *where_qualified,
        )
        .options(selectinload(RecipeVersion.recipe))
        .order_by(RecipeVersion.version.desc(), RecipeQualification.chamber_id.nulls_first())
        .limit(1)
    )
    if lock:
        stmt = stmt.with_for_update(read=True, of=RecipeQualification)
    found = (await session.execute(stmt)).first()
    if found is not None:
        return RunnableRecipe(resolution, found[0], found[1], None)
    where = f"tool {tool.code}" + (f" chamber {chamber}" if chamber else "")
    if (await session.scalars(approved.limit(1))).first() is None:
        refusal = RuleViolation(
            "recipe.not_approved", f"recipe {resolution.recipe} has no approved version"
        )
    else:
        refusal = RuleViolation(
            "tool.not_qualified",
            f"no approved version of {resolution.recipe} is qualified on {where}",
        )
    return RunnableRecipe(resolution, None, None, refusal)
