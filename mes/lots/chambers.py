"""Which chambers of a cluster tool run a lot, and with which recipe version: context
resolution and qualification are per chamber (a version qualified on PM1 only runs in PM1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mes.equipment.models import Equipment
from mes.equipment.states import E10State
from mes.errors import MesError, NotFound, RuleViolation
from mes.lots import rules
from mes.lots.models import Lot
from mes.recipes import service as recipes_service

UP = (E10State.SBY, E10State.PRD)


@dataclass(frozen=True)
class ChamberChoice:
    """The run a track-in would make: the resolution of its first chamber (or of the tool as
    a whole) with the version to run, the chambers that run it, or why it may not run."""

    outcome: recipes_service.RunnableRecipe | None
    chambers: list[str] = field(default_factory=list)
    refusal: MesError | None = None


async def choose_run(
    session: AsyncSession,
    lot: Lot,
    step: rules.StepView,
    tool: Equipment,
    now: datetime,
    asked: tuple[str, ...] | None,
    *,
    lock: bool,
    up: tuple[E10State, ...] = UP,
) -> ChamberChoice:
    """Resolve the step's logical recipe in each chamber (context rules may name a chamber),
    then the newest approved version with a standing qualification on the tool or on that
    chamber. The chambers are those named — each must exist, be up and be qualified, and all
    run one version — or, if none are named, the up chambers that may run it
    (``rules.chambers_to_run``). A tool without chambers runs as a whole and needs a
    tool-wide qualification. ``up``: the chamber states that may run the lot (a signed
    engineering run may use chambers in ENG too)."""
    if step.recipe_name is None:  # only drafts lack recipes; lots run activated versions
        return ChamberChoice(
            None,
            refusal=RuleViolation("recipe.not_approved", f"step {step.sequence} names no recipe"),
        )
    by_name = {c.name: c for c in tool.chambers}
    tried: list[str | None]
    if asked:
        unknown = [name for name in asked if name not in by_name]
        if unknown:
            raise NotFound(
                f"tool {tool.code} has no chamber {unknown[0]!r}", code="tool.chamber_not_found"
            )
        down = [name for name in asked if by_name[name].e10_state not in up]
        if down:
            state = by_name[down[0]].e10_state.value
            return ChamberChoice(
                None,
                refusal=RuleViolation(
                    "tool.chamber_not_available",
                    f"chamber {down[0]} of tool {tool.code} is {state}",
                ),
            )
        tried = list(dict.fromkeys(asked))
    elif by_name:
        tried = [name for name in sorted(by_name) if by_name[name].e10_state in up]
        if not tried:
            return ChamberChoice(
                None,
                refusal=RuleViolation(
                    "tool.no_chamber_available",
                    f"no chamber of tool {tool.code} is up (SBY or PRD)",
                ),
            )
    else:
        tried = [None]
    found = await recipes_service.resolve_in_chambers(
        session,
        logical_recipe=step.recipe_name,
        product_id=lot.product_id,
        operation=step.operation,
        tool=tool,
        chambers=tried,
        now=now,
        lock=lock,
    )
    refused = [(name, r) for name in tried if (r := found[name].refusal) is not None]
    if refused and (asked or len(refused) == len(tried)):
        return ChamberChoice(found[refused[0][0]], refusal=refused[0][1])
    runnable = [(name or "", v.id) for name in tried if (v := found[name].version) is not None]
    try:
        chosen = rules.chambers_to_run(runnable, asked=bool(asked))
    except RuleViolation as exc:
        return ChamberChoice(found[tried[0]], refusal=exc)
    return ChamberChoice(found[chosen[0] or None], [name for name in chosen if name])
