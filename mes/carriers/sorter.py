"""Lots into carriers and sorter jobs: each one lot transaction (or two, for split and merge)
with its lot events and a ``SorterJob`` record of which wafer went from which slot to which.

Wafers change slots only here (and where split, merge, scrap and bonus already move them): a
lot is assigned to a carrier with a slot map, transferred to another carrier, re-slotted in its
carrier, split into another carrier or merged into another lot's carrier.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import attributes

from mes.auth.service import Principal
from mes.carriers import rules
from mes.carriers.models import SorterJob, SorterJobKind
from mes.clock import Clock
from mes.durables import service as durables_service
from mes.durables.models import Carrier
from mes.errors import RuleViolation
from mes.lots import service as lots_service
from mes.lots.commands import Merge, Split
from mes.lots.models import Lot, Wafer
from mes.lots.states import WaferState

Move = list[object]  # [scribe id, from carrier, from slot, to carrier, to slot]


def _active(lot: Lot) -> list[Wafer]:
    return [w for w in lot.wafers if w.state == WaferState.ACTIVE]


async def _code(session: AsyncSession, carrier_id: int | None) -> str | None:
    if carrier_id is None:
        return None
    return await session.scalar(select(Carrier.code).where(Carrier.id == carrier_id))


async def _place(session: AsyncSession, wafers: list[Wafer], new_map: Mapping[int, str]) -> None:
    """Put the wafers in their new slots. Emptied first: a swap of two slots would otherwise
    meet the (lot, slot) uniqueness halfway."""
    for wafer in wafers:
        wafer.slot = None
    await session.flush()
    slot_of = {scribe: slot for slot, scribe in new_map.items()}
    for wafer in wafers:
        wafer.slot = slot_of[wafer.scribe_id]
    await session.flush()


def _record(
    session: AsyncSession,
    kind: SorterJobKind,
    lot: Lot,
    moves: list[Move],
    *,
    actor: Principal,
    at: datetime,
    other: Lot | None = None,
    source_id: int | None = None,
    target_id: int | None = None,
) -> SorterJob:
    job = SorterJob(
        fab_id=lot.fab_id,
        kind=kind,
        lot_id=lot.id,
        other_lot_id=None if other is None else other.id,
        source_carrier_id=source_id,
        target_carrier_id=target_id,
        moves=moves,
        requested_by=actor.username,
        completed_at=at,
    )
    session.add(job)
    return job


async def assign(
    session: AsyncSession,
    lot_code: str,
    carrier_code: str,
    slots: Mapping[str, int] | None,
    *,
    version: int | None,
    actor: Principal,
    clock: Clock,
) -> tuple[Lot, SorterJob | None]:
    """Put a lot into an empty carrier with a slot map (default: the slots it has). A lot
    already in a carrier is transferred (a sorter job); its old carrier is left to clean."""
    now = clock.now()
    lot, change = await lots_service.begin(session, lot_code, version, wafers=True)
    rules.check_sortable(lot.code, lot.state.value, lot.equipment_id is not None)
    wafers = _active(lot)
    requested = dict(slots) if slots is not None else {w.scribe_id: w.slot or 0 for w in wafers}
    source_id = lot.carrier_id
    target, _ = await durables_service.claim_carrier(session, lot.fab_id, carrier_code, len(wafers))
    new_map = rules.check_slot_map(requested, [w.scribe_id for w in wafers], target.capacity)
    source = await _code(session, source_id)
    before = {w.scribe_id: w.slot for w in wafers}
    await lots_service.release_carrier(session, lot)  # the old one (if any) is dirty now
    lot.carrier_id = target.id
    await _place(session, wafers, new_map)
    moves: list[Move] = [
        [scribe, source, before[scribe], target.code, slot] for slot, scribe in new_map.items()
    ]
    job = None
    if source_id is not None:
        job = _record(
            session,
            SorterJobKind.TRANSFER,
            lot,
            moves,
            actor=actor,
            at=now,
            source_id=source_id,
            target_id=target.id,
        )
    await change.record(
        "CARRIER_TRANSFER" if source_id is not None else "CARRIER_ASSIGN",
        actor=actor.username,
        at=now,
        details={
            "carrier": target.code,
            "from_carrier": source,
            "slots": {scribe: slot for slot, scribe in new_map.items()},
        },
    )
    return lot, job


async def reslot(
    session: AsyncSession,
    lot_code: str,
    slots: Mapping[str, int],
    *,
    version: int | None,
    actor: Principal,
    clock: Clock,
    event: str = "RESLOT",
) -> tuple[Lot, SorterJob]:
    """Move wafers of a lot to other slots of its carrier (the wafers not named stay put)."""
    now = clock.now()
    lot, change = await lots_service.begin(session, lot_code, version, wafers=True)
    rules.check_sortable(lot.code, lot.state.value, lot.equipment_id is not None)
    if lot.carrier_id is None:
        raise RuleViolation("carrier.lot_without_carrier", f"lot {lot_code} is in no carrier")
    carrier = await session.get(Carrier, lot.carrier_id)
    assert carrier is not None  # the FK guarantees it
    wafers = _active(lot)
    before = {w.scribe_id: w.slot for w in wafers}
    wanted = {**{w: s or 0 for w, s in before.items()}, **slots}
    new_map = rules.check_slot_map(wanted, list(before), carrier.capacity)
    after = {scribe: slot for slot, scribe in new_map.items()}
    changed = rules.slot_moves(before, after)
    if not changed:
        raise RuleViolation("carrier.nothing_to_sort", "every wafer is in its slot already")
    await _place(session, wafers, new_map)
    attributes.flag_modified(lot, "carrier_id")  # a new lot version: its slot map changed
    moves: list[Move] = [[w, carrier.code, a, carrier.code, b] for w, a, b in changed]
    job = _record(
        session,
        SorterJobKind.RESLOT,
        lot,
        moves,
        actor=actor,
        at=now,
        source_id=carrier.id,
        target_id=carrier.id,
    )
    await change.record(
        event,
        actor=actor.username,
        at=now,
        details={"carrier": carrier.code, "moves": [list(m) for m in changed]},
    )
    return lot, job


async def split(
    session: AsyncSession,
    lot_code: str,
    wafers: list[str],
    carrier_code: str | None,
    slots: Mapping[str, int] | None,
    *,
    version: int | None,
    actor: Principal,
    clock: Clock,
) -> tuple[Lot, Lot, SorterJob]:
    """Split chosen wafers into a child lot in another carrier (named, or a free one the MES
    chooses), in their slots or in ``slots``."""
    now = clock.now()
    parent = await lots_service.lock_lot(session, lot_code, version, wafers=True)
    rules.check_sortable(parent.code, parent.state.value, parent.equipment_id is not None)
    if slots is not None:
        rules.check_slot_map(slots, wafers, rules.SLOTS)  # refused before anything moves
    source_id = parent.carrier_id
    source = await _code(session, source_id)
    before = {w.scribe_id: w.slot for w in _active(parent)}
    if parent.carrier_id is None and carrier_code is None:
        raise RuleViolation(
            "carrier.lot_without_carrier",
            f"lot {lot_code} is in no carrier: name the carrier the wafers go to",
        )
    parent, child = await lots_service.split(
        session,
        lot_code,
        Split(wafers=tuple(wafers), version=version, carrier=carrier_code),
        actor=actor,
        clock=clock,
    )
    assert child.carrier_id is not None  # a carrier was named or the parent had one
    if slots is not None and any(before[w] != s for w, s in slots.items()):
        await reslot(
            session, child.code, slots, version=None, actor=actor, clock=clock, event="SORTED"
        )
    target = await session.get(Carrier, child.carrier_id)
    assert target is not None
    rows = await session.execute(
        select(Wafer.scribe_id, Wafer.slot).where(Wafer.lot_id == child.id)
    )
    placed = {scribe: slot for scribe, slot in rows.all()}
    moves: list[Move] = [[w, source, before[w], target.code, placed[w]] for w in sorted(wafers)]
    job = _record(
        session,
        SorterJobKind.SPLIT,
        parent,
        moves,
        actor=actor,
        at=now,
        other=child,
        source_id=source_id,
        target_id=target.id,
    )
    await session.flush()
    return parent, child, job


async def merge(
    session: AsyncSession,
    lot_code: str,
    source_code: str,
    *,
    version: int | None,
    actor: Principal,
    clock: Clock,
) -> tuple[Lot, SorterJob]:
    """Merge lot ``source_code`` into lot ``lot_code`` and its carrier: the source's wafers
    keep their slots where free, else take the lowest free ones; its carrier is emptied."""
    now = clock.now()
    first, second = sorted([lot_code, source_code])
    locked = {
        c: await lots_service.lock_lot(session, c, version if c == lot_code else None, wafers=True)
        for c in (first, second)
    }
    target, source = locked[lot_code], locked[source_code]
    for lot in (target, source):
        rules.check_sortable(lot.code, lot.state.value, lot.equipment_id is not None)
    if target.carrier_id is None:
        raise RuleViolation(
            "carrier.lot_without_carrier", f"lot {lot_code} is in no carrier to merge into"
        )
    into = await _code(session, target.carrier_id)
    source_carrier_id = source.carrier_id
    from_carrier = await _code(session, source_carrier_id)
    before = {w.scribe_id: w.slot for w in _active(source)}
    await lots_service.merge(
        session, lot_code, Merge(source=source_code, version=version), actor=actor, clock=clock
    )
    rows = await session.execute(
        select(Wafer.scribe_id, Wafer.slot).where(Wafer.scribe_id.in_(list(before)))
    )
    placed = {scribe: slot for scribe, slot in rows.all()}
    moves: list[Move] = [[w, from_carrier, before[w], into, placed[w]] for w in sorted(before)]
    job = _record(
        session,
        SorterJobKind.MERGE,
        target,
        moves,
        actor=actor,
        at=now,
        other=source,
        source_id=source_carrier_id,
        target_id=target.carrier_id,
    )
    await session.flush()
    return target, job
