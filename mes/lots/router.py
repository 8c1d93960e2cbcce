"""Lots: WIP, history and genealogy; and every lot transaction.

Mutations accept the lot ``version`` the caller read (in the body, or ``If-Match``) and an
``Idempotency-Key`` header: a retry returns the first answer and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select

from mes.auth import roles
from mes.auth.dependencies import requires, sign
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.errors import Conflict, StaleVersion
from mes.kit.api import ClockDep, CodePath, CodeStr, Page, PageQuery, fetch_page
from mes.kit.idempotency import KeyHeader, idempotent
from mes.lots import schemas as s
from mes.lots import service
from mes.lots.models import FutureAction, HoldCode, Lot
from mes.lots.schemas import CurrentStep, LotDetail, LotEventRead, LotRead, WaferRead
from mes.lots.states import LotState, PriorityClass

router = APIRouter(prefix="/lots", tags=["lots"])
hold_codes_router = APIRouter(prefix="/hold-codes", tags=["lots"])

Starter = Annotated[Principal, requires(roles.LOT_START)]
Mover = Annotated[Principal, requires(roles.LOT_MOVE)]
Holder = Annotated[Principal, requires(roles.LOT_HOLD)]
Releaser = Annotated[Principal, requires(roles.LOT_RELEASE)]
Splitter = Annotated[Principal, requires(roles.LOT_SPLIT)]
Scrapper = Annotated[Principal, requires(roles.LOT_SCRAP)]
Bonus = Annotated[Principal, requires(roles.LOT_BONUS)]
Jumper = Annotated[Principal, requires(roles.LOT_JUMP)]
Prioritiser = Annotated[Principal, requires(roles.LOT_PRIORITY)]
Terminator = Annotated[Principal, requires(roles.LOT_TERMINATE)]
Transferrer = Annotated[Principal, requires(roles.LOT_TRANSFER)]
HoldCodeAdmin = Annotated[Principal, requires(roles.HOLD_CODE_ADMIN)]
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=24)]

Answer = JSONResponse | BaseModel


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


async def _fresh(session: WriteSession, code: str) -> LotRead:
    """The lot as the transaction left it (relationships reloaded, not the stale ones)."""
    return lot_read(await service.reload_lot(session, code))


def _version(body_version: int | None, if_match: str | None) -> int | None:
    """The version the caller read: the body's, else the If-Match header's."""
    if body_version is not None or if_match is None:
        return body_version
    try:
        return int(if_match.strip().strip('"').removeprefix("W/").strip('"'))
    except ValueError as exc:
        raise StaleVersion(
            "If-Match must carry the lot's version number", code="lot.bad_if_match"
        ) from exc


async def _run(
    request: Request,
    session: WriteSession,
    key: str | None,
    by: Principal,
    clock: ClockDep,
    operation: Callable[[], Awaitable[BaseModel]],
    *,
    status_code: int = 200,
) -> Answer:
    return await idempotent(
        request, session, key, by.username, clock.now(), operation, status_code=status_code
    )


# --- reads ---------------------------------------------------------------------------------


@router.get("", response_model=Page[LotRead])
async def list_lots(
    session: ReadSession,
    page: PageQuery,
    fab: Annotated[CodeStr | None, Query()] = None,
    product: Annotated[CodeStr | None, Query()] = None,
    state: LotState | None = None,
    priority_class: PriorityClass | None = None,
    area: Annotated[CodeStr | None, Query()] = None,
    tool_group: Annotated[CodeStr | None, Query()] = None,
    route: Annotated[CodeStr | None, Query()] = None,
    step_sequence: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    tool: Annotated[CodeStr | None, Query()] = None,
) -> Page[LotRead]:
    """WIP and finished lots, filterable by fab, area, tool group, step, tool, state, priority."""
    flt = service.LotFilter(
        fab=fab,
        product=product,
        state=state,
        priority_class=priority_class,
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


def _future_read(action: FutureAction) -> s.FutureActionRead:
    return s.FutureActionRead(
        id=action.id,
        step_sequence=action.step.sequence,
        kind=action.kind,
        hold_code=action.hold_code.code,
        reason=action.reason,
        created_by=action.created_by,
        created_at=action.created_at,
    )


@router.get("/{lot}/future-actions", response_model=list[s.FutureActionRead])
async def list_future_actions(lot: CodePath, session: ReadSession) -> list[s.FutureActionRead]:
    """Holds armed at later steps of the lot."""
    return [_future_read(a) for a in await service.future_actions(session, lot)]


# --- start ---------------------------------------------------------------------------------


@router.post("", response_model=LotRead, status_code=status.HTTP_201_CREATED)
async def start_lot(
    request: Request,
    body: s.LotStart,
    by: Starter,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
) -> Answer:
    """Start (release) a lot on its product's active route version."""

    async def op() -> LotRead:
        (lot,) = await service.start_lots(
            session,
            product_code=body.product,
            fab_code=body.fab,
            route_code=body.route,
            count=1,
            wafer_count=body.wafer_count,
            priority_class=body.priority_class,
            due_at=body.due_at,
            code=body.code,
            carrier_code=body.carrier,
            actor=by.username,
            clock=clock,
        )
        return await _fresh(session, lot.code)

    return await _run(request, session, key, by, clock, op, status_code=201)


class LotList(BaseModel):
    lots: list[LotRead]


@router.post("/bulk-start", response_model=LotList, status_code=status.HTTP_201_CREATED)
async def bulk_start(
    request: Request,
    body: s.BulkStart,
    by: Starter,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
) -> Answer:
    """Start N lots of a product at once."""

    async def op() -> LotList:
        lots = await service.start_lots(
            session,
            product_code=body.product,
            fab_code=body.fab,
            route_code=body.route,
            count=body.count,
            wafer_count=body.wafer_count,
            priority_class=body.priority_class,
            due_at=body.due_at,
            code=None,
            carrier_code=None,
            actor=by.username,
            clock=clock,
        )
        found = await service.lots_by_codes(session, [lot.code for lot in lots])
        return LotList(lots=[lot_read(lot) for lot in found])

    return await _run(request, session, key, by, clock, op, status_code=201)


# --- moves ---------------------------------------------------------------------------------


@router.post("/{lot}/track-in", response_model=s.TrackInResult)
async def track_in(
    request: Request,
    lot: CodePath,
    body: s.TrackIn,
    by: Mover,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Put the lot on a tool; answers the recipe version and parameters to run."""
    body.version = _version(body.version, if_match)

    async def op() -> s.TrackInResult:
        moved, tool, recipe = await service.track_in(session, lot, body, principal=by, clock=clock)
        return s.TrackInResult(
            lot=await _fresh(session, moved.code),
            tool=tool.code,
            recipe=s.RecipeToRun(
                name=recipe.recipe.name,
                version=recipe.version,
                checksum=recipe.checksum,
                body=recipe.body,
            ),
        )

    return await _run(request, session, key, by, clock, op)


@router.post("/{lot}/track-out", response_model=LotRead)
async def track_out(
    request: Request,
    lot: CodePath,
    body: s.TrackOut,
    by: Mover,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Take the lot off its tool: next step (sampling applied), rework, or completion."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        moved = await service.track_out(session, lot, body, principal=by, clock=clock)
        return await _fresh(session, moved.code)

    return await _run(request, session, key, by, clock, op)


# --- holds ---------------------------------------------------------------------------------


@router.post("/{lot}/hold", response_model=LotRead)
async def hold(
    request: Request,
    lot: CodePath,
    body: s.HoldRequest,
    by: Holder,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Put a hold on the lot (several may stack)."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        held = await service.hold(session, lot, body, actor=by.username, clock=clock)
        return await _fresh(session, held.code)

    return await _run(request, session, key, by, clock, op)


@router.post("/{lot}/release", response_model=LotRead)
async def release(
    request: Request,
    lot: CodePath,
    body: s.ReleaseRequest,
    by: Releaser,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Release holds (e-signature; each hold code names the role that may release it)."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        await sign(request, session, by, body.signature)
        released = await service.release(session, lot, body, principal=by, clock=clock)
        return await _fresh(session, released.code)

    return await _run(request, session, key, by, clock, op)


@router.post("/mass-hold", response_model=LotList)
async def mass_hold(
    request: Request,
    body: s.MassHold,
    by: Holder,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
) -> Answer:
    """Hold every active lot of a product, at a step, on a tool or in a fab."""

    async def op() -> LotList:
        held = await service.mass_hold(session, body, actor=by.username, clock=clock)
        found = await service.lots_by_codes(session, [lot.code for lot in held])
        return LotList(lots=[lot_read(lot) for lot in found])

    return await _run(request, session, key, by, clock, op)


@router.post(
    "/{lot}/future-actions",
    response_model=s.FutureActionRead,
    status_code=status.HTTP_201_CREATED,
)
async def add_future_action(
    request: Request,
    lot: CodePath,
    body: s.FutureActionCreate,
    by: Holder,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
) -> Answer:
    """Arm a hold at a later step (on arrival, or after track-out there)."""

    async def op() -> s.FutureActionRead:
        action = await service.add_future_action(session, lot, body, actor=by.username, clock=clock)
        await session.refresh(action, ["step", "hold_code"])
        return _future_read(action)

    return await _run(request, session, key, by, clock, op, status_code=201)


@router.post("/{lot}/future-actions/{action_id}/cancel", status_code=status.HTTP_204_NO_CONTENT)
async def cancel_future_action(
    lot: CodePath,
    action_id: Annotated[int, Path(ge=1, le=2**62)],
    by: Holder,
    session: WriteSession,
    clock: ClockDep,
) -> None:
    """Cancel an armed future action."""
    await service.cancel_future_action(session, lot, action_id, clock=clock)


# --- split / merge / scrap / bonus ---------------------------------------------------------


class SplitResult(BaseModel):
    parent: LotRead
    child: LotRead


@router.post("/{lot}/split", response_model=SplitResult, status_code=status.HTTP_201_CREATED)
async def split(
    request: Request,
    lot: CodePath,
    body: s.SplitRequest,
    by: Splitter,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Move chosen wafers into a child lot (`<lot>.01`, …) at the same step."""
    body.version = _version(body.version, if_match)

    async def op() -> SplitResult:
        parent, child = await service.split(session, lot, body, actor=by.username, clock=clock)
        return SplitResult(
            parent=await _fresh(session, parent.code), child=await _fresh(session, child.code)
        )

    return await _run(request, session, key, by, clock, op, status_code=201)


@router.post("/{lot}/merge", response_model=LotRead)
async def merge(
    request: Request,
    lot: CodePath,
    body: s.MergeRequest,
    by: Splitter,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Merge another lot (same product, route version, step, state) into this one."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        merged = await service.merge(session, lot, body, actor=by.username, clock=clock)
        return await _fresh(session, merged.code)

    return await _run(request, session, key, by, clock, op)


@router.post("/{lot}/scrap", response_model=LotRead)
async def scrap(
    request: Request,
    lot: CodePath,
    body: s.ScrapRequest,
    by: Scrapper,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Scrap wafers with a reason code (e-signature)."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        await sign(request, session, by, body.signature)
        scrapped = await service.scrap(session, lot, body, actor=by.username, clock=clock)
        return await _fresh(session, scrapped.code)

    return await _run(request, session, key, by, clock, op)


@router.post("/{lot}/bonus", response_model=LotRead)
async def bonus(
    request: Request,
    lot: CodePath,
    body: s.BonusRequest,
    by: Bonus,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Add wafers to the lot with a reason code."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        grown = await service.bonus(session, lot, body, actor=by.username, clock=clock)
        return await _fresh(session, grown.code)

    return await _run(request, session, key, by, clock, op)


# --- jump / priority / terminate / transfer -------------------------------------------------


@router.post("/{lot}/jump", response_model=LotRead)
async def jump(
    request: Request,
    lot: CodePath,
    body: s.JumpRequest,
    by: Jumper,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Move the lot to another step of its route (e-signature)."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        await sign(request, session, by, body.signature)
        moved = await service.jump(session, lot, body, actor=by.username, clock=clock)
        return await _fresh(session, moved.code)

    return await _run(request, session, key, by, clock, op)


@router.post("/{lot}/priority", response_model=LotRead)
async def change_priority(
    request: Request,
    lot: CodePath,
    body: s.PriorityChange,
    by: Prioritiser,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Change priority class (normal / hot / super-hot) and due date."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        changed = await service.change_priority(session, lot, body, actor=by.username, clock=clock)
        return await _fresh(session, changed.code)

    return await _run(request, session, key, by, clock, op)


@router.post("/{lot}/terminate", response_model=LotRead)
async def terminate(
    request: Request,
    lot: CodePath,
    body: s.TerminateRequest,
    by: Terminator,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """End the lot before its route is done (e-signature)."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        await sign(request, session, by, body.signature)
        ended = await service.terminate(session, lot, body, actor=by.username, clock=clock)
        return await _fresh(session, ended.code)

    return await _run(request, session, key, by, clock, op)


@router.post("/{lot}/ship", response_model=LotRead)
async def ship(
    request: Request,
    lot: CodePath,
    body: s.ShipRequest,
    by: Transferrer,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Ship the lot to another fab; it is InTransit until received there."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        shipped = await service.ship(session, lot, body, actor=by.username, clock=clock)
        return await _fresh(session, shipped.code)

    return await _run(request, session, key, by, clock, op)


@router.post("/{lot}/receive", response_model=LotRead)
async def receive(
    request: Request,
    lot: CodePath,
    body: s.ReceiveRequest,
    by: Transferrer,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
    if_match: IfMatch = None,
) -> Answer:
    """Receive a travelling lot in its destination fab."""
    body.version = _version(body.version, if_match)

    async def op() -> LotRead:
        received = await service.receive(session, lot, body, actor=by.username, clock=clock)
        return await _fresh(session, received.code)

    return await _run(request, session, key, by, clock, op)


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
    body: s.HoldCodeCreate, _by: HoldCodeAdmin, session: WriteSession
) -> s.HoldCodeRead:
    """Define a hold code and the role allowed to release its holds."""
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
