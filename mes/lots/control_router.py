"""Lots: jump to another step, change priority or lot type, terminate; ship to another fab,
receive there, or recall the shipment before."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from mes.auth import roles
from mes.kit.api import CodePath
from mes.lots import commands as c
from mes.lots import schemas as s
from mes.lots import service
from mes.lots.http import Answer, LotWrite, lot_write
from mes.lots.models import Lot

router = APIRouter(prefix="/lots", tags=["lots"])

Jumper = Annotated[LotWrite, lot_write(roles.LOT_JUMP)]
Prioritiser = Annotated[LotWrite, lot_write(roles.LOT_PRIORITY)]
Retyper = Annotated[LotWrite, lot_write(roles.LOT_TYPE)]
Terminator = Annotated[LotWrite, lot_write(roles.LOT_TERMINATE)]
Transferrer = Annotated[LotWrite, lot_write(roles.LOT_TRANSFER)]


@router.post("/{lot}/jump", response_model=s.LotRead)
async def jump(lot: CodePath, body: s.JumpRequest, tx: Jumper) -> Answer:
    """Move the lot to another step of its route (e-signature)."""
    command = c.Jump(
        to_sequence=body.to_sequence,
        reason=body.signature.reason,
        version=tx.version(body.version),
    )

    async def signed() -> Lot:
        await tx.sign(body.signature)
        return await service.jump(tx.session, lot, command, actor=tx.by, clock=tx.clock)

    return await tx.run_lot(signed)


@router.post("/{lot}/priority", response_model=s.LotRead)
async def change_priority(lot: CodePath, body: s.PriorityChange, tx: Prioritiser) -> Answer:
    """Change priority class (normal / hot / super-hot) and due date."""
    command = c.ChangePriority(
        priority_class=body.priority_class,
        reason=body.reason,
        due_at=body.due_at,
        version=tx.version(body.version),
    )
    return await tx.run_lot(
        lambda: service.change_priority(tx.session, lot, command, actor=tx.by, clock=tx.clock)
    )


@router.post("/{lot}/lot-type", response_model=s.LotRead)
async def change_lot_type(lot: CodePath, body: s.LotTypeChange, tx: Retyper) -> Answer:
    """Change the lot type (production, engineering, monitor, dummy, rework) with a reason
    (e-signature): what the lot may run on, whether it counts as output, how dispatch weighs
    it. Refused while the lot runs."""
    command = c.ChangeLotType(
        lot_type=body.lot_type, reason=body.signature.reason, version=tx.version(body.version)
    )

    async def signed() -> Lot:
        await tx.sign(body.signature)
        return await service.change_lot_type(tx.session, lot, command, actor=tx.by, clock=tx.clock)

    return await tx.run_lot(signed)


@router.post("/{lot}/terminate", response_model=s.LotRead)
async def terminate(lot: CodePath, body: s.TerminateRequest, tx: Terminator) -> Answer:
    """End the lot before its route is done (e-signature)."""
    command = c.Terminate(reason=body.signature.reason, version=tx.version(body.version))

    async def signed() -> Lot:
        await tx.sign(body.signature)
        return await service.terminate(tx.session, lot, command, actor=tx.by, clock=tx.clock)

    return await tx.run_lot(signed)


@router.post("/{lot}/ship", response_model=s.LotRead)
async def ship(lot: CodePath, body: s.ShipRequest, tx: Transferrer) -> Answer:
    """Ship the lot to another fab; it is InTransit until received there."""
    command = c.Ship(to_fab=body.to_fab, version=tx.version(body.version))
    return await tx.run_lot(
        lambda: service.ship(tx.session, lot, command, actor=tx.by, clock=tx.clock)
    )


@router.post("/{lot}/receive", response_model=s.LotRead)
async def receive(lot: CodePath, body: s.ReceiveRequest, tx: Transferrer) -> Answer:
    """Receive a travelling lot in its destination fab."""
    command = c.Receive(version=tx.version(body.version))
    return await tx.run_lot(
        lambda: service.receive(tx.session, lot, command, actor=tx.by, clock=tx.clock)
    )


@router.post("/{lot}/recall", response_model=s.LotRead)
async def recall(lot: CodePath, body: s.RecallRequest, tx: Transferrer) -> Answer:
    """Call a shipment back before the destination received it (with a reason): the lot is at
    its step in the shipping fab again. Refused with ``lot.not_in_transit`` once received."""
    command = c.Recall(reason=body.reason, version=tx.version(body.version))
    return await tx.run_lot(
        lambda: service.recall(tx.session, lot, command, actor=tx.by, clock=tx.clock)
    )
