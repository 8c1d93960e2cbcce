"""What a track-in runs beyond the usual resolution: an engineering lot's signed run (on a tool
in ENG, or on a recipe version not approved or not qualified there) and whether the lot may
join the batch already on a furnace (same recipe version, whatever its product or route).
The decisions are ``type_rules``'; this module reads what they need."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager

from mes.equipment.models import Equipment
from mes.equipment.states import E10State
from mes.errors import NotFound, RuleViolation
from mes.lots import rules, type_rules
from mes.lots.chambers import UP, choose_run
from mes.lots.commands import TrackIn
from mes.lots.models import Lot, LotEvent
from mes.lots.states import LotType
from mes.recipes import service as recipes_service
from mes.recipes.models import Recipe, RecipeQualification, RecipeVersion, RecipeVersionStatus
from mes.routes.models import Step

# What a signed engineering run may override: the version is not approved or not qualified.
_OVERRIDABLE = frozenset({"recipe.not_approved", "tool.not_qualified", "recipe.chamber_mismatch"})
ENGINEERING_UP = (*UP, E10State.ENG)


def engineering_up(lot: Lot, data: TrackIn) -> bool:
    """Chambers in ENG count as able to run for a signed engineering lot's run."""
    return lot.lot_type == LotType.ENGINEERING and data.engineering is not None


async def recipe_to_run(
    session: AsyncSession,
    lot: Lot,
    step: rules.StepView,
    tool: Equipment,
    now: datetime,
    data: TrackIn,
) -> tuple[RecipeVersion, list[str], dict[str, Any] | None]:
    """The recipe version and chambers of the run, and what an engineering run records on its
    TRACK_IN (None: an ordinary run), or the refusal. Qualifications used by an ordinary run
    are share-locked, so a disqualification cannot slip in."""
    run = data.engineering
    release = run.release if run is not None else None
    type_rules.check_release_allowed(lot.code, lot.lot_type, release)
    signed = engineering_up(lot, data)
    choice = await choose_run(
        session, lot, step, tool, now, data.chambers, lock=True, up=ENGINEERING_UP if signed else UP
    )
    wanted = run.recipe_version if run is not None else None
    override = signed and (
        wanted is not None or (choice.refusal is not None and choice.refusal.code in _OVERRIDABLE)
    )
    if not override or choice.outcome is None:
        if choice.refusal is not None:
            if (
                lot.lot_type == LotType.ENGINEERING
                and choice.outcome is not None
                and choice.refusal.code in _OVERRIDABLE
            ):
                # Say what would let it run: an engineer's signed release.
                type_rules.check_engineering_run(
                    lot.code, lot.lot_type, eng_tool=False, unreleased_recipe=True, release=None
                )
            raise choice.refusal
        assert choice.outcome is not None
        assert choice.outcome.version is not None
        version, chambers, qualified = choice.outcome.version, choice.chambers, True
    else:
        name = choice.outcome.resolution.recipe
        version = await _version(session, name, wanted)
        if data.chambers:
            chambers = list(dict.fromkeys(data.chambers))
        else:
            chambers = sorted(c.name for c in tool.chambers if c.e10_state in ENGINEERING_UP)
        qualified = await _qualified(session, version, tool, chambers, now)
    unreleased = version.status != RecipeVersionStatus.APPROVED or not qualified
    by_name = {c.name: c.e10_state for c in tool.chambers}
    eng_tool = tool.e10_state == E10State.ENG or any(
        by_name.get(c) == E10State.ENG for c in chambers
    )
    exception = type_rules.check_engineering_run(
        lot.code, lot.lot_type, eng_tool=eng_tool, unreleased_recipe=unreleased, release=release
    )
    if not exception or release is None:
        return version, chambers, None
    return (
        version,
        chambers,
        {
            "signed_by": release.signed_by,
            "eng_tool": eng_tool,
            "recipe_status": version.status.value,
            "qualified": qualified,
        },
    )


async def _version(session: AsyncSession, recipe: str, number: int | None) -> RecipeVersion:
    """The version an engineering run asked for, else the newest one that is not obsolete."""
    stmt = (
        select(RecipeVersion)
        .join(Recipe, Recipe.id == RecipeVersion.recipe_id)
        .options(contains_eager(RecipeVersion.recipe))
        .where(Recipe.name == recipe)
    )
    if number is not None:
        found = (await session.scalars(stmt.where(RecipeVersion.version == number))).first()
        if found is None:
            raise NotFound(
                f"recipe {recipe!r} has no version {number}", code="recipe.version_not_found"
            )
        if found.status == RecipeVersionStatus.OBSOLETE:
            raise RuleViolation(
                "recipe.obsolete", f"recipe {recipe} version {number} is obsolete: it never runs"
            )
        return found
    newest = (
        await session.scalars(
            stmt.where(RecipeVersion.status != RecipeVersionStatus.OBSOLETE)
            .order_by(RecipeVersion.version.desc())
            .limit(1)
        )
    ).first()
    if newest is None:
        raise RuleViolation("recipe.not_approved", f"recipe {recipe} has no version to run")
    return newest


async def _qualified(
    session: AsyncSession,
    version: RecipeVersion,
    tool: Equipment,
    chambers: list[str],
    now: datetime,
) -> bool:
    """A standing qualification of the version on the tool, or on every chamber named."""
    ids = {c.name: c.id for c in tool.chambers}
    rows = await session.scalars(
        select(RecipeQualification.chamber_id).where(
            RecipeQualification.recipe_version_id == version.id,
            RecipeQualification.equipment_id == tool.id,
            recipes_service.standing(now),
        )
    )
    found = set(rows)
    if None in found:
        return True
    return bool(chambers) and all(ids.get(c) in found for c in chambers)


# --- furnace batches ------------------------------------------------------------------------


async def check_batch(
    session: AsyncSession, step: rules.StepView, tool: Equipment, version: RecipeVersion
) -> None:
    """A lot of a batch step joins the lots on the tool only if they run the same recipe
    version (their products, routes and steps may differ); see ``type_rules.check_batch_join``."""
    if step.batch_max is None:
        return
    members = await batch_members(session, tool.id)
    if not members:
        return
    type_rules.check_batch_join(
        step_id=step.id,
        batch_max=step.batch_max,
        setup=step.setup,
        recipe=(version.recipe.name, version.version),
        tool_code=tool.code,
        tool_max_lots=tool.max_lots,
        members=members,
    )


async def batch_members(session: AsyncSession, tool_id: int) -> list[type_rules.BatchMember]:
    """The lots on the tool with their step and the recipe version of their latest track-in."""
    rows = (
        await session.execute(
            select(Lot.id, Lot.code, Step.id, Step.batch_max, Step.setup)
            .join(Step, Step.id == Lot.current_step_id)
            .where(Lot.equipment_id == tool_id)
            .order_by(Lot.code)
        )
    ).all()
    if not rows:
        return []
    latest = (
        select(func.max(LotEvent.id))
        .where(LotEvent.lot_id.in_([r[0] for r in rows]), LotEvent.event_type == "TRACK_IN")
        .group_by(LotEvent.lot_id)
    )
    ran: dict[int, tuple[str, int]] = {}
    for lot_id, after in (
        await session.execute(
            select(LotEvent.lot_id, LotEvent.after).where(LotEvent.id.in_(latest))
        )
    ).all():
        name, number = (after or {}).get("recipe"), (after or {}).get("recipe_version")
        if isinstance(name, str) and isinstance(number, int):
            ran[lot_id] = (name, number)
    return [
        type_rules.BatchMember(code, step_id, batch_max, setup, ran.get(lot_id))
        for lot_id, code, step_id, batch_max, setup in rows
    ]
