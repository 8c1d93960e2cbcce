"""Products and versioned routes: drafts are edited, one version per route is active."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.clock import Clock
from mes.errors import Conflict, InvalidInput, NotFound
from mes.fabs.models import ToolGroup
from mes.kit.lookup import get_by_key
from mes.recipes.models import Recipe, RecipeVersion, RecipeVersionStatus
from mes.routes import rules
from mes.routes.models import Product, Route, RouteVersion, RouteVersionStatus, Step
from mes.routes.schemas import (
    ProductCreate,
    ProductUpdate,
    RouteCreate,
    RouteUpdate,
    RouteVersionCreate,
    StepIn,
)

ROUTE_OPTIONS = (
    selectinload(Route.product),
    selectinload(Route.versions).selectinload(RouteVersion.steps).selectinload(Step.tool_group),
)


async def get_product(session: AsyncSession, code: str) -> Product:
    """The product ``code``, or product.not_found."""
    return await get_by_key(
        session, Product, Product.code, code, code="product.not_found", what="product"
    )


async def create_product(session: AsyncSession, data: ProductCreate) -> Product:
    """Define a product."""
    if await session.scalar(select(Product.id).where(Product.code == data.code)) is not None:
        raise Conflict(f"product {data.code!r} already exists", code="product.duplicate")
    product = Product(code=data.code, name=data.name, description=data.description)
    session.add(product)
    await session.flush()
    return product


async def update_product(session: AsyncSession, code: str, data: ProductUpdate) -> Product:
    """Rename or describe a product."""
    product = await get_product(session, code)
    for field, value in data.model_dump(exclude_unset=True).items():
        if field == "name" and value is None:
            continue
        setattr(product, field, value)
    await session.flush()
    return product


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


def active_version(route: Route) -> RouteVersion | None:
    return next((v for v in route.versions if v.status == RouteVersionStatus.ACTIVE), None)


async def _build_steps(session: AsyncSession, steps: Sequence[StepIn]) -> list[Step]:
    """Turn step requests into rows, refusing unknown tool groups and unsound structure."""
    problems = rules.route_problems(
        [
            rules.StepShape(
                sequence=s.sequence,
                tool_group=s.tool_group,
                recipe=s.recipe,
                qtime_to_sequence=s.qtime_to_sequence,
                qtime_max_s=s.qtime_max_s,
                rework_to_sequence=s.rework_to_sequence,
                batch_min=s.batch_min,
                batch_max=s.batch_max,
                sampling_rate=s.sampling_rate,
            )
            for s in steps
        ]
    )
    codes = {s.tool_group for s in steps}
    groups = {
        g.code: g
        for g in (await session.scalars(select(ToolGroup).where(ToolGroup.code.in_(codes)))).all()
    }
    for s in steps:
        if s.tool_group not in groups:
            problems.append(rules.RouteProblem(s.sequence, f"unknown tool group {s.tool_group!r}"))
    if problems:
        raise InvalidInput(
            "the route's steps are not consistent",
            code="route.invalid_steps",
            errors=[{"sequence": p.sequence, "msg": p.message} for p in problems],
        )
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
            rework_to_sequence=s.rework_to_sequence,
            rework_limit=s.rework_limit,
            sampling_rate=s.sampling_rate,
        )
        for s in sorted(steps, key=lambda s: s.sequence)
    ]


async def create_route(session: AsyncSession, data: RouteCreate, *, actor: str) -> Route:
    """Create a route for a product with its first version as a draft."""
    if await session.scalar(select(Route.id).where(Route.code == data.code)) is not None:
        raise Conflict(f"route {data.code!r} already exists", code="route.duplicate")
    product = await get_product(session, data.product)
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
    """Start a new draft version of a route."""
    route = await get_route(session, code, for_update=True)
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
        steps=await _build_steps(session, data.steps),
    )
    route.versions.append(version)
    await session.flush()
    return version


async def replace_steps(
    session: AsyncSession, code: str, version: int, steps: Sequence[StepIn]
) -> RouteVersion:
    """Replace all steps of a draft version."""
    route = await get_route(session, code, for_update=True)
    draft = find_version(route, version)
    if draft.status != RouteVersionStatus.DRAFT:
        raise Conflict(
            f"route {code!r} version {version} is {draft.status.value}; only drafts change",
            code="route.version_not_draft",
        )
    new_steps = await _build_steps(session, steps)
    draft.steps.clear()
    # Delete the old rows before inserting the new ones: (version, sequence) is unique.
    await session.flush()
    draft.steps.extend(new_steps)
    await session.flush()
    return draft


async def _recipe_problems(session: AsyncSession, version: RouteVersion) -> list[str]:
    """Steps whose recipe is missing, belongs to another tool group, or has no approved version."""
    names = {s.recipe_name for s in version.steps}
    approved = {
        name: group_id
        for name, group_id in (
            await session.execute(
                select(Recipe.name, Recipe.tool_group_id)
                .join(RecipeVersion, RecipeVersion.recipe_id == Recipe.id)
                .where(Recipe.name.in_(names), RecipeVersion.status == RecipeVersionStatus.APPROVED)
            )
        ).all()
    }
    problems = []
    for step in version.steps:
        group_id = approved.get(step.recipe_name)
        if group_id is None:
            problems.append(
                f"step {step.sequence}: recipe {step.recipe_name!r} has no approved version"
            )
        elif group_id != step.tool_group_id:
            problems.append(
                f"step {step.sequence}: recipe {step.recipe_name!r} is for another tool group"
            )
    return problems


async def activate_version(
    session: AsyncSession, code: str, version: int, *, actor: str, clock: Clock
) -> RouteVersion:
    """Make a draft the route's active version; the previous active one becomes obsolete.

    Lots already started keep their version; only new lots take the active one.
    """
    route = await get_route(session, code, for_update=True)
    draft = find_version(route, version)
    if draft.status != RouteVersionStatus.DRAFT:
        raise Conflict(
            f"route {code!r} version {version} is {draft.status.value}, not a draft",
            code="route.version_not_draft",
        )
    problems = await _recipe_problems(session, draft)
    if problems:
        raise Conflict(
            "the version cannot be activated",
            code="route.not_activatable",
            errors=[{"msg": p} for p in problems],
        )
    now = clock.now()
    current = active_version(route)
    if current is not None:
        current.status = RouteVersionStatus.OBSOLETE
        # The partial unique index allows one active version: retire the old one first.
        await session.flush()
    draft.status = RouteVersionStatus.ACTIVE
    draft.activated_at = now
    draft.activated_by = actor
    await session.flush()
    return draft
