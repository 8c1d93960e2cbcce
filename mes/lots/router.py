"""Lots: WIP, one lot, its history, genealogy and armed future actions; holds across lots;
hold codes.

The lot transactions are served by the routers beside this one: ``moves_router`` (start,
track-in, track-out), ``holds_router``, ``wafers_router`` (split, merge, scrap, bonus) and
``control_router`` (jump, priority, terminate, ship, receive). Each mutation accepts the lot
``version`` the caller read (in the body, or ``If-Match``) and an ``Idempotency-Key`` header: a
retry returns the first answer and changes nothing (``mes.lots.http``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse
from sqlalchemy import select

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.errors import Conflict
from mes.kit.api import ClockDep, CodePath, CodeStr, Page, PageQuery, fetch_page
from mes.kit.idempotency import OnceDep
from mes.lots import qtime, service
from mes.lots import schemas as s
from mes.lots.http import future_read, lot_read
from mes.lots.models import HoldCode
from mes.lots.schemas import LotDetail, LotEventRead, LotRead, WaferRead
from mes.lots.states import LotState, LotType, PriorityClass

router = APIRouter(prefix="/lots", tags=["lots"])
hold_codes_router = APIRouter(prefix="/hold-codes", tags=["lots"])

HoldCodeAdmin = Annotated[Principal, requires(roles.HOLD_CODE_ADMIN)]


# --- reads ---------------------------------------------------------------------------------


@router.get("", response_model=Page[LotRead])
async def list_lots(
    session: ReadSession,
    page: PageQuery,
    fab: Annotated[CodeStr | None, Query()] = None,
    product: Annotated[CodeStr | None, Query()] = None,
    state: LotState | None = None,
    priority_class: PriorityClass | None = None,
    lot_type: LotType | None = None,
    area: Annotated[CodeStr | None, Query()] = None,
    tool_group: Annotated[CodeStr | None, Query()] = None,
    route: Annotated[CodeStr | None, Query()] = None,
    step_sequence: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    tool: Annotated[CodeStr | None, Query()] = None,
) -> Page[LotRead]:
    """WIP and finished lots, filterable by fab, area, tool group, step, tool, state, priority
    and lot type."""
    flt = service.LotFilter(
        fab=fab,
        product=product,
        state=state,
        priority_class=priority_class,
        lot_type=lot_type,
        area=area,
        tool_group=tool_group,
        route=route,
        step_sequence=step_sequence,
        tool=tool,
    )
    rows, total = await fetch_page(session, service.lot_query(flt), page)
    return Page(items=[lot_read(lot) for lot in rows], total=total, **page.model_dump())


@router.get("/holds", response_model=Page[s.HoldRead])
async def list_holds(
    session: ReadSession,
    page: PageQuery,
    clock: ClockDep,
    fab: Annotated[CodeStr | None, Query()] = None,
    hold_code: Annotated[CodeStr | None, Query()] = None,
) -> Page[s.HoldRead]:
    """Active holds across lots, oldest first, with their age."""
    rows, total = await service.hold_list(session, page, fab=fab, hold_code=hold_code)
    now = clock.now()
    return Page(
        items=[service.hold_read(h, f, now) for h, f in rows], total=total, **page.model_dump()
    )


@router.get("/qtime-windows", response_model=list[s.QTimeWindowRead])
async def list_qtime_windows(
    session: ReadSession,
    clock: ClockDep,
    fab: Annotated[CodeStr | None, Query()] = None,
    within_s: Annotated[float | None, Query(ge=0, le=30 * 24 * 3600)] = None,
) -> list[s.QTimeWindowRead]:
    """Open Q-time windows, soonest deadline first (at most 1,000); ``within_s`` keeps those
    that run out within that many seconds: the lots to hurry."""
    found = await qtime.open_windows(session, clock, fab=fab, within_s=within_s)
    return [s.QTimeWindowRead(**vars(w)) for w in found]


@router.get("/in-transit", response_model=list[s.InTransitRead])
async def list_in_transit(
    session: ReadSession,
    clock: ClockDep,
    fab: Annotated[CodeStr | None, Query()] = None,
    direction: Annotated[Literal["arriving", "leaving"] | None, Query()] = None,
) -> list[s.InTransitRead]:
    """Lots travelling between fabs, soonest expected arrival first (at most 1,000): with
    ``fab``, those arriving there and those leaving it (``direction`` keeps one side). A lot
    arriving is part of the destination's WIP; its dispatcher shows it but never starts it
    before it is received."""
    found = await service.in_transit(
        session, clock, fab=fab, arriving=None if direction is None else direction == "arriving"
    )
    return [
        s.InTransitRead(**{k: v for k, v in vars(t).items() if k != "tool_group_id"}) for t in found
    ]


@router.get("/{lot}", response_model=LotDetail)
async def get_lot(lot: CodePath, session: ReadSession, clock: ClockDep) -> LotDetail:
    """One lot with its wafers and active holds."""
    found = await service.get_lot(session, lot)
    holds = await service.active_holds(session, [found.id])
    return LotDetail(
        **lot_read(found).model_dump(),
        wafers=[WaferRead(scribe_id=w.scribe_id, slot=w.slot, state=w.state) for w in found.wafers],
        holds=[service.hold_read(h, found.fab.code, clock.now()) for h in holds],
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


@router.get("/{lot}/genealogy", response_model=s.GenealogyRead)
async def lot_genealogy(lot: CodePath, session: ReadSession) -> s.GenealogyRead:
    """Ancestors and descendants through splits and merges."""
    return await service.genealogy(session, lot)


@router.get("/{lot}/future-actions", response_model=list[s.FutureActionRead])
async def list_future_actions(lot: CodePath, session: ReadSession) -> list[s.FutureActionRead]:
    """Holds armed at later steps of the lot."""
    return [future_read(a) for a in await service.future_actions(session, lot)]


# --- hold codes ----------------------------------------------------------------------------


@hold_codes_router.get("", response_model=list[s.HoldCodeRead])
async def list_hold_codes(session: ReadSession) -> list[s.HoldCodeRead]:
    """Hold codes and the role that releases each."""
    rows = await session.scalars(select(HoldCode).order_by(HoldCode.code))
    return [
        s.HoldCodeRead(code=h.code, description=h.description, release_role=h.release_role)
        for h in rows
    ]


@hold_codes_router.post("", response_model=s.HoldCodeRead, status_code=status.HTTP_201_CREATED)
async def create_hold_code(
    body: s.HoldCodeCreate, _by: HoldCodeAdmin, session: WriteSession, once: OnceDep
) -> s.HoldCodeRead | JSONResponse:
    """Define a hold code and the role allowed to release its holds."""

    async def op() -> s.HoldCodeRead:
        if await session.scalar(select(HoldCode.id).where(HoldCode.code == body.code)) is not None:
            raise Conflict(f"hold code {body.code} exists", code="hold.duplicate_code")
        code = HoldCode(
            code=body.code, description=body.description, release_role=body.release_role.value
        )
        session.add(code)
        await session.flush()
        return s.HoldCodeRead(
            code=code.code, description=code.description, release_role=code.release_role
        )

    return await once.run(op)
