"""Bringing a route version into force: what would stop it (structure, and recipes no tool
could run), signing a draft in now or from an effective time, promoting a pending version when
its time comes, which version is in force, and the step differences between two versions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.equipment.models import Equipment
from mes.errors import Conflict, InvalidInput
from mes.recipes import service as recipes_service
from mes.recipes.models import Recipe, RecipeQualification, RecipeVersion, RecipeVersionStatus
from mes.routes import rules
from mes.routes.drafts import find_version, get_route, refuse, shape, step_in
from mes.routes.models import Route, RouteVersion, RouteVersionStatus

# Activation may name a time slightly in the past (clocks of clients differ), never more.
EFFECTIVE_TIME_TOLERANCE_S = 300


async def _recipe_problems(
    session: AsyncSession, route: Route, version: RouteVersion, now: datetime
) -> list[rules.RouteProblem]:
    """Steps that no tool could run: the step's recipe (or any recipe a context rule sends it
    to) must have an approved version with a standing qualification on a tool of the step's
    group, in some fab."""
    named = [s for s in version.steps if s.recipe_name]
    logical = {s.recipe_name for s in named if s.recipe_name}
    context_rules = [
        r for r, _ in await recipes_service.context_rules(session, logical_recipes=logical)
    ]
    product = route.product.code
    candidates: dict[int, set[str]] = {}
    for step in named:
        assert step.recipe_name is not None
        group = step.tool_group.code
        candidates[step.sequence] = {step.recipe_name} | {
            r.recipe
            for r in context_rules
            if r.logical_recipe == step.recipe_name
            and r.recipe_tool_group == group
            and r.product in (None, product)
            and r.step in (None, step.operation)
            and r.tool_group in (None, group)
        }
    every = set().union(*candidates.values()) if candidates else set()
    approved: set[tuple[str, int]] = set(
        (
            await session.execute(
                select(Recipe.name, Recipe.tool_group_id)
                .join(RecipeVersion, RecipeVersion.recipe_id == Recipe.id)
                .where(Recipe.name.in_(every), RecipeVersion.status == RecipeVersionStatus.APPROVED)
            )
        ).all()
    )
    qualified: set[tuple[str, int]] = set(
        (
            await session.execute(
                select(Recipe.name, Equipment.tool_group_id)
                .join(RecipeVersion, RecipeVersion.recipe_id == Recipe.id)
                .join(
                    RecipeQualification, RecipeQualification.recipe_version_id == RecipeVersion.id
                )
                .join(Equipment, Equipment.id == RecipeQualification.equipment_id)
                .where(
                    Recipe.name.in_(every),
                    RecipeVersion.status == RecipeVersionStatus.APPROVED,
                    recipes_service.standing(now),
                )
                .distinct()
            )
        ).all()
    )
    problems = []
    for step in named:
        names = sorted(candidates[step.sequence])
        group_id = step.tool_group_id
        if not any(n == name for n in names for name, _ in approved):
            problems.append(
                rules.RouteProblem(
                    step.sequence, f"recipe {step.recipe_name!r} has no approved version"
                )
            )
        elif not any((n, group_id) in approved for n in names):
            problems.append(
                rules.RouteProblem(
                    step.sequence,
                    f"recipe {step.recipe_name!r} is for another tool group than "
                    f"{step.tool_group.code}",
                )
            )
        elif not any((n, group_id) in qualified for n in names):
            problems.append(
                rules.RouteProblem(
                    step.sequence,
                    f"no tool of {step.tool_group.code} in any fab is qualified for "
                    f"{' or '.join(names)}",
                )
            )
    return problems


async def validate_version(
    session: AsyncSession, code: str, version: int, *, now: datetime
) -> list[rules.RouteProblem]:
    """Everything that would stop a version's activation now (empty: it can be activated)."""
    route = await get_route(session, code)
    candidate = find_version(route, version)
    return await _version_problems(session, route, candidate, now)


async def _version_problems(
    session: AsyncSession, route: Route, version: RouteVersion, now: datetime
) -> list[rules.RouteProblem]:
    problems = rules.route_problems([shape(s) for s in version.steps], for_activation=True)
    return problems + await _recipe_problems(session, route, version, now)


def in_force(route: Route, now: datetime) -> RouteVersion | None:
    """The version new lots of this route take at ``now``."""
    chosen = rules.version_in_force(
        [
            rules.VersionView(v.version, rules.VersionStatus(v.status.value), v.effective_at)
            for v in route.versions
        ],
        now,
    )
    return None if chosen is None else find_version(route, chosen.version)


async def promote_due(session: AsyncSession, route: Route, now: datetime) -> RouteVersion | None:
    """Store what ``in_force`` says: a pending version whose time has come becomes active and
    the one it replaces obsolete. Callers hold the route's row lock."""
    current = in_force(route, now)
    if current is None or current.status != RouteVersionStatus.PENDING:
        return current
    for other in route.versions:
        if other.status == RouteVersionStatus.ACTIVE:
            other.status = RouteVersionStatus.OBSOLETE
    # The partial unique index allows one active version: retire the old one first.
    await session.flush()
    current.status = RouteVersionStatus.ACTIVE
    await session.flush()
    return current


async def activate_version(
    session: AsyncSession,
    code: str,
    version: int,
    *,
    actor: str,
    clock: Clock,
    effective_at: datetime | None = None,
) -> RouteVersion:
    """Sign a draft into force, now or from ``effective_at``; the version it replaces becomes
    obsolete when it takes effect.

    Lots already started keep their version; only new lots take the one in force.
    """
    now = clock.now()
    route = await get_route(session, code, for_update=True)
    draft = find_version(route, version)
    if draft.status != RouteVersionStatus.DRAFT:
        raise Conflict(
            f"route {code!r} version {version} is {draft.status.value}, not a draft",
            code="route.version_not_draft",
        )
    if effective_at is not None:
        try:
            rules.check_effective_time(effective_at, now, max_past_s=EFFECTIVE_TIME_TOLERANCE_S)
        except ValueError as exc:
            raise InvalidInput(str(exc), code="route.effective_time_past") from exc
    # A time just past means now: taking effect "earlier" would reorder it behind the version
    # in force and re-date lots that already started.
    effective = max(effective_at or now, now)
    await promote_due(session, route, now)
    if any(v.status == RouteVersionStatus.PENDING for v in route.versions):
        raise Conflict(
            f"route {code!r} already has a version waiting to take effect",
            code="route.activation_pending",
        )
    problems = await _version_problems(session, route, draft, now)
    refuse(problems, f"route {code!r} version {version} cannot be activated", "route.invalid")
    draft.activated_at = now
    draft.activated_by = actor
    draft.effective_at = effective
    # Pending until its time; if that is now, promote_due makes it the active version at once.
    draft.status = RouteVersionStatus.PENDING
    await session.flush()
    await promote_due(session, route, now)
    return draft


async def cancel_activation(
    session: AsyncSession, code: str, version: int, *, clock: Clock
) -> RouteVersion:
    """Withdraw a signed activation that has not taken effect: the version is a draft again.

    Once its effective time has come the version is in force and lots may already run on it;
    then only a newer version replaces it.
    """
    route = await get_route(session, code, for_update=True)
    await promote_due(session, route, clock.now())
    pending = find_version(route, version)
    if pending.status != RouteVersionStatus.PENDING:
        raise Conflict(
            f"route {code!r} version {version} is {pending.status.value}, not waiting to take "
            "effect; only a pending activation can be cancelled",
            code="route.version_not_pending",
        )
    pending.status = RouteVersionStatus.DRAFT
    pending.activated_at = None
    pending.activated_by = None
    pending.effective_at = None
    await session.flush()
    return pending


async def diff_versions(
    session: AsyncSession, code: str, before: int, after: int
) -> tuple[Route, list[rules.StepDifference]]:
    """What changed in a route from one version to another."""
    route = await get_route(session, code)
    a, b = find_version(route, before), find_version(route, after)
    return route, rules.diff_steps(
        [step_in(s).model_dump() for s in a.steps], [step_in(s).model_dump() for s in b.steps]
    )
