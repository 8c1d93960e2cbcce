"""Products and their versioned routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel
from sqlalchemy import select

from mes.auth import roles
from mes.auth.dependencies import requires, sign
from mes.auth.schemas import ESignature
from mes.auth.service import Principal
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
from mes.routes import service
from mes.routes.models import Product, Route, RouteVersion, Step
from mes.routes.schemas import (
    ProductCreate,
    ProductRead,
    ProductUpdate,
    RouteCreate,
    RouteRead,
    RouteUpdate,
    RouteVersionCreate,
    RouteVersionRead,
    RouteVersionSummary,
    StepRead,
    StepsReplace,
)

router = APIRouter(tags=["routes"])

ProductWriter = Annotated[Principal, requires(roles.PRODUCT_WRITE)]
RouteWriter = Annotated[Principal, requires(roles.ROUTE_WRITE)]
RouteActivator = Annotated[Principal, requires(roles.ROUTE_ACTIVATE)]


class Activation(BaseModel):
    signature: ESignature


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
        rework_to_sequence=step.rework_to_sequence,
        rework_limit=step.rework_limit,
        sampling_rate=step.sampling_rate,
    )


def version_read(route: Route, version: RouteVersion) -> RouteVersionRead:
    return RouteVersionRead(
        route=route.code,
        version=version.version,
        status=version.status,
        created_by=version.created_by,
        created_at=version.created_at,
        activated_at=version.activated_at,
        activated_by=version.activated_by,
        notes=version.notes,
        steps=[step_read(s) for s in version.steps],
    )


def route_read(route: Route) -> RouteRead:
    active = service.active_version(route)
    return RouteRead(
        code=route.code,
        name=route.name,
        product=route.product.code,
        active_version=active.version if active else None,
        versions=[
            RouteVersionSummary(
                version=v.version,
                status=v.status,
                step_count=len(v.steps),
                created_by=v.created_by,
                created_at=v.created_at,
                activated_at=v.activated_at,
                activated_by=v.activated_by,
            )
            for v in route.versions
        ],
    )


@router.get("/products", response_model=Page[ProductRead])
async def list_products(session: ReadSession, page: PageQuery) -> Page[ProductRead]:
    """All products."""
    rows, total = await fetch_page(session, select(Product).order_by(Product.code), page)
    return Page(
        items=[ProductRead.model_validate(p) for p in rows], total=total, **page.model_dump()
    )


@router.post("/products", response_model=ProductRead, status_code=status.HTTP_201_CREATED)
async def create_product(
    body: ProductCreate, _by: ProductWriter, session: WriteSession
) -> ProductRead:
    """Define a product."""
    return ProductRead.model_validate(await service.create_product(session, body))


@router.get("/products/{product}", response_model=ProductRead)
async def get_product(product: CodePath, session: ReadSession) -> ProductRead:
    """One product."""
    return ProductRead.model_validate(await service.get_product(session, product))


@router.patch("/products/{product}", response_model=ProductRead)
async def update_product(
    product: CodePath, body: ProductUpdate, _by: ProductWriter, session: WriteSession
) -> ProductRead:
    """Rename or describe a product."""
    return ProductRead.model_validate(await service.update_product(session, product, body))


@router.get("/routes", response_model=Page[RouteRead])
async def list_routes(
    session: ReadSession,
    page: PageQuery,
    product: Annotated[CodeStr | None, Query()] = None,
) -> Page[RouteRead]:
    """Routes with their version summaries, optionally of one product."""
    stmt = select(Route).options(*service.ROUTE_OPTIONS).order_by(Route.code)
    if product is not None:
        stmt = stmt.join(Product, Product.id == Route.product_id).where(Product.code == product)
    rows, total = await fetch_page(session, stmt, page)
    return Page(items=[route_read(r) for r in rows], total=total, **page.model_dump())


@router.post("/routes", response_model=RouteRead, status_code=status.HTTP_201_CREATED)
async def create_route(body: RouteCreate, by: RouteWriter, session: WriteSession) -> RouteRead:
    """Create a route; its steps become version 1, a draft."""
    return route_read(await service.create_route(session, body, actor=by.username))


@router.get("/routes/{route}", response_model=RouteRead)
async def get_route(route: CodePath, session: ReadSession) -> RouteRead:
    """One route with its version summaries."""
    return route_read(await service.get_route(session, route))


@router.patch("/routes/{route}", response_model=RouteRead)
async def update_route(
    route: CodePath, body: RouteUpdate, _by: RouteWriter, session: WriteSession
) -> RouteRead:
    """Rename a route."""
    return route_read(await service.update_route(session, route, body))


@router.post(
    "/routes/{route}/versions",
    response_model=RouteVersionRead,
    status_code=status.HTTP_201_CREATED,
)
async def add_version(
    route: CodePath, body: RouteVersionCreate, by: RouteWriter, session: WriteSession
) -> RouteVersionRead:
    """Start a new draft version of a route."""
    version = await service.add_version(session, route, body, actor=by.username)
    return version_read(await service.get_route(session, route), version)


@router.get("/routes/{route}/versions/{version}", response_model=RouteVersionRead)
async def get_version(
    route: CodePath, version: VersionPath, session: ReadSession
) -> RouteVersionRead:
    """One version of a route with its steps."""
    found = await service.get_route(session, route)
    return version_read(found, service.find_version(found, version))


@router.put("/routes/{route}/versions/{version}/steps", response_model=RouteVersionRead)
async def replace_steps(
    route: CodePath,
    version: VersionPath,
    body: StepsReplace,
    _by: RouteWriter,
    session: WriteSession,
) -> RouteVersionRead:
    """Replace the steps of a draft version."""
    draft = await service.replace_steps(session, route, version, body.steps)
    return version_read(await service.get_route(session, route), draft)


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
    """Make a draft the active version (e-signature); new lots take it, running lots keep theirs."""
    await sign(request, session, by, body.signature)
    activated = await service.activate_version(
        session, route, version, actor=by.username, clock=clock
    )
    return version_read(await service.get_route(session, route), activated)
