"""Fabs, their areas, and tool groups (capabilities)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from sqlalchemy import select

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.fabs import service
from mes.fabs.models import Area, Fab, ProcessingKind, ToolGroup
from mes.fabs.schemas import (
    AreaCreate,
    AreaRead,
    AreaUpdate,
    FabCreate,
    FabRead,
    FabUpdate,
    ToolGroupCreate,
    ToolGroupRead,
    ToolGroupUpdate,
)
from mes.kit.api import CodePath, Page, PageQuery, fetch_page
from mes.kit.idempotency import OnceDep

router = APIRouter(tags=["fabs"])

FabWriter = Annotated[Principal, requires(roles.FAB_WRITE)]
ToolGroupWriter = Annotated[Principal, requires(roles.TOOL_GROUP_WRITE)]


def _area_read(area: Area, fab: Fab) -> AreaRead:
    return AreaRead(fab=fab.code, code=area.code, name=area.name)


@router.get("/fabs", response_model=Page[FabRead])
async def list_fabs(session: ReadSession, page: PageQuery) -> Page[FabRead]:
    """All fabs of the network."""
    rows, total = await fetch_page(session, select(Fab).order_by(Fab.code), page)
    return Page(items=[FabRead.model_validate(f) for f in rows], total=total, **page.model_dump())


@router.post("/fabs", response_model=FabRead, status_code=status.HTTP_201_CREATED)
async def create_fab(
    body: FabCreate, _by: FabWriter, session: WriteSession, once: OnceDep
) -> FabRead | JSONResponse:
    """Register a fab."""

    async def op() -> FabRead:
        return FabRead.model_validate(await service.create_fab(session, body))

    return await once.run(op)


@router.get("/fabs/{fab}", response_model=FabRead)
async def get_fab(fab: CodePath, session: ReadSession) -> FabRead:
    """One fab."""
    return FabRead.model_validate(await service.get_fab(session, fab))


@router.patch("/fabs/{fab}", response_model=FabRead)
async def update_fab(
    fab: CodePath, body: FabUpdate, _by: FabWriter, session: WriteSession
) -> FabRead:
    """Rename a fab or change its time zone."""
    return FabRead.model_validate(await service.update_fab(session, fab, body))


@router.get("/fabs/{fab}/areas", response_model=Page[AreaRead])
async def list_areas(fab: CodePath, session: ReadSession, page: PageQuery) -> Page[AreaRead]:
    """The areas of a fab."""
    owner = await service.get_fab(session, fab)
    stmt = select(Area).where(Area.fab_id == owner.id).order_by(Area.code)
    rows, total = await fetch_page(session, stmt, page)
    return Page(items=[_area_read(a, owner) for a in rows], total=total, **page.model_dump())


@router.post("/fabs/{fab}/areas", response_model=AreaRead, status_code=status.HTTP_201_CREATED)
async def create_area(
    fab: CodePath, body: AreaCreate, _by: FabWriter, session: WriteSession, once: OnceDep
) -> AreaRead | JSONResponse:
    """Add an area to a fab."""

    async def op() -> AreaRead:
        area = await service.create_area(session, fab, body)
        return _area_read(area, await service.get_fab(session, fab))

    return await once.run(op)


@router.get("/fabs/{fab}/areas/{area}", response_model=AreaRead)
async def get_area(fab: CodePath, area: CodePath, session: ReadSession) -> AreaRead:
    """One area of a fab."""
    owner = await service.get_fab(session, fab)
    return _area_read(await service.get_area(session, owner, area), owner)


@router.patch("/fabs/{fab}/areas/{area}", response_model=AreaRead)
async def update_area(
    fab: CodePath, area: CodePath, body: AreaUpdate, _by: FabWriter, session: WriteSession
) -> AreaRead:
    """Rename an area."""
    updated = await service.update_area(session, fab, area, body)
    return _area_read(updated, await service.get_fab(session, fab))


@router.get("/tool-groups", response_model=Page[ToolGroupRead])
async def list_tool_groups(
    session: ReadSession, page: PageQuery, processing_kind: ProcessingKind | None = None
) -> Page[ToolGroupRead]:
    """Tool groups (capabilities), optionally of one processing kind."""
    stmt = select(ToolGroup).order_by(ToolGroup.code)
    if processing_kind is not None:
        stmt = stmt.where(ToolGroup.processing_kind == processing_kind)
    rows, total = await fetch_page(session, stmt, page)
    return Page(
        items=[ToolGroupRead.model_validate(g) for g in rows], total=total, **page.model_dump()
    )


@router.post("/tool-groups", response_model=ToolGroupRead, status_code=status.HTTP_201_CREATED)
async def create_tool_group(
    body: ToolGroupCreate, _by: ToolGroupWriter, session: WriteSession, once: OnceDep
) -> ToolGroupRead | JSONResponse:
    """Define a tool group."""

    async def op() -> ToolGroupRead:
        return ToolGroupRead.model_validate(await service.create_tool_group(session, body))

    return await once.run(op)


@router.get("/tool-groups/{group}", response_model=ToolGroupRead)
async def get_tool_group(group: CodePath, session: ReadSession) -> ToolGroupRead:
    """One tool group."""
    return ToolGroupRead.model_validate(await service.get_tool_group(session, group))


@router.patch("/tool-groups/{group}", response_model=ToolGroupRead)
async def update_tool_group(
    group: CodePath, body: ToolGroupUpdate, _by: ToolGroupWriter, session: WriteSession
) -> ToolGroupRead:
    """Rename a tool group."""
    return ToolGroupRead.model_validate(await service.update_tool_group(session, group, body))
