"""Versioned routes of products: drafts, their steps, activation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth import roles
from mes.auth.dependencies import requires, sign
from mes.auth.service import Principal
from mes.clock import Clock
from mes.db.transaction import ReadSession, WriteSession
from mes.kit.api import (
    ClockDep,
    CodePath,
    CodeStr,
    Page,
    PageQuery,
    VersionPath,
    fetch_page,
)
from mes.kit.idempotency import OnceDep
from mes.products.models import Product
from mes.routes import service
from mes.routes.models import Route, RouteVersion, Step
from mes.routes.schemas import (
    Activation,
    ActivationCancel,
    FieldChangeRead,
    Renumbering,
    RouteCreate,
    RouteDiff,
    RouteProblemRead,
    RouteRead,
    RouteUpdate,
    RouteVersionCreate,
    RouteVersionRead,
    RouteVersionSummary,
    StepDifferenceRead,
    StepIn,
    StepRead,
    StepsReplace,
    Validation,
)

router = APIRouter(tags=["routes"])

RouteWriter = Annotated[Principal, requires(roles.ROUTE_WRITE)]
RouteActivator = Annotated[Principal, requires(roles.ROUTE_ACTIVATE)]
SequencePath = Annotated[int, Path(ge=1, le=100_000)]


def step_read(step: Step) -> StepRead:
    return StepRead(
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


def version_read(route: Route, version: RouteVersion, now: datetime) -> RouteVersionRead:
    current = service.in_force(route, now)
    return RouteVersionRead(
        route=route.code,
        version=version.version,
        status=version.status,
        created_by=version.created_by,
        created_at=version.created_at,
        activated_at=version.activated_at,
        activated_by=version.activated_by,
        effective_at=version.effective_at,
        in_force=current is version,
        notes=version.notes,
        steps=[step_read(s) for s in version.steps],
    )


def route_read(route: Route, now: datetime) -> RouteRead:
    active = service.in_force(route, now)
    return RouteRead(
        code=route.code,
        name=route.name,
        product=route.product.code,
        active_version=active.version if active else None,
        versions=[
            RouteVersionSummary(
                version=v.version,
                status=v.status,
                in_force=v is active,
                step_count=len(v.steps),
                created_by=v.created_by,
                created_at=v.created_at,
                activated_at=v.activated_at,
                activated_by=v.activated_by,
                effective_at=v.effective_at,
            )
            for v in route.versions
        ],
    )


@router.get("/routes", response_model=Page[RouteRead])
async def list_routes(
    session: ReadSession,
    page: PageQuery,
    clock: ClockDep,
    product: Annotated[CodeStr | None, Query()] = None,
) -> Page[RouteRead]:
    """Routes with their version summaries, optionally of one product."""
    stmt = select(Route).options(*service.ROUTE_OPTIONS).order_by(Route.code)
    if product is not None:
        stmt = stmt.join(Product, Product.id == Route.product_id).where(Product.code == product)
    rows, total = await fetch_page(session, stmt, page)
    now = clock.now()
    return Page(items=[route_read(r, now) for r in rows], total=total, **page.model_dump())


@router.post("/routes", response_model=RouteRead, status_code=status.HTTP_201_CREATED)
async def create_route(
    body: RouteCreate, by: RouteWriter, session: WriteSession, clock: ClockDep, once: OnceDep
) -> RouteRead | JSONResponse:
    """Create a route; its steps become version 1, a draft."""

    async def op() -> RouteRead:
        return route_read(await service.create_route(session, body, actor=by.username), clock.now())

    return await once.run(op)


@router.get("/routes/{route}", response_model=RouteRead)
async def get_route(route: CodePath, session: ReadSession, clock: ClockDep) -> RouteRead:
    """One route with its version summaries."""
    return route_read(await service.get_route(session, route), clock.now())


@router.patch("/routes/{route}", response_model=RouteRead)
async def update_route(
    route: CodePath, body: RouteUpdate, _by: RouteWriter, session: WriteSession, clock: ClockDep
) -> RouteRead:
    """Rename a route."""
    return route_read(await service.update_route(session, route, body), clock.now())


async def _version_read(
    session: AsyncSession, route: str, version: RouteVersion, clock: Clock
) -> RouteVersionRead:
    return version_read(await service.get_route(session, route), version, clock.now())


@router.post(
    "/routes/{route}/versions",
    response_model=RouteVersionRead,
    status_code=status.HTTP_201_CREATED,
)
async def add_version(
    route: CodePath,
    body: RouteVersionCreate,
    by: RouteWriter,
    session: WriteSession,
    clock: ClockDep,
    once: OnceDep,
) -> RouteVersionRead | JSONResponse:
    """Start a new draft version of a route, from steps or as a copy of another version."""

    async def op() -> RouteVersionRead:
        version = await service.add_version(session, route, body, actor=by.username)
        return await _version_read(session, route, version, clock)

    return await once.run(op)


@router.get("/routes/{route}/versions/{version}", response_model=RouteVersionRead)
async def get_version(
    route: CodePath, version: VersionPath, session: ReadSession, clock: ClockDep
) -> RouteVersionRead:
    """One version of a route with its steps."""
    found = await service.get_route(session, route)
    return version_read(found, service.find_version(found, version), clock.now())


@router.put("/routes/{route}/versions/{version}/steps", response_model=RouteVersionRead)
async def replace_steps(
    route: CodePath,
    version: VersionPath,
    body: StepsReplace,
    _by: RouteWriter,
    session: WriteSession,
    clock: ClockDep,
) -> RouteVersionRead:
    """Replace all steps of a draft version."""
    draft = await service.replace_steps(session, route, version, body.steps)
    return await _version_read(session, route, draft, clock)


@router.post(
    "/routes/{route}/versions/{version}/steps",
    response_model=RouteVersionRead,
    status_code=status.HTTP_201_CREATED,
)
async def add_step(
    route: CodePath,
    version: VersionPath,
    body: StepIn,
    _by: RouteWriter,
    session: WriteSession,
    clock: ClockDep,
    once: OnceDep,
) -> RouteVersionRead | JSONResponse:
    """Insert a step into a draft at a free sequence number."""

    async def op() -> RouteVersionRead:
        draft = await service.add_step(session, route, version, body)
        return await _version_read(session, route, draft, clock)

    return await once.run(op)


@router.put("/routes/{route}/versions/{version}/steps/{sequence}", response_model=RouteVersionRead)
async def update_step(
    route: CodePath,
    version: VersionPath,
    sequence: SequencePath,
    body: StepIn,
    _by: RouteWriter,
    session: WriteSession,
    clock: ClockDep,
) -> RouteVersionRead:
    """Change one step of a draft."""
    draft = await service.update_step(session, route, version, sequence, body)
    return await _version_read(session, route, draft, clock)


@router.delete(
    "/routes/{route}/versions/{version}/steps/{sequence}", response_model=RouteVersionRead
)
async def remove_step(
    route: CodePath,
    version: VersionPath,
    sequence: SequencePath,
    _by: RouteWriter,
    session: WriteSession,
    clock: ClockDep,
) -> RouteVersionRead:
    """Remove a step from a draft (refused while another step refers to it)."""
    draft = await service.remove_step(session, route, version, sequence)
    return await _version_read(session, route, draft, clock)


@router.post("/routes/{route}/versions/{version}/renumber", response_model=RouteVersionRead)
async def renumber(
    route: CodePath,
    version: VersionPath,
    body: Renumbering,
    _by: RouteWriter,
    session: WriteSession,
    clock: ClockDep,
) -> RouteVersionRead:
    """Reorder and renumber a draft's steps; Q-time and rework references follow their steps."""
    draft = await service.renumber(session, route, version, body)
    return await _version_read(session, route, draft, clock)


@router.get("/routes/{route}/versions/{version}/validation", response_model=Validation)
async def validate_version(
    route: CodePath, version: VersionPath, session: ReadSession, clock: ClockDep
) -> Validation:
    """Everything that would stop this version's activation now."""
    problems = await service.validate_version(session, route, version, now=clock.now())
    return Validation(
        route=route,
        version=version,
        activatable=not problems,
        problems=[RouteProblemRead(sequence=p.sequence, msg=p.message) for p in problems],
    )


@router.get("/routes/{route}/versions/{before}/diff/{after}", response_model=RouteDiff)
async def diff_versions(
    route: CodePath,
    before: VersionPath,
    after: Annotated[int, Path(ge=1, le=1_000_000)],
    session: ReadSession,
) -> RouteDiff:
    """What changed from one version to another: steps added, removed, changed or moved
    (matched by operation name, so renumbering is a change of sequence, not a new step)."""
    _, differences = await service.diff_versions(session, route, before, after)
    return RouteDiff(
        route=route,
        before=before,
        after=after,
        identical=not differences,
        differences=[
            StepDifferenceRead(
                kind=d.kind,
                operation=d.operation,
                before_sequence=d.before_sequence,
                after_sequence=d.after_sequence,
                changes=[
                    FieldChangeRead(field=c.field, before=c.before, after=c.after)
                    for c in d.changes
                ],
            )
            for d in differences
        ],
    )


@router.post("/routes/{route}/versions/{version}/activate", response_model=RouteVersionRead)
async def activate_version(
    request: Request,
    route: CodePath,
    version: VersionPath,
    body: Activation,
    by: RouteActivator,
    session: WriteSession,
    clock: ClockDep,
) -> RouteVersionRead:
    """Sign a draft into force (e-signature), now or from ``effective_at``. New lots take the
    version in force; lots already started keep theirs."""
    await sign(request, session, by, body.signature)
    activated = await service.activate_version(
        session, route, version, actor=by.username, clock=clock, effective_at=body.effective_at
    )
    return await _version_read(session, route, activated, clock)


@router.post(
    "/routes/{route}/versions/{version}/cancel-activation", response_model=RouteVersionRead
)
async def cancel_activation(
    request: Request,
    route: CodePath,
    version: VersionPath,
    body: ActivationCancel,
    by: RouteActivator,
    session: WriteSession,
    clock: ClockDep,
) -> RouteVersionRead:
    """Withdraw a pending activation (e-signature) before its effective time: the version
    becomes a draft again and the version in force stays. Refused once it took effect."""
    await sign(request, session, by, body.signature)
    cancelled = await service.cancel_activation(session, route, version, clock=clock)
    return await _version_read(session, route, cancelled, clock)
