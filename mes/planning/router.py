"""Start plans (release planning): master data per product and fab, and the lots they released."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.kit.api import ClockDep, CodePath, CodeStr, Page, PageQuery, fetch_page
from mes.kit.idempotency import OnceDep
from mes.planning import service
from mes.planning.schemas import ReleaseRead, StartPlanCreate, StartPlanRead, StartPlanUpdate

router = APIRouter(prefix="/start-plans", tags=["start plans"])

Planner = Annotated[Principal, requires(roles.START_PLAN_WRITE)]


@router.get("", response_model=Page[StartPlanRead])
async def list_plans(
    session: ReadSession,
    clock: ClockDep,
    page: PageQuery,
    fab: Annotated[CodeStr | None, Query()] = None,
    active: bool | None = None,
) -> Page[StartPlanRead]:
    """Start plans, by code (filters: fab, active)."""
    rows, total = await fetch_page(session, service.plan_query(fab, active), page)
    items = await service.plan_reads(session, rows, clock.now())
    return Page(items=items, total=total, **page.model_dump())


@router.post("", response_model=StartPlanRead, status_code=status.HTTP_201_CREATED)
async def create_plan(
    body: StartPlanCreate, by: Planner, session: WriteSession, clock: ClockDep, once: OnceDep
) -> StartPlanRead | JSONResponse:
    """Define a start plan: the releaser starts its lots while it is active."""

    async def op() -> StartPlanRead:
        plan = await service.create_plan(session, body, actor=by.username, clock=clock)
        return await service.plan_read(session, plan, clock.now())

    return await once.run(op)


@router.get("/{plan}", response_model=StartPlanRead)
async def get_plan(plan: CodePath, session: ReadSession, clock: ClockDep) -> StartPlanRead:
    """One start plan, with its release count and next release time."""
    return await service.plan_read(session, await service.get_plan(session, plan), clock.now())


@router.patch("/{plan}", response_model=StartPlanRead)
async def update_plan(
    plan: CodePath, body: StartPlanUpdate, _by: Planner, session: WriteSession, clock: ClockDep
) -> StartPlanRead:
    """Change a plan (rate, due rule, mix, active…); send the version you read."""
    changed = await service.update_plan(session, plan, body, clock=clock)
    return await service.plan_read(session, changed, clock.now())


@router.delete("/{plan}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_plan(plan: CodePath, _by: Planner, session: WriteSession) -> None:
    """Remove a plan that never released a lot (deactivate one that did)."""
    await service.delete_plan(session, plan)


@router.get("/{plan}/releases", response_model=Page[ReleaseRead])
async def list_releases(plan: CodePath, session: ReadSession, page: PageQuery) -> Page[ReleaseRead]:
    """The lots the plan released, newest first."""
    found = await service.get_plan(session, plan)
    rows, total = await fetch_page(session, service.release_query(found.id), page, scalars=False)
    items = [
        ReleaseRead(
            plan=found.code,
            sequence=release.sequence,
            slot_at=release.slot_at,
            released_at=release.released_at,
            lot=lot_code,
            priority_class=release.priority_class,
            due_at=release.due_at,
            skipped_before=release.skipped_before,
            owner=release.owner,
        )
        for release, lot_code in rows
    ]
    return Page(items=items, total=total, **page.model_dump())
