"""What a lot would run on a tool now, and why: served under /recipes, answered by lots.

The question needs a lot at its step (lots) and the recipe context rules and qualifications
(recipes); it lives with the higher of the two so that recipes never reaches up to lots.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mes.db.transaction import ReadSession
from mes.kit.api import ClockDep, CodeStr
from mes.lots import service
from mes.recipes import rules as recipe_rules
from mes.recipes import service as recipes_service
from mes.recipes.reads import qualification_read, rule_read
from mes.recipes.schemas import Refusal, Resolution, ResolutionContext, ResolvedStep

# Mounted before the recipes router: /recipes/{recipe} would otherwise take "resolve" for a
# recipe name.
router = APIRouter(prefix="/recipes", tags=["recipes"])


@router.get("/resolve", response_model=Resolution)
async def resolve(
    session: ReadSession,
    clock: ClockDep,
    lot: Annotated[CodeStr, Query(description="the lot, at its current step")],
    tool: Annotated[CodeStr, Query()],
    chamber: Annotated[str | None, Query(min_length=1, max_length=16)] = None,
) -> Resolution:
    """What a lot would run on a tool now, and why: the context, every context rule that
    matched (most specific first, by the precedence listed), the winner, the recipe version
    chosen and the qualification that allows it, or the refusal track-in would give."""
    now = clock.now()
    q = await service.explain_recipe(session, lot, tool, chamber, now=now)
    outcome = q.outcome
    resolution = outcome.resolution if outcome else None
    rules_by_id = {
        r.id: row
        for r, row in await recipes_service.context_rules(
            session, logical_recipes=[q.step.recipe_name or ""]
        )
    }
    version = outcome.version if outcome else None
    qualification = outcome.qualification if outcome else None
    chamber_name = None
    if qualification is not None and qualification.chamber_id is not None:
        chamber_name = next(
            (c.name for c in q.tool.chambers if c.id == qualification.chamber_id), None
        )
    return Resolution(
        lot=q.lot.code,
        step=ResolvedStep(
            route=q.route,
            route_version=q.route_version,
            sequence=q.step.sequence,
            operation=q.step.operation,
        ),
        logical_recipe=q.step.recipe_name,
        context=ResolutionContext(
            product=q.product,
            step=q.step.operation,
            tool_group=q.tool_group,
            tool=q.tool.code,
            chamber=chamber,
        ),
        precedence=list(recipe_rules.PRECEDENCE),
        rule=rule_read(resolution.rule, rules_by_id[resolution.rule.id])
        if resolution and resolution.rule
        else None,
        matched_rules=[rule_read(r, rules_by_id[r.id]) for r in resolution.matched]
        if resolution
        else [],
        recipe=resolution.recipe if resolution else None,
        version=version.version if version else None,
        checksum=version.checksum if version else None,
        qualification=qualification_read(
            version.recipe.name, version.version, qualification, q.tool.code, chamber_name, now
        )
        if version and qualification
        else None,
        runnable=q.refusal is None,
        chambers=q.chambers,
        refusal=Refusal(code=q.refusal.code, detail=q.refusal.detail) if q.refusal else None,
    )
