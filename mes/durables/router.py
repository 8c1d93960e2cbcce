"""Carriers (FOUPs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.durables import service
from mes.durables.models import Carrier, CarrierState, Durable
from mes.durables.rules import DurableKind
from mes.durables.schemas import (
    CarrierCreate,
    CarrierRead,
    DurableCreate,
    DurableMove,
    DurableRead,
    DurableStateChange,
)
from mes.kit.api import ClockDep, CodePath, CodeStr, Page, PageQuery, fetch_page
from mes.kit.idempotency import OnceDep

router = APIRouter(prefix="/carriers", tags=["durables"])
durables_router = APIRouter(prefix="/durables", tags=["durables"])

CarrierWriter = Annotated[Principal, requires(roles.CARRIER_WRITE)]
DurableWriter = Annotated[Principal, requires(roles.DURABLE_WRITE)]
DurableMover = Annotated[Principal, requires(roles.DURABLE_MOVE)]


def carrier_read(carrier: Carrier) -> CarrierRead:
    return CarrierRead(
        code=carrier.code,
        fab=carrier.fab.code,
        capacity=carrier.capacity,
        state=carrier.state,
        uses_since_clean=carrier.uses_since_clean,
        last_cleaned_at=carrier.last_cleaned_at,
        cleanings=carrier.cleanings,
        location=carrier.location,
        stocker=carrier.stocker,
        tool=None if carrier.load_port is None else carrier.load_port.equipment.code,
        port_number=None if carrier.load_port is None else carrier.load_port.port_number,
    )


@router.get("", response_model=Page[CarrierRead])
async def list_carriers(
    session: ReadSession,
    page: PageQuery,
    fab: Annotated[CodeStr | None, Query()] = None,
    state: CarrierState | None = None,
) -> Page[CarrierRead]:
    """Carriers, filterable by fab and state."""
    flt = service.CarrierFilter(fab=fab, state=state)
    rows, total = await fetch_page(session, service.carrier_query(flt), page)
    return Page(items=[carrier_read(c) for c in rows], total=total, **page.model_dump())


@router.post("", response_model=CarrierRead, status_code=status.HTTP_201_CREATED)
async def create_carrier(
    body: CarrierCreate, _by: CarrierWriter, session: WriteSession, once: OnceDep
) -> CarrierRead | JSONResponse:
    """Register a carrier."""

    async def op() -> CarrierRead:
        return carrier_read(await service.create_carrier(session, body))

    return await once.run(op)


@router.get("/{carrier}", response_model=CarrierRead)
async def get_carrier(carrier: CodePath, session: ReadSession) -> CarrierRead:
    """One carrier."""
    return carrier_read(await service.get_carrier(session, carrier))


@router.post("/{carrier}/clean", response_model=CarrierRead)
async def clean_carrier(
    carrier: CodePath, _by: DurableMover, session: WriteSession, clock: ClockDep
) -> CarrierRead:
    """Record a cleaning cycle: the carrier is available again, its use counter restarts."""
    return carrier_read(await service.clean_carrier(session, carrier, clock=clock))


def durable_read(d: Durable) -> DurableRead:
    return DurableRead(
        code=d.code,
        design=d.design,
        kind=d.kind,
        fab=d.fab.code,
        tool_group=None if d.tool_group is None else d.tool_group.code,
        state=d.state,
        location=d.location,
        tool=None if d.equipment is None else d.equipment.code,
        location_since=d.location_since,
        usage_count=d.usage_count,
        usage_limit=d.usage_limit,
    )


@durables_router.get("", response_model=Page[DurableRead])
async def list_durables(
    session: ReadSession,
    page: PageQuery,
    fab: Annotated[CodeStr | None, Query()] = None,
    tool: Annotated[CodeStr | None, Query()] = None,
    design: Annotated[str | None, Query(max_length=64)] = None,
    kind: DurableKind | None = None,
) -> Page[DurableRead]:
    """Reticles and probe cards, filterable by fab, tool, design and kind."""
    flt = service.DurableFilter(fab=fab, tool=tool, design=design, kind=kind)
    rows, total = await fetch_page(session, service.durable_query(flt), page)
    return Page(items=[durable_read(d) for d in rows], total=total, **page.model_dump())


@durables_router.post("", response_model=DurableRead, status_code=status.HTTP_201_CREATED)
async def create_durable(
    body: DurableCreate, _by: DurableWriter, session: WriteSession, clock: ClockDep, once: OnceDep
) -> DurableRead | JSONResponse:
    """Register a reticle or probe card (in the library)."""

    async def op() -> DurableRead:
        return durable_read(await service.create_durable(session, body, clock=clock))

    return await once.run(op)


@durables_router.get("/{durable}", response_model=DurableRead)
async def get_durable(durable: CodePath, session: ReadSession) -> DurableRead:
    """One reticle or probe card."""
    return durable_read(await service.get_durable(session, durable))


@durables_router.post("/{durable}/move", response_model=DurableRead)
async def move_durable(
    durable: CodePath, body: DurableMove, _by: DurableMover, session: WriteSession, clock: ClockDep
) -> DurableRead:
    """Move a reticle or probe card to the library, a tool, or cleaning."""
    return durable_read(await service.move_durable(session, durable, body, clock=clock))


@durables_router.post("/{durable}/state", response_model=DurableRead)
async def change_durable_state(
    durable: CodePath, body: DurableStateChange, _by: DurableWriter, session: WriteSession
) -> DurableRead:
    """Hold, release or retire a reticle or probe card; optionally reset its use counter."""
    return durable_read(await service.change_durable_state(session, durable, body))
