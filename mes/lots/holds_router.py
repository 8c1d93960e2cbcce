"""Lots: hold and release them, hold many at once, arm holds at later steps."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import WriteSession
from mes.kit.api import ClockDep, CodePath
from mes.lots import commands as c
from mes.lots import schemas as s
from mes.lots import service
from mes.lots.http import Answer, LotWrite, future_read, lot_read, lot_write
from mes.lots.models import Lot

router = APIRouter(prefix="/lots", tags=["lots"])

Holder = Annotated[LotWrite, lot_write(roles.LOT_HOLD)]
# Holds placed on many lots, or armed for later: no one lot version to check.
LaterHolder = Annotated[LotWrite, lot_write(roles.LOT_HOLD, if_match=False)]
Releaser = Annotated[LotWrite, lot_write(roles.LOT_RELEASE)]


@router.post("/{lot}/hold", response_model=s.LotRead)
async def hold(lot: CodePath, body: s.HoldRequest, tx: Holder) -> Answer:
    """Put a hold on the lot (several may stack)."""
    command = c.Hold(hold_code=body.hold_code, reason=body.reason, version=tx.version(body.version))
    return await tx.run_lot(
        lambda: service.hold(tx.session, lot, command, actor=tx.by, clock=tx.clock)
    )


@router.post("/{lot}/release", response_model=s.LotRead)
async def release(lot: CodePath, body: s.ReleaseRequest, tx: Releaser) -> Answer:
    """Release holds (e-signature; each hold code names the role that may release it)."""
    command = c.Release(
        reason=body.signature.reason,
        hold_ids=None if body.hold_ids is None else tuple(body.hold_ids),
        hold_code=body.hold_code,
        version=tx.version(body.version),
    )

    async def signed() -> Lot:
        await tx.sign(body.signature)
        return await service.release(tx.session, lot, command, actor=tx.by, clock=tx.clock)

    return await tx.run_lot(signed)


@router.post("/mass-hold", response_model=s.MassHoldResult)
async def mass_hold(body: s.MassHold, tx: LaterHolder) -> Answer:
    """Hold every active lot of a product, at a step, on a tool or in a fab."""
    command = c.MassHold(
        hold_code=body.hold_code,
        reason=body.reason,
        fab=body.fab,
        product=body.product,
        tool=body.tool,
        route=body.route,
        step_sequence=body.step_sequence,
    )

    async def hold_all() -> s.MassHoldResult:
        outcome = await service.mass_hold(tx.session, command, actor=tx.by, clock=tx.clock)
        found = await service.lots_by_codes(tx.session, [lot.code for lot in outcome.held])
        return s.MassHoldResult(
            lots=[lot_read(lot) for lot in found],
            skipped=[s.SkippedLot(lot=code, reason=why) for code, why in outcome.skipped],
        )

    return await tx.run(hold_all)


@router.post(
    "/{lot}/future-actions",
    response_model=s.FutureActionRead,
    status_code=status.HTTP_201_CREATED,
)
async def add_future_action(lot: CodePath, body: s.FutureActionCreate, tx: LaterHolder) -> Answer:
    """Arm a hold at a later step (on arrival, or after track-out there)."""
    command = c.AddFutureAction(
        step_sequence=body.step_sequence,
        hold_code=body.hold_code,
        reason=body.reason,
        kind=body.kind,
    )

    async def arm() -> s.FutureActionRead:
        action = await service.add_future_action(
            tx.session, lot, command, actor=tx.by, clock=tx.clock
        )
        await tx.session.refresh(action, ["step", "hold_code"])
        return future_read(action)

    return await tx.run(arm)


@router.post("/{lot}/future-actions/{action_id}/cancel", status_code=status.HTTP_204_NO_CONTENT)
async def cancel_future_action(
    lot: CodePath,
    action_id: Annotated[int, Path(ge=1, le=2**62)],
    by: Annotated[Principal, requires(roles.LOT_HOLD)],
    session: WriteSession,
    clock: ClockDep,
) -> None:
    """Cancel an armed future action."""
    await service.cancel_future_action(session, lot, action_id, clock=clock)
