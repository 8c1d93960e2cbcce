"""What runs where: context rules say which recipe a logical recipe name means for a product,
step, tool group, tool or chamber; ``resolve_on_tool`` resolves a step's logical recipe on a
tool and picks the newest approved version with a standing qualification there."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, contains_eager

from mes.equipment import service as equipment_service
from mes.equipment.models import Chamber, Equipment
from mes.errors import Conflict, NotFound, RuleViolation
from mes.fabs import service as fabs_service
from mes.fabs.models import ToolGroup
from mes.products import service as products_service
from mes.products.models import Product
from mes.recipes import rules
from mes.recipes.models import (
    Recipe,
    RecipeContextRule,
    RecipeQualification,
    RecipeVersion,
    RecipeVersionStatus,
)
from mes.recipes.qualifications import standing
from mes.recipes.schemas import ContextRuleCreate
from mes.recipes.versions import get_recipe


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


# The rules of one logical recipe (every track-in asks): a six-join statement, built once.
_RULES_OF_ONE = _rule_query().where(RecipeContextRule.logical_recipe == bindparam("logical_recipe"))


async def context_rules(
    session: AsyncSession, *, logical_recipes: Collection[str] | None = None
) -> list[tuple[rules.ContextRule, RecipeContextRule]]:
    """Context rules with their codes, optionally only those for some logical recipe names."""
    if logical_recipes is not None and len(logical_recipes) == 1:
        (name,) = logical_recipes
        found = await session.execute(_RULES_OF_ONE, {"logical_recipe": name})
    else:
        stmt = _rule_query()
        if logical_recipes is not None:
            stmt = stmt.where(RecipeContextRule.logical_recipe.in_(logical_recipes))
        found = await session.execute(stmt)
    rows: list[Any] = list(found.all())
    return [(_rule_view(row), row[0]) for row in rows]


async def create_context_rule(
    session: AsyncSession, data: ContextRuleCreate, *, actor: str
) -> tuple[rules.ContextRule, RecipeContextRule]:
    """Say which recipe a logical recipe means in a context."""
    recipe = await get_recipe(session, data.recipe)
    product_id = group_id = tool_id = chamber_id = None
    if data.product is not None:
        product_id = (await products_service.get_product(session, data.product)).id
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
    with a standing qualification on the tool — tool-wide, or for ``chamber`` if one is named
    (without a chamber, a chamber-only qualification does not qualify the tool).

    ``lock`` takes a share lock on the qualification used (track-in), so that a concurrent
    disqualification waits for this transaction and never races it.
    """
    found = await resolve_in_chambers(
        session,
        logical_recipe=logical_recipe,
        product_id=product_id,
        operation=operation,
        tool=tool,
        chambers=[chamber],
        now=now,
        lock=lock,
    )
    return found[chamber]


async def resolve_in_chambers(
    session: AsyncSession,
    *,
    logical_recipe: str,
    product_id: int,
    operation: str,
    tool: Equipment,
    chambers: Sequence[str | None],
    now: datetime,
    lock: bool = False,
) -> dict[str | None, RunnableRecipe]:
    """``resolve_on_tool`` for several chambers of one tool at once (None: the tool as a
    whole). The context rules are read once and one qualification query runs per distinct
    recipe the chambers resolve to (usually one), so a cluster tool costs no more than a
    single-chamber one."""
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
    resolutions = {
        chamber: rules.resolve(
            logical_recipe,
            [c for c, _ in candidates],
            rules.Context(
                product=product_code,
                step=operation,
                tool_group=group_code,
                tool=tool.code,
                chamber=chamber,
            ),
        )
        for chamber in chambers
    }
    chamber_ids = {c.name: c.id for c in tool.chambers}
    outcomes: dict[str | None, RunnableRecipe] = {}
    for recipe_name in sorted({r.recipe for r in resolutions.values()}):
        wanted = [ch for ch, r in resolutions.items() if r.recipe == recipe_name]
        rows = await _qualified_versions(
            session, recipe_name, tool, [chamber_ids.get(ch or "") for ch in wanted], now, lock
        )
        for chamber in wanted:
            cid = chamber_ids.get(chamber) if chamber is not None else None
            # A chamber runs what the whole tool is qualified for, or what it is itself.
            best = next(
                ((v, q) for v, q in rows if q.chamber_id is None or q.chamber_id == cid), None
            )
            if best is not None:
                outcomes[chamber] = RunnableRecipe(resolutions[chamber], best[0], best[1], None)
            else:
                outcomes[chamber] = RunnableRecipe(
                    resolutions[chamber],
                    None,
                    None,
                    await _why_not(session, recipe_name, tool.code, chamber),
                )
    return outcomes


async def _qualified_versions(
    session: AsyncSession,
    recipe_name: str,
    tool: Equipment,
    chamber_ids: Sequence[int | None],
    now: datetime,
    lock: bool,
) -> list[tuple[RecipeVersion, RecipeQualification]]:
    """Approved versions of a recipe with a standing qualification on the tool as a whole or
    on one of these chambers: newest version first, the tool-wide qualification first."""
    specific = [cid for cid in chamber_ids if cid is not None]
    stmt = (
        select(RecipeVersion, RecipeQualification)
        .join(Recipe, Recipe.id == RecipeVersion.recipe_id)
        .join(RecipeQualification, RecipeQualification.recipe_version_id == RecipeVersion.id)
        .where(
            Recipe.name == recipe_name,
            RecipeVersion.status == RecipeVersionStatus.APPROVED,
            RecipeQualification.equipment_id == tool.id,
            standing(now),
            or_(
                RecipeQualification.chamber_id.is_(None),
                RecipeQualification.chamber_id.in_(specific),
            )
            if specific
            else RecipeQualification.chamber_id.is_(None),
        )
        # The recipe from the join above (selectinload was a second round trip per track-in).
        .options(contains_eager(RecipeVersion.recipe))
        .order_by(RecipeVersion.version.desc(), RecipeQualification.chamber_id.nulls_first())
    )
    if lock:
        stmt = stmt.with_for_update(read=True, of=RecipeQualification)
    return [(v, q) for v, q in (await session.execute(stmt)).all()]


async def _why_not(
    session: AsyncSession, recipe_name: str, tool_code: str, chamber: str | None
) -> RuleViolation:
    approved = await session.scalar(
        select(RecipeVersion.id)
        .join(Recipe, Recipe.id == RecipeVersion.recipe_id)
        .where(Recipe.name == recipe_name, RecipeVersion.status == RecipeVersionStatus.APPROVED)
        .limit(1)
    )
    if approved is None:
        return RuleViolation("recipe.not_approved", f"recipe {recipe_name} has no approved version")
    where = f"tool {tool_code}" + (f" chamber {chamber}" if chamber else "")
    return RuleViolation(
        "tool.not_qualified", f"no approved version of {recipe_name} is qualified on {where}"
    )
