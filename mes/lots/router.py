"""Lots: WIP queries and lot history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mes.db.transaction import ReadSession
from mes.kit.api import CodePath, CodeStr, Page, PageQuery, fetch_page
from mes.lots import service
from mes.lots.models import Lot
from mes.lots.schemas import CurrentStep, LotDetail, LotEventRead, LotRead, WaferRead
from mes.lots.states import LotState, PriorityClass

router = APIRouter(prefix="/lots", tags=["lots"])


def lot_read(lot: Lot) -> LotRead:
    step = lot.current_step
    return LotRead(
        code=lot.code,
        fab=lot.fab.code,
        product=lot.product.code,
        route=lot.route_version.route.code,
        route_version=lot.route_version.version,
        step=CurrentStep(
            sequence=step.sequence, operation=step.operation, tool_group=step.tool_group.code
        )
        if step is not None
        else None,
        state=lot.state,
        priority_class=lot.priority_class,
        due_at=lot.due_at,
        wafer_count=lot.wafer_count,
        carrier=lot.carrier.code if lot.carrier else None,
        parent=lot.parent.code if lot.parent else None,
        started_at=lot.started_at,
        ended_at=lot.ended_at,
        version=lot.version,
    )


@router.get("", response_model=Page[LotRead])
async def list_lots(
    session: ReadSession,
    page: PageQuery,
    fab: Annotated[CodeStr | None, Query()] = None,
    product: Annotated[CodeStr | None, Query()] = None,
    state: LotState | None = None,
    priority_class: PriorityClass | None = None,
) -> Page[LotRead]:
    """Lots (WIP and finished), filterable by fab, product, state and priority class."""
    flt = service.LotFilter(fab=fab, product=product, state=state, priority_class=priority_class)
    rows, total = await fetch_page(session, service.lot_query(flt), page)
    return Page(items=[lot_read(lot) for lot in rows], total=total, **page.model_dump())


@router.get("/{lot}", response_model=LotDetail)
async def get_lot(lot: CodePath, session: ReadSession) -> LotDetail:
    """One lot with its wafers."""
    found = await service.get_lot(session, lot)
    return LotDetail(
        **lot_read(found).model_dump(),
        wafers=[WaferRead(scribe_id=w.scribe_id, slot=w.slot, state=w.state) for w in found.wafers],
    )


@router.get("/{lot}/history", response_model=Page[LotEventRead])
async def lot_history(lot: CodePath, session: ReadSession, page: PageQuery) -> Page[LotEventRead]:
    """Everything that happened to a lot, oldest first."""
    rows, total = await service.lot_history(session, lot, page)
    return Page(
        items=[
            LotEventRead(
                event_type=e.event_type,
                occurred_at=e.occurred_at,
                actor=e.actor,
                fab=fab,
                step_sequence=seq,
                tool=tool,
                reason=e.reason,
                before=e.before,
                after=e.after,
            )
            for e, fab, seq, tool in rows
        ],
        total=total,
        **page.model_dump(),
    )
