"""Routes and the drafting of their versions: create a route, start a version (new steps or a
copy), edit a draft's steps, renumber them. Only drafts change; ``activation`` signs them in."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.errors import Conflict, InvalidInput, NotFound
from mes.fabs.models import ToolGroup
from mes.kit.lookup import get_by_key
from mes.products import service as products_service
from mes.routes import rules
from mes.routes.models import Route, RouteVersion, RouteVersionStatus, Step
from mes.routes.schemas import Renumbering, RouteCreate, RouteUpdate, RouteVersionCreate, StepIn

ROUTE_OPTIONS = (
    selectinload(Route.product),
    selectinload(Route.versions).selectinload(RouteVersion.steps).selectinload(Step.tool_group),
)


async def get_route(session: AsyncSession, code: str, *, for_update: bool = False) -> Route:
    """The route ``code`` with all versions and steps, or route.not_found."""
    return await get_by_key(
        session,
        Route,
        Route.code,
        code,
        code="route.not_found",
        what="route",
        options=ROUTE_OPTIONS,
        for_update=for_update,
    )


def find_version(route: Route, version: int) -> RouteVersion:
    for candidate in route.versions:
        if candidate.version == version:
            return candidate
    raise NotFound(f"route {route.code!r} has no version {version}", code="route.version_not_found")


def shape(step: StepIn | Step) -> rules.StepShape:
    """The structural view of a step that the route rules check."""
    if isinstance(step, StepIn):
        tool_group, recipe = step.tool_group, step.recipe
    else:
        tool_group, recipe = step.tool_group.code, step.recipe_name
    return rules.StepShape(
        sequence=step.sequence,
        tool_group=tool_group,
        recipe=recipe,
        qtime_to_sequence=step.qtime_to_sequence,
        qtime_max_s=step.qtime_max_s,
        qtime_min_s=step.qtime_min_s,
        rework_to_sequence=step.rework_to_sequence,
        batch_min=step.batch_min,
        batch_max=step.batch_max,
        sampling_rate=step.sampling_rate,
        same_tool_as_sequence=step.same_tool_as_sequence,
    )


def refuse(problems: Sequence[rules.RouteProblem], detail: str, code: str) -> None:
    """Refuse with one error per problem (sequence and message), if there are any."""
    if problems:
        raise InvalidInput(
            detail,
            code=code,
            errors=[{"sequence": p.sequence, "msg": p.message} for p in problems],
        )


async def _build_steps(session: AsyncSession, steps: Sequence[StepIn]) -> list[Step]:
    """Turn step requests into rows, refusing unknown tool groups and unsound structure."""
    problems = rules.route_problems([shape(s) for s in steps])
    codes = {s.tool_group for s in steps}
    groups = {
        g.code: g
        for g in (await session.scalars(select(ToolGroup).where(ToolGroup.code.in_(codes)))).all()
    }
    for s in steps:
        if s.tool_group not in groups:
            problems.append(rules.RouteProblem(s.sequence, f"unknown tool group {s.tool_group!r}"))
    refuse(problems, "the route's steps are not consistent", "route.invalid_steps")
    return [
        Step(
            sequence=s.sequence,
            operation=s.operation,
            description=s.description,
            tool_group=groups[s.tool_group],
            recipe_name=s.recipe,
            process_time_s=s.process_time_s,
            batch_min=s.batch_min,
            batch_max=s.batch_max,
            qtime_to_sequence=s.qtime_to_sequence,
            qtime_max_s=s.qtime_max_s,
            qtime_min_s=s.qtime_min_s,
            rework_to_sequence=s.rework_to_sequence,
            rework_limit=s.rework_limit,
            sampling_rate=s.sampling_rate,
            setup=s.setup,
            same_tool_as_sequence=s.same_tool_as_sequence,
        )
        for s in sorted(steps, key=lambda s: s.sequence)
    ]


def step_in(step: Step) -> StepIn:
    """A stored step in the form it was entered (for copies, edits and exports)."""
    return StepIn(
        sequence=step.sequence,
        operation=step.operation,
        description=step.description,
        tool_group=step.tool_group.code,
        recipe=step.recipe_name,
        process_time_s=step.process_time_s,
        batch_min=step.batch_min,
        batch_max=step.batch_max,
        qtime_to_sequence=step.qtime_to_sequence,
        qtime_max_s=step.qtime_max_s,
        qtime_min_s=step.qtime_min_s,
        rework_to_sequence=step.rework_to_sequence,
        rework_limit=step.rework_limit,
        sampling_rate=step.sampling_rate,
        setup=step.setup,
        same_tool_as_sequence=step.same_tool_as_sequence,
    )


async def create_route(session: AsyncSession, data: RouteCreate, *, actor: str) -> Route:
    """Create a route for a product with its first version as a draft."""
    if await session.scalar(select(Route.id).where(Route.code == data.code)) is not None:
        raise Conflict(f"route {data.code!r} already exists", code="route.duplicate")
    product = await products_service.get_product(session, data.product)
    route = Route(code=data.code, name=data.name, product_id=product.id)
    route.versions = [
        RouteVersion(
            version=1,
            created_by=actor,
            notes=data.notes,
            steps=await _build_steps(session, data.steps),
        )
    ]
    session.add(route)
    await session.flush()
    return await get_route(session, data.code)


async def update_route(session: AsyncSession, code: str, data: RouteUpdate) -> Route:
    """Rename a route (its content changes only through versions)."""
    route = await get_route(session, code)
    route.name = data.name
    await session.flush()
    return route


async def add_version(
    session: AsyncSession, code: str, data: RouteVersionCreate, *, actor: str
) -> RouteVersion:
    """Start a new draft version of a route, from given steps or as a copy of a version."""
    route = await get_route(session, code, for_update=True)
    if data.copy_from is not None:
        steps = [step_in(s) for s in find_version(route, data.copy_from).steps]
    else:
        steps = list(data.steps or [])
    number = (
        await session.scalar(
            select(func.max(RouteVersion.version)).where(RouteVersion.route_id == route.id)
        )
        or 0
    ) + 1
    version = RouteVersion(
        version=number,
        created_by=actor,
        notes=data.notes,
        steps=await _build_steps(session, steps),
    )
    route.versions.append(version)
    await session.flush()
    return version


async def _draft(session: AsyncSession, code: str, version: int) -> RouteVersion:
    """A draft version, locked through its route (edits of one route are serialized)."""
    route = await get_route(session, code, for_update=True)
    draft = find_version(route, version)
    if draft.status != RouteVersionStatus.DRAFT:
        raise Conflict(
            f"route {code!r} version {version} is {draft.status.value}; only drafts change",
            code="route.version_not_draft",
        )
    return draft


async def _rewrite_steps(
    session: AsyncSession, draft: RouteVersion, steps: Sequence[StepIn]
) -> RouteVersion:
    new_steps = await _build_steps(session, steps)
    draft.steps.clear()
    # Delete the old rows before inserting the new ones: (version, sequence) is unique.
    await session.flush()
    draft.steps.extend(new_steps)
    await session.flush()
    return draft


async def replace_steps(
    session: AsyncSession, code: str, version: int, steps: Sequence[StepIn]
) -> RouteVersion:
    """Replace all steps of a draft version."""
    draft = await _draft(session, code, version)
    return await _rewrite_steps(session, draft, steps)


async def add_step(session: AsyncSession, code: str, version: int, step: StepIn) -> RouteVersion:
    """Insert one step into a draft at its sequence number (which must be free)."""
    draft = await _draft(session, code, version)
    if any(s.sequence == step.sequence for s in draft.steps):
        raise Conflict(
            f"version {version} already has a step {step.sequence}; renumber first",
            code="route.step_exists",
        )
    return await _rewrite_steps(session, draft, [*(step_in(s) for s in draft.steps), step])


def _find_step(draft: RouteVersion, sequence: int) -> Step:
    found = next((s for s in draft.steps if s.sequence == sequence), None)
    if found is None:
        raise NotFound(
            f"version {draft.version} has no step {sequence}", code="route.step_not_found"
        )
    return found


async def update_step(
    session: AsyncSession, code: str, version: int, sequence: int, step: StepIn
) -> RouteVersion:
    """Change one step of a draft (its sequence stays; use renumber to move it)."""
    draft = await _draft(session, code, version)
    _find_step(draft, sequence)
    if step.sequence != sequence:
        raise InvalidInput(
            "a step keeps its sequence number when edited; renumber the version to move it",
            code="route.sequence_changed",
        )
    steps = [step if s.sequence == sequence else step_in(s) for s in draft.steps]
    return await _rewrite_steps(session, draft, steps)


async def remove_step(
    session: AsyncSession, code: str, version: int, sequence: int
) -> RouteVersion:
    """Remove a step from a draft, unless another step refers to it."""
    draft = await _draft(session, code, version)
    _find_step(draft, sequence)
    if len(draft.steps) == 1:
        raise Conflict("a route keeps at least one step", code="route.last_step")
    referring = rules.references_to([shape(s) for s in draft.steps], sequence)
    if referring:
        raise Conflict(
            f"step {sequence} is referred to by other steps",
            code="route.step_referenced",
            errors=[{"sequence": p.sequence, "msg": p.message} for p in referring],
        )
    return await _rewrite_steps(
        session, draft, [step_in(s) for s in draft.steps if s.sequence != sequence]
    )


async def renumber(
    session: AsyncSession, code: str, version: int, data: Renumbering
) -> RouteVersion:
    """Put a draft's steps in a new order and renumber them; references follow their steps."""
    draft = await _draft(session, code, version)
    current = [s.sequence for s in draft.steps]
    order = data.order if data.order is not None else current
    try:
        mapping = rules.renumbering(current, order, start=data.start, increment=data.increment)
    except rules.RenumberError as exc:
        raise InvalidInput(str(exc), code="route.invalid_order") from exc
    steps = []
    for stored in draft.steps:
        moved = rules.renumbered(shape(stored), mapping)
        fields = step_in(stored).model_dump() | {
            "sequence": moved.sequence,
            "qtime_to_sequence": moved.qtime_to_sequence,
            "rework_to_sequence": moved.rework_to_sequence,
            "same_tool_as_sequence": moved.same_tool_as_sequence,
        }
        try:
            # Validated again: a large start or increment must not store what no step may hold.
            steps.append(StepIn.model_validate(fields))
        except ValidationError as exc:
            raise InvalidInput(
                f"renumbering from {data.start} by {data.increment} leaves the allowed range "
                "of sequence numbers",
                code="route.invalid_order",
            ) from exc
    return await _rewrite_steps(session, draft, steps)
