"""EDC plans and their versions, approved like recipes: a draft changes, an approved version is
immutable and is what lots are measured by (a second engineer approves it, with an
e-signature), an approved version may be retired. The newest approved version of the most
specific plan matching a step applies."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.clock import Clock
from mes.errors import Conflict, InvalidInput, NotFound
from mes.fabs import service as fabs_service
from mes.fabs.models import ToolGroup
from mes.kit.lookup import get_by_key
from mes.products import service as products_service
from mes.products.models import Product
from mes.quality import edc_rules
from mes.quality.models import EdcPlan, EdcPlanVersion, PlanVersionStatus
from mes.quality.schemas import PlanBody, PlanCreate
from mes.routes import service as routes_service
from mes.routes.models import Route


async def get_plan(session: AsyncSession, name: str, *, for_update: bool = False) -> EdcPlan:
    return await get_by_key(
        session,
        EdcPlan,
        EdcPlan.name,
        name,
        code="edc.plan_not_found",
        what="EDC plan",
        options=(selectinload(EdcPlan.versions),),
        for_update=for_update,
    )


def find_version(plan: EdcPlan, number: int) -> EdcPlanVersion:
    for candidate in plan.versions:
        if candidate.version == number:
            return candidate
    raise NotFound(f"plan {plan.name!r} has no version {number}", code="edc.version_not_found")


def _check_body(body: dict[str, object]) -> None:
    problems = edc_rules.plan_problems(edc_rules.parameters(body))
    if problems:
        raise InvalidInput("; ".join(problems), code="edc.invalid_plan", problems=problems)


def _document(body: PlanBody) -> dict[str, object]:
    document = body.model_dump(mode="json")
    _check_body(document)
    return document


async def create_plan(session: AsyncSession, data: PlanCreate, *, actor: str) -> EdcPlan:
    """A plan attached to a step's operation (optionally a route, product, tool group), with
    version 1 as a draft."""
    if await session.scalar(select(EdcPlan.id).where(EdcPlan.name == data.name)) is not None:
        raise Conflict(f"EDC plan {data.name!r} already exists", code="edc.duplicate_plan")
    route = await routes_service.get_route(session, data.route) if data.route else None
    product = await products_service.get_product(session, data.product) if data.product else None
    group = await fabs_service.get_tool_group(session, data.tool_group) if data.tool_group else None
    key = "|".join([data.operation, data.route or "*", data.product or "*", data.tool_group or "*"])
    if await session.scalar(select(EdcPlan.name).where(EdcPlan.context_key == key)):
        raise Conflict(
            "another plan is attached to the same operation, route, product and tool group",
            code="edc.duplicate_attachment",
        )
    plan = EdcPlan(
        name=data.name,
        operation=data.operation,
        route_id=route.id if route else None,
        product_id=product.id if product else None,
        tool_group_id=group.id if group else None,
        context_key=key,
        description=data.description,
    )
    plan.versions = [EdcPlanVersion(version=1, body=_document(data.body), created_by=actor)]
    session.add(plan)
    await session.flush()
    return await get_plan(session, data.name)


async def add_version(
    session: AsyncSession, name: str, body: PlanBody, *, actor: str
) -> EdcPlanVersion:
    plan = await get_plan(session, name, for_update=True)
    latest = await session.scalar(
        select(func.max(EdcPlanVersion.version)).where(EdcPlanVersion.plan_id == plan.id)
    )
    version = EdcPlanVersion(version=(latest or 0) + 1, body=_document(body), created_by=actor)
    plan.versions.append(version)
    await session.flush()
    return version


def _require_draft(plan: EdcPlan, version: EdcPlanVersion) -> None:
    if version.status != PlanVersionStatus.DRAFT:
        raise Conflict(
            f"plan {plan.name!r} version {version.version} is {version.status.value}; "
            "approved and obsolete versions never change",
            code="edc.version_not_draft",
        )


async def update_draft(
    session: AsyncSession, name: str, number: int, body: PlanBody
) -> EdcPlanVersion:
    plan = await get_plan(session, name, for_update=True)
    version = find_version(plan, number)
    _require_draft(plan, version)
    version.body = _document(body)
    await session.flush()
    return version


async def approve_version(
    session: AsyncSession, name: str, number: int, *, actor: str, clock: Clock
) -> EdcPlanVersion:
    """Approve a draft: not by its author (four eyes)."""
    plan = await get_plan(session, name, for_update=True)
    version = find_version(plan, number)
    _require_draft(plan, version)
    if version.created_by == actor:
        raise Conflict(
            "a plan version needs a second engineer's approval, not its author's",
            code="edc.same_approver",
        )
    _check_body(version.body)
    version.status = PlanVersionStatus.APPROVED
    version.approved_by, version.approved_at = actor, clock.now()
    await session.flush()
    return version


async def obsolete_version(
    session: AsyncSession, name: str, number: int, *, actor: str, clock: Clock
) -> EdcPlanVersion:
    plan = await get_plan(session, name, for_update=True)
    version = find_version(plan, number)
    if version.status != PlanVersionStatus.APPROVED:
        raise Conflict(
            f"plan {name!r} version {number} is {version.status.value}; "
            "only approved versions become obsolete",
            code="edc.not_approved",
        )
    version.status = PlanVersionStatus.OBSOLETE
    version.obsoleted_by, version.obsoleted_at = actor, clock.now()
    await session.flush()
    return version


@dataclass(frozen=True)
class PlanContext:
    """Names of a plan's attachment, for reading it back."""

    route: str | None
    product: str | None
    tool_group: str | None


async def plan_context(session: AsyncSession, plan: EdcPlan) -> PlanContext:
    async def code(model: type[Route | Product | ToolGroup], key: int | None) -> str | None:
        if key is None:
            return None
        return await session.scalar(select(model.code).where(model.id == key))

    return PlanContext(
        await code(Route, plan.route_id),
        await code(Product, plan.product_id),
        await code(ToolGroup, plan.tool_group_id),
    )


async def resolve(
    session: AsyncSession,
    *,
    operation: str,
    route_id: int,
    product_id: int,
    tool_group_id: int,
) -> tuple[EdcPlan, EdcPlanVersion] | None:
    """The plan a lot at this step is measured by: of the plans attached to the operation and
    matching the route, product and tool group, the most specific with an approved version,
    and its newest approved version."""
    candidates = list(
        await session.scalars(
            select(EdcPlan).where(
                EdcPlan.operation == operation,
                or_(EdcPlan.route_id.is_(None), EdcPlan.route_id == route_id),
                or_(EdcPlan.product_id.is_(None), EdcPlan.product_id == product_id),
                or_(EdcPlan.tool_group_id.is_(None), EdcPlan.tool_group_id == tool_group_id),
            )
        )
    )
    candidates.sort(
        key=lambda p: edc_rules.specificity(
            p.route_id is not None, p.product_id is not None, p.tool_group_id is not None
        ),
        reverse=True,
    )
    for plan in candidates:
        version = await session.scalar(
            select(EdcPlanVersion)
            .where(
                EdcPlanVersion.plan_id == plan.id,
                EdcPlanVersion.status == PlanVersionStatus.APPROVED,
            )
            .order_by(EdcPlanVersion.version.desc())
            .limit(1)
        )
        if version is not None:
            return plan, version
    return None
