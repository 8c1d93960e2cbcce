"""Tools: master data, E10 state changes and state history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.equipment import service
from mes.equipment.models import Equipment, EquipmentStateEvent
from mes.equipment.schemas import (
    ChamberRead,
    EquipmentCreate,
    EquipmentRead,
    EquipmentUpdate,
    LoadPortRead,
    StateChange,
    StateEventRead,
)
from mes.equipment.states import E10State
from mes.kit.api import ClockDep, CodePath, CodeStr, Page, PageQuery, fetch_page
from mes.kit.idempotency import KeyHeader, idempotent

router = APIRouter(prefix="/equipment", tags=["equipment"])

EquipmentWriter = Annotated[Principal, requires(roles.EQUIPMENT_WRITE)]
StateReporter = Annotated[Principal, requires(roles.EQUIPMENT_STATE)]


def to_read(tool: Equipment) -> EquipmentRead:
    return EquipmentRead(
        code=tool.code,
        name=tool.name,
        fab=tool.fab.code,
        area=tool.area.code,
        tool_group=tool.tool_group.code,
        vendor=tool.vendor,
        model=tool.model,
        opcua_endpoint=tool.opcua_endpoint,
        max_lots=tool.max_lots,
        e10_state=tool.e10_state,
        e10_substate=tool.e10_substate,
        state_since=tool.state_since,
        version=tool.version,
        chambers=[
            ChamberRead(name=c.name, e10_state=c.e10_state, e10_substate=c.e10_substate)
            for c in tool.chambers
        ],
        load_ports=[
            LoadPortRead(port_number=p.port_number, transfer_state=p.transfer_state)
            for p in tool.load_ports
        ],
    )


def _event_read(event: EquipmentStateEvent, chamber: str | None) -> StateEventRead:
    return StateEventRead(
        chamber=chamber,
        from_state=event.from_state,
        to_state=event.to_state,
        substate=event.substate,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        source=event.source,
        actor=event.actor,
        reason=event.reason,
    )


@router.get("", response_model=Page[EquipmentRead])
async def list_equipment(
    session: ReadSession,
    page: PageQuery,
    fab: Annotated[CodeStr | None, Query()] = None,
    area: Annotated[CodeStr | None, Query()] = None,
    tool_group: Annotated[CodeStr | None, Query()] = None,
    state: E10State | None = None,
) -> Page[EquipmentRead]:
    """Tools, filterable by fab, area, tool group and E10 state."""
    flt = service.EquipmentFilter(fab=fab, area=area, tool_group=tool_group, state=state)
    rows, total = await fetch_page(session, service.equipment_query(flt), page)
    return Page(items=[to_read(t) for t in rows], total=total, **page.model_dump())


@router.post("", response_model=EquipmentRead, status_code=status.HTTP_201_CREATED)
async def create_equipment(
    body: EquipmentCreate, by: EquipmentWriter, session: WriteSession, clock: ClockDep
) -> EquipmentRead:
    """Install a tool."""
    return to_read(await service.create_equipment(session, body, actor=by.username, clock=clock))


@router.get("/{tool}", response_model=EquipmentRead)
async def get_equipment(tool: CodePath, session: ReadSession) -> EquipmentRead:
    """One tool with its chambers and load ports."""
    return to_read(await service.get_equipment(session, tool))


@router.patch("/{tool}", response_model=EquipmentRead)
async def update_equipment(
    tool: CodePath, body: EquipmentUpdate, _by: EquipmentWriter, session: WriteSession
) -> EquipmentRead:
    """Change a tool's master data; send the version you read."""
    return to_read(await service.update_equipment(session, tool, body))


@router.post("/{tool}/state", response_model=EquipmentRead)
async def change_state(
    request: Request,
    tool: CodePath,
    body: StateChange,
    by: StateReporter,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
) -> EquipmentRead | JSONResponse:
    """Put a tool or one of its chambers into an E10 state; send the version you read.

    Tool adapters retry: with an ``Idempotency-Key`` a retry answers the first result.
    """

    async def op() -> EquipmentRead:
        return to_read(
            await service.change_state(session, tool, body, actor=by.username, clock=clock)
        )

    return await idempotent(request, session, key, by.username, clock.now(), op)


@router.get("/{tool}/state-history", response_model=Page[StateEventRead])
async def state_history(
    tool: CodePath, session: ReadSession, page: PageQuery, since: AwareDatetime | None = None
) -> Page[StateEventRead]:
    """The tool's E10 state changes, newest first."""
    rows, total = await service.state_history(session, tool, page, since=since)
    return Page(items=[_event_read(e, c) for e, c in rows], total=total, **page.model_dump())
