"""Fabs, areas and tool groups: master data owned by the fab's engineers."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.errors import Conflict, NotFound
from mes.fabs.models import Area, Fab, ToolGroup
from mes.fabs.schemas import (
    AreaCreate,
    AreaUpdate,
    FabCreate,
    FabUpdate,
    ToolGroupCreate,
    ToolGroupUpdate,
)
from mes.kit.lookup import get_by_key


async def get_fab(session: AsyncSession, code: str) -> Fab:
    """The fab with business id ``code``, or fab.not_found."""
    return await get_by_key(session, Fab, Fab.code, code, code="fab.not_found", what="fab")


async def create_fab(session: AsyncSession, data: FabCreate) -> Fab:
    """Register a fab (site) of the network."""
    if await session.scalar(select(Fab.id).where(Fab.code == data.code)) is not None:
        raise Conflict(f"fab {data.code!r} already exists", code="fab.duplicate")
    fab = Fab(code=data.code, name=data.name, timezone=data.timezone)
    session.add(fab)
    await session.flush()
    return fab


async def update_fab(session: AsyncSession, code: str, data: FabUpdate) -> Fab:
    """Rename a fab or change its time zone."""
    fab = await get_fab(session, code)
    for field, value in data.model_dump(exclude_unset=True, exclude_none=True).items():
        setattr(fab, field, value)
    await session.flush()
    return fab


async def get_area(session: AsyncSession, fab: Fab, code: str) -> Area:
    """The area ``code`` of ``fab``, or area.not_found."""
    area = await session.scalar(select(Area).where(Area.fab_id == fab.id, Area.code == code))
    if area is None:
        raise NotFound(f"area {code!r} does not exist in fab {fab.code!r}", code="area.not_found")
    return area


async def create_area(session: AsyncSession, fab_code: str, data: AreaCreate) -> Area:
    """Add a production area to a fab."""
    fab = await get_fab(session, fab_code)
    taken = await session.scalar(
        select(Area.id).where(Area.fab_id == fab.id, Area.code == data.code)
    )
    if taken is not None:
        raise Conflict(
            f"area {data.code!r} already exists in fab {fab.code!r}", code="area.duplicate"
        )
    area = Area(fab_id=fab.id, code=data.code, name=data.name)
    session.add(area)
    await session.flush()
    return area


async def update_area(session: AsyncSession, fab_code: str, code: str, data: AreaUpdate) -> Area:
    """Rename an area."""
    area = await get_area(session, await get_fab(session, fab_code), code)
    area.name = data.name
    await session.flush()
    return area


async def get_tool_group(session: AsyncSession, code: str) -> ToolGroup:
    """The tool group (capability) ``code``, or tool_group.not_found."""
    return await get_by_key(
        session, ToolGroup, ToolGroup.code, code, code="tool_group.not_found", what="tool group"
    )


async def create_tool_group(session: AsyncSession, data: ToolGroupCreate) -> ToolGroup:
    """Define a capability that tools in any fab can provide."""
    if await session.scalar(select(ToolGroup.id).where(ToolGroup.code == data.code)) is not None:
        raise Conflict(f"tool group {data.code!r} already exists", code="tool_group.duplicate")
    group = ToolGroup(code=data.code, name=data.name, processing_kind=data.processing_kind)
    session.add(group)
    await session.flush()
    return group


async def update_tool_group(session: AsyncSession, code: str, data: ToolGroupUpdate) -> ToolGroup:
    """Rename a tool group. Its processing kind is fixed: tools and recipes depend on it."""
    group = await get_tool_group(session, code)
    group.name = data.name
    await session.flush()
    return group
