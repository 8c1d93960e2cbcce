"""What would run: the recipe a lot at its step would run on a tool now, and why not if not."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.equipment.models import Equipment
from mes.errors import NotFound, RuleViolation
from mes.kit.lookup import get_by_key
from mes.lots import rules
from mes.lots._core import route_steps, step_of
from mes.lots.models import Lot
from mes.lots.queries import get_lot
from mes.recipes import service as recipes_service


@dataclass(frozen=True)
class RecipeQuestion:
    """A lot at its step, asked what it would run on a tool (GET /recipes/resolve)."""

    lot: Lot
    route: str
    route_version: int
    step: rules.StepView
    tool: Equipment
    product: str
    tool_group: str
    outcome: recipes_service.RunnableRecipe | None
    refusal: RuleViolation | None


async def explain_recipe(
    session: AsyncSession, code: str, tool_code: str, chamber: str | None, *, now: datetime
) -> RecipeQuestion:
    """Resolve the recipe a lot would run on a tool now, without tracking it in."""
    lot = await get_lot(session, code)
    if lot.current_step_id is None:
        raise RuleViolation("lot.no_step", f"lot {code} is not at a step ({lot.state.value})")
    step = step_of(await route_steps(session, lot.route_version_id), lot.current_step_id)
    tool = await get_by_key(
        session,
        Equipment,
        Equipment.code,
        tool_code,
        code="tool.not_found",
        what="tool",
        options=(selectinload(Equipment.chambers), selectinload(Equipment.tool_group)),
    )
    if chamber is not None and all(c.name != chamber for c in tool.chambers):
        raise NotFound(
            f"tool {tool.code} has no chamber {chamber!r}", code="tool.chamber_not_found"
        )
    question = RecipeQuestion(
        lot=lot,
        route=lot.route_version.route.code,
        route_version=lot.route_version.version,
        step=step,
        tool=tool,
        product=lot.product.code,
        tool_group=tool.tool_group.code,
        outcome=None,
        refusal=None,
    )
    if tool.tool_group_id != step.tool_group_id:
        return replace(
            question,
            refusal=RuleViolation(
                "tool.wrong_group", f"tool {tool.code} is not in the tool group of the lot's step"
            ),
        )
    if step.recipe_name is None:
        return replace(
            question,
            refusal=RuleViolation("recipe.not_approved", f"step {step.sequence} names no recipe"),
        )
    outcome = await recipes_service.resolve_on_tool(
        session,
        logical_recipe=step.recipe_name,
        product_id=lot.product_id,
        operation=step.operation,
        tool=tool,
        chamber=chamber,
        now=now,
    )
    return replace(question, outcome=outcome, refusal=outcome.refusal)
