"""Inter-fab transfer: ship a lot to another fab, receive it there, or recall it before."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from mes.auth.service import Principal
from mes.clock import Clock
from mes.durables.models import Carrier
from mes.durables.rules import CarrierLocation
from mes.errors import RuleViolation
from mes.fabs import service as fabs_service
from mes.fabs.models import Fab, FabTransferTime
from mes.lots import rules
from mes.lots._core import begin, lot_view
from mes.lots.commands import Recall, Receive, Ship
from mes.lots.models import FutureAction, Lot, LotTransfer, QTimeWindow
from mes.lots.queries import active_holds
from mes.lots.states import LotState, QTimeStatus
from mes.routes.models import Step

# Transit between fabs takes time: a Q-time window closer than the transit refuses the
# shipment. The configured time between the two fabs (fab_transfer_time) counts; this is the
# time assumed between fabs nobody configured.
TRANSIT_TIME = timedelta(hours=4)


async def transit_time(session: AsyncSession, from_fab_id: int, to_fab_id: int) -> timedelta:
    configured = await session.scalar(
        select(FabTransferTime.time_s).where(
            FabTransferTime.from_fab_id == from_fab_id, FabTransferTime.to_fab_id == to_fab_id
        )
    )
    return TRANSIT_TIME if configured is None else timedelta(seconds=configured)


async def ship(
    session: AsyncSession, code: str, data: Ship, *, actor: Principal, clock: Clock
) -> Lot:
    """Send a waiting lot to another fab; it is InTransit until received there."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    destination = await fabs_service.get_fab(session, data.to_fab)
    open_actions = await session.scalar(
        select(func.count())
        .select_from(FutureAction)
        .where(FutureAction.lot_id == lot.id, FutureAction.done_at.is_(None))
    )
    deadlines = list(
        await session.scalars(
            select(QTimeWindow.deadline_at).where(
                QTimeWindow.lot_id == lot.id, QTimeWindow.status == QTimeStatus.OPEN
            )
        )
    )
    rules.check_ship(
        lot_view(lot, change.holds),
        destination.id,
        open_future_actions=int(open_actions or 0),
        open_qtime_deadlines=deadlines,
        now=now,
        transit_s=int((await transit_time(session, lot.fab_id, destination.id)).total_seconds()),
    )
    # The carrier travels with the lot; one docked on a tool's port is unloaded first.
    carrier = None if lot.carrier_id is None else await session.get(Carrier, lot.carrier_id)
    if carrier is not None:
        if carrier.location == CarrierLocation.LOAD_PORT:
            raise RuleViolation(
                "carrier.at_load_port",
                f"carrier {carrier.code} of lot {code} is on a load port: unload it first",
            )
        carrier.location, carrier.stocker, carrier.location_since = (
            CarrierLocation.IN_TRANSIT,
            None,
            now,
        )
    session.add(
        LotTransfer(
            lot_id=lot.id,
            from_fab_id=lot.fab_id,
            to_fab_id=destination.id,
            fab_id=lot.fab_id,
            shipped_at=now,
            shipped_by=actor.username,
        )
    )
    lot.state = LotState.IN_TRANSIT
    lot.destination_fab_id = destination.id
    await session.flush()
    await change.record("SHIP", actor=actor.username, at=now, details={"to_fab": destination.code})
    return lot


async def receive(
    session: AsyncSession, code: str, data: Receive, *, actor: Principal, clock: Clock
) -> Lot:
    """Receive a travelling lot in its destination fab."""
    now = clock.now()
    lot, change = await begin(session, code, data.version, wafers=True)
    if lot.state != LotState.IN_TRANSIT or lot.destination_fab_id is None:
        raise RuleViolation("lot.not_in_transit", f"lot {code} is not travelling")
    transfer = await _open_transfer(session, lot)
    transfer.received_at, transfer.received_by = now, actor.username
    lot.fab_id = lot.destination_fab_id
    lot.destination_fab_id = None
    lot.state = LotState.WAITING  # OnHold if it was held on the road (Change.record)
    # Through the ORM, not bulk UPDATEs, so the audit trail sees each row move fab.
    if lot.carrier_id is not None:
        carrier = await session.get(Carrier, lot.carrier_id)
        assert carrier is not None  # the FK guarantees it
        carrier.fab_id = lot.fab_id
        carrier.location, carrier.location_since = CarrierLocation.STOCKER, now
    for hold in await active_holds(session, [lot.id]):
        hold.fab_id = lot.fab_id
    await session.flush()
    # The database carried the wafers along (ON UPDATE CASCADE); reload what it changed.
    for wafer in lot.wafers:
        session.expire(wafer, ["fab_id"])
    await change.record("RECEIVE", actor=actor.username, at=now)
    return lot


async def _open_transfer(session: AsyncSession, lot: Lot) -> LotTransfer:
    """The shipment the lot travels on (neither received nor recalled)."""
    return (
        await session.scalars(
            select(LotTransfer).where(
                LotTransfer.lot_id == lot.id,
                LotTransfer.received_at.is_(None),
                LotTransfer.recalled_at.is_(None),
            )
        )
    ).one()


async def recall(
    session: AsyncSession, code: str, data: Recall, *, actor: Principal, clock: Clock
) -> Lot:
    """Call a travelling lot back before the destination receives it: it is at its step in the
    shipping fab again, Waiting (or OnHold, if held on the road), as before the shipment."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    if lot.state != LotState.IN_TRANSIT or lot.destination_fab_id is None:
        raise RuleViolation(
            "lot.not_in_transit", f"lot {code} is not travelling (received, or never shipped)"
        )
    transfer = await _open_transfer(session, lot)
    transfer.recalled_at, transfer.recalled_by = now, actor.username
    transfer.recall_reason = data.reason
    destination = await session.get(Fab, lot.destination_fab_id)
    assert destination is not None  # the FK guarantees it
    lot.destination_fab_id = None
    lot.state = LotState.WAITING  # OnHold if it was held on the road (Change.record)
    await session.flush()
    await change.record(
        "RECALL",
        actor=actor.username,
        at=now,
        reason=data.reason,
        details={"to_fab": destination.code, "shipped_at": transfer.shipped_at.isoformat()},
    )
    return lot


@dataclass(frozen=True)
class Travelling:
    lot: str
    from_fab: str
    to_fab: str
    step_sequence: int | None
    operation: str | None
    tool_group_id: int | None
    wafer_count: int
    priority_class: str
    shipped_at: datetime
    shipped_by: str
    expected_arrival_at: datetime
    remaining_s: float  # negative: overdue


async def in_transit(
    session: AsyncSession, clock: Clock, *, fab: str | None, arriving: bool | None = None
) -> list[Travelling]:
    """Lots on their way between fabs, soonest expected arrival first: with ``fab``, those
    arriving there (``arriving`` True), leaving it (False) or both (None)."""
    now = clock.now()
    origin, destination = aliased(Fab), aliased(Fab)
    query = (
        select(LotTransfer, Lot, origin.code, destination.code, Step)
        .join(Lot, Lot.id == LotTransfer.lot_id)
        .join(origin, origin.id == LotTransfer.from_fab_id)
        .join(destination, destination.id == LotTransfer.to_fab_id)
        .outerjoin(Step, Step.id == Lot.current_step_id)
        .where(
            Lot.state == LotState.IN_TRANSIT,
            LotTransfer.received_at.is_(None),
            LotTransfer.recalled_at.is_(None),
        )
        .limit(1000)
    )
    if fab is not None:
        to_here, from_here = destination.code == fab, origin.code == fab
        query = query.where(
            to_here if arriving else from_here if arriving is False else or_(to_here, from_here)
        )
    transit: dict[tuple[int, int], timedelta] = {}
    out = []
    for transfer, lot, from_code, to_code, step in (await session.execute(query)).all():
        key = (transfer.from_fab_id, transfer.to_fab_id)
        if key not in transit:
            transit[key] = await transit_time(session, *key)
        eta = transfer.shipped_at + transit[key]
        out.append(
            Travelling(
                lot=lot.code,
                from_fab=from_code,
                to_fab=to_code,
                step_sequence=step.sequence if step is not None else None,
                operation=step.operation if step is not None else None,
                tool_group_id=step.tool_group_id if step is not None else None,
                wafer_count=lot.wafer_count,
                priority_class=lot.priority_class.value,
                shipped_at=transfer.shipped_at,
                shipped_by=transfer.shipped_by,
                expected_arrival_at=eta,
                remaining_s=(eta - now).total_seconds(),
            )
        )
    out.sort(key=lambda t: (t.expected_arrival_at, t.lot))
    return out
