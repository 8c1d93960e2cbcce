"""Carriers (FOUPs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.durables import service
from mes.durables.models import Carrier, CarrierState
from mes.durables.schemas import CarrierCreate, CarrierRead
from mes.kit.api import CodePath, CodeStr, Page, PageQuery, fetch_page

router = APIRouter(prefix="/carriers", tags=["durables"])

CarrierWriter = Annotated[Principal, requires(roles.CARRIER_WRITE)]


def carrier_read(carrier: Carrier) -> CarrierRead:
    return CarrierRead(
        code=carrier.code,
        fab=carrier.fab.code,
        capacity=carrier.capacity,
        state=carrier.state,
        uses_since_clean=carrier.uses_since_clean,
        last_cleaned_at=carrier.last_cleaned_at,
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
    body: CarrierCreate, _by: CarrierWriter, session: WriteSession
) -> CarrierRead:
    """Register a carrier."""
    return carrier_read(await service.create_carrier(session, body))


@router.get("/{carrier}", response_model=CarrierRead)
async def get_carrier(carrier: CodePath, session: ReadSession) -> CarrierRead:
    """One carrier."""
    return carrier_read(await service.get_carrier(session, carrier))
