"""Data collection (EDC) plans and their versions: drafts, four-eyes approval with an
e-signature, retirement."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.auth import roles
from mes.auth.dependencies import requires, sign
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.kit.api import ClockDep, Page, PageQuery, VersionPath, fetch_page
from mes.kit.idempotency import OnceDep
from mes.quality import plans
from mes.quality import schemas as s
from mes.quality.models import EdcPlan, EdcPlanVersion

router = APIRouter(prefix="/quality/plans", tags=["quality"])

PlanWriter = Annotated[Principal, requires(roles.EDC_WRITE)]
PlanApprover = Annotated[Principal, requires(roles.EDC_APPROVE)]
PlanRetirer = Annotated[Principal, requires(roles.EDC_OBSOLETE)]
PlanPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.\-]*$")]


def _summary(v: EdcPlanVersion) -> s.PlanVersionSummary:
    return s.PlanVersionSummary(
        version=v.version,
        status=v.status,
        created_by=v.created_by,
        approved_by=v.approved_by,
        approved_at=v.approved_at,
        obsoleted_by=v.obsoleted_by,
        obsoleted_at=v.obsoleted_at,
    )


async def _read(session: AsyncSession, plan: EdcPlan) -> s.PlanRead:
    context = await plans.plan_context(session, plan)
    return s.PlanRead(
        name=plan.name,
        operation=plan.operation,
        route=context.route,
        product=context.product,
        tool_group=context.tool_group,
        description=plan.description,
        versions=[_summary(v) for v in plan.versions],
    )


def _version_read(plan: EdcPlan, v: EdcPlanVersion) -> s.PlanVersionRead:
    return s.PlanVersionRead(
        plan=plan.name, body=s.PlanBody.model_validate(v.body), **_summary(v).model_dump()
    )


@router.get("", response_model=Page[s.PlanRead])
async def list_plans(
    session: ReadSession,
    page: PageQuery,
    operation: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> Page[s.PlanRead]:
    """EDC plans with their version summaries, optionally of one operation."""
    stmt = select(EdcPlan).options(selectinload(EdcPlan.versions)).order_by(EdcPlan.name)
    if operation is not None:
        stmt = stmt.where(EdcPlan.operation == operation)
    rows, total = await fetch_page(session, stmt, page)
    return Page(items=[await _read(session, p) for p in rows], total=total, **page.model_dump())


@router.post("", response_model=s.PlanRead, status_code=status.HTTP_201_CREATED)
async def create_plan(
    body: s.PlanCreate, by: PlanWriter, session: WriteSession, once: OnceDep
) -> s.PlanRead | JSONResponse:
    """Attach a plan to a step's operation (optionally a route, product, tool group); its
    parameters become version 1, a draft."""

    async def op() -> s.PlanRead:
        return await _read(session, await plans.create_plan(session, body, actor=by.username))

    return await once.run(op)


@router.get("/{plan}", response_model=s.PlanRead)
async def get_plan(plan: PlanPath, session: ReadSession) -> s.PlanRead:
    return await _read(session, await plans.get_plan(session, plan))


@router.post(
    "/{plan}/versions", response_model=s.PlanVersionRead, status_code=status.HTTP_201_CREATED
)
async def add_version(
    plan: PlanPath, body: s.PlanBody, by: PlanWriter, session: WriteSession, once: OnceDep
) -> s.PlanVersionRead | JSONResponse:
    """Start a new draft version."""

    async def op() -> s.PlanVersionRead:
        version = await plans.add_version(session, plan, body, actor=by.username)
        return _version_read(await plans.get_plan(session, plan), version)

    return await once.run(op)


@router.get("/{plan}/versions/{version}", response_model=s.PlanVersionRead)
async def get_version(
    plan: PlanPath, version: VersionPath, session: ReadSession
) -> s.PlanVersionRead:
    found = await plans.get_plan(session, plan)
    return _version_read(found, plans.find_version(found, version))


@router.put("/{plan}/versions/{version}/body", response_model=s.PlanVersionRead)
async def update_draft(
    plan: PlanPath, version: VersionPath, body: s.PlanBody, _by: PlanWriter, session: WriteSession
) -> s.PlanVersionRead:
    """Replace the parameters of a draft version."""
    updated = await plans.update_draft(session, plan, version, body)
    return _version_read(await plans.get_plan(session, plan), updated)


@router.post("/{plan}/versions/{version}/approve", response_model=s.PlanVersionRead)
async def approve_version(
    request: Request,
    plan: PlanPath,
    version: VersionPath,
    body: s.Signed,
    by: PlanApprover,
    session: WriteSession,
    clock: ClockDep,
) -> s.PlanVersionRead:
    """Approve a draft (e-signature; four eyes: not by its author). From then on lots at the
    plan's steps are measured by it; it never changes."""
    await sign(request, session, by, body.signature)
    approved = await plans.approve_version(session, plan, version, actor=by.username, clock=clock)
    return _version_read(await plans.get_plan(session, plan), approved)


@router.post("/{plan}/versions/{version}/obsolete", response_model=s.PlanVersionRead)
async def obsolete_version(
    request: Request,
    plan: PlanPath,
    version: VersionPath,
    body: s.Signed,
    by: PlanRetirer,
    session: WriteSession,
    clock: ClockDep,
) -> s.PlanVersionRead:
    """Retire an approved version (e-signature)."""
    await sign(request, session, by, body.signature)
    retired = await plans.obsolete_version(session, plan, version, actor=by.username, clock=clock)
    return _version_read(await plans.get_plan(session, plan), retired)
