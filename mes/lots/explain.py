"""What would run: the recipe a lot at its step would run on a tool now, and why not if not."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.equipment.models import Equipment
from mes.errors import MesError, NotFound, RuleViolation
from mes.kit.lookup import get_by_key
from mes.lots import rules
from mes.lots._core import route_steps, step_of
from mes.lots.chambers import choose_run
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
    refusal: MesError | None
    chambers: list[str] = field(default_factory=list)


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
    # The same choice track-in makes: per chamber on a cluster tool.
    choice = await choose_run(
        session, lot, step, tool, now, (chamber,) if chamber else None, lock=False
    )
    return replace(
        question, outcome=choice.outcome, refusal=choice.refusal, chambers=choice.chambers
    )
