"""Wafers between lots: split into a child lot, merge lots, scrap wafers, add bonus wafers."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth.service import Principal
from mes.clock import Clock
from mes.durables import service as durables_service
from mes.equipment.models import Equipment
from mes.equipment.states import E10State
from mes.errors import Conflict, RuleViolation
from mes.lots import rules
from mes.lots._core import (
    Change,
    begin,
    close_holds,
    finish,
    hold_count,
    lock_lot,
    lot_view,
    lots_on_tool,
    release_carrier,
    tool_state,
)
from mes.lots.commands import Bonus, Merge, Scrap, Split
from mes.lots.inheritance import copy_to_child, move_to_target
from mes.lots.models import Genealogy, Lot, Wafer
from mes.lots.states import GenealogyRelation, LotState, WaferState

# --- split / merge ---------------------------------------------------------------------------


def _slots(wafers: Sequence[Wafer]) -> set[int]:
    """The carrier slots these wafers occupy (a scrapped wafer occupies none)."""
    return {w.slot for w in wafers if w.slot is not None}


def _pick_wafers(lot: Lot, scribe_ids: Sequence[str]) -> list[Wafer]:
    by_id = {w.scribe_id: w for w in lot.wafers if w.state == WaferState.ACTIVE}
    missing = sorted(set(scribe_ids) - set(by_id))
    if missing or len(set(scribe_ids)) != len(scribe_ids):
        raise RuleViolation(
            "lot.wafer_not_in_lot",
            f"wafers {missing or 'listed twice'} are not active wafers of lot {lot.code}",
            status=422,
        )
    return [by_id[w] for w in scribe_ids]


async def split(
    session: AsyncSession, code: str, data: Split, *, actor: Principal, clock: Clock
) -> tuple[Lot, Lot]:
    """Move chosen wafers into a new child lot (same step, state, holds)."""
    now = clock.now()
    parent, change = await begin(session, code, data.version, wafers=True)
    wafers = _pick_wafers(parent, data.wafers)
    rules.check_split(lot_view(parent, change.holds), len(wafers), parent.wafer_count)
    children = await session.scalar(
        select(func.count()).select_from(Lot).where(Lot.parent_lot_id == parent.id)
    )
    child = Lot(
        code=rules.child_code(parent.code, int(children or 0) + 1),
        fab_id=parent.fab_id,
        product_id=parent.product_id,
        route_version_id=parent.route_version_id,
        current_step_id=parent.current_step_id,
        state=LotState.WAITING,
        lot_type=parent.lot_type,
        priority_class=parent.priority_class,
        due_at=parent.due_at,
        wafer_count=len(wafers),
        parent_lot_id=parent.id,
        started_at=parent.started_at,
        step_entered_at=parent.step_entered_at,
        # A child of a lot held at its route's end is done too: it completes on release.
        route_completed_at=parent.route_completed_at,
    )
    if await session.scalar(select(Lot.id).where(Lot.code == child.code)) is not None:
        raise Conflict(f"lot {child.code} already exists", code="lot.duplicate")
    # The child's wafers leave the parent's carrier: a physical split is a sorter move into
    # another carrier, named or chosen (and said so on the event). A lot the MES tracks
    # without a carrier splits without one, unless one is named.
    carrier_details: dict[str, object] = {}
    if data.carrier is not None or parent.carrier_id is not None:
        carrier, chosen = await durables_service.claim_carrier(
            session, parent.fab_id, data.carrier, len(wafers)
        )
        child.carrier_id = carrier.id
        carrier_details = {"carrier": carrier.code, "carrier_chosen_by_mes": chosen}
    session.add(child)
    await session.flush()
    for wafer in wafers:
        wafer.lot_id = child.id
    parent.wafer_count -= len(wafers)
    # The child inherits the parent's holds, Q-time windows, future actions, rework counts.
    await copy_to_child(session, parent, child)
    session.add(
        Genealogy(
            parent_lot_id=parent.id,
            child_lot_id=child.id,
            relation=GenealogyRelation.SPLIT,
            wafer_count=len(wafers),
            occurred_at=now,
        )
    )
    await session.flush()
    moved = {"wafers": list(data.wafers)}
    await change.record(
        "SPLIT",
        actor=actor.username,
        at=now,
        details={**moved, "child": child.code, **carrier_details},
    )
    child_change = Change(session, child, 0)
    child_change.before = None  # type: ignore[assignment]
    await child_change.record(
        "SPLIT_FROM",
        actor=actor.username,
        at=now,
        details={**moved, "parent": parent.code, **carrier_details},
    )
    return parent, child


async def merge(
    session: AsyncSession, code: str, data: Merge, *, actor: Principal, clock: Clock
) -> Lot:
    """Move every wafer of ``data.source`` into lot ``code``; the source lot ends."""
    now = clock.now()
    first_code, second_code = sorted([code, data.source])
    # Lock both lots in a fixed order so two opposite merges cannot deadlock.
    locked = {
        c: await lock_lot(session, c, data.version if c == code else None, wafers=True)
        for c in (first_code, second_code)
    }
    target, source = locked[code], locked[data.source]
    target_holds = await hold_count(session, target.id)
    source_holds = await hold_count(session, source.id)
    rules.check_merge(
        rules.MergeView(lot_view(target, target_holds), target.product_id, target.route_version_id),
        rules.MergeView(lot_view(source, source_holds), source.product_id, source.route_version_id),
    )
    if (target.route_completed_at is None) != (source.route_completed_at is None):
        raise RuleViolation(
            "lot.merge_mismatch", "one of the lots has run its last step and the other has not"
        )
    target_change = Change(session, target, target_holds)
    source_change = Change(session, source, source_holds)
    moving = [w for w in source.wafers if w.state == WaferState.ACTIVE]
    taken = _slots(target.wafers)
    clashing = [w for w in moving if w.slot in taken]
    for wafer, slot in zip(
        clashing, rules.free_slots(taken | _slots(moving), len(clashing)), strict=True
    ):
        wafer.slot = slot  # a sorter re-slots them into the target carrier
    for wafer in moving:
        wafer.lot_id = target.id
    target.wafer_count += source.wafer_count
    source.wafer_count = 0
    # The merged lot carries the source's holds, windows, future actions and rework counts too.
    await move_to_target(session, source, target, at=now)
    finish(source, LotState.TERMINATED, now)
    await release_carrier(session, source)
    session.add(
        Genealogy(
            parent_lot_id=source.id,
            child_lot_id=target.id,
            relation=GenealogyRelation.MERGE,
            wafer_count=len(moving),
            occurred_at=now,
        )
    )
    await session.flush()
    await source_change.record(
        "MERGED_INTO", actor=actor.username, at=now, details={"target": target.code}
    )
    await target_change.record(
        "MERGE",
        actor=actor.username,
        at=now,
        details={"source": source.code, "wafers": len(moving)},
    )
    return target


# --- scrap / bonus -------------------------------------------------------------------------


# --- scrap / bonus ---------------------------------------------------------------------------


async def scrap(
    session: AsyncSession, code: str, data: Scrap, *, actor: Principal, clock: Clock
) -> Lot:
    """Scrap wafers with a reason code; a lot left without wafers is Scrapped."""
    now = clock.now()
    rules.check_reason(data.reason_code, rules.SCRAP_CODES, "scrap")
    lot, change = await begin(session, code, data.version, wafers=True)
    rules.require_active(lot_view(lot, change.holds))
    if lot.state == LotState.IN_TRANSIT:
        # Scrapping its last wafer would end a lot that is still travelling; wafers broken on
        # the way are scrapped once the lot has been received.
        raise RuleViolation("lot.in_transit", f"lot {code} is travelling to another fab")
    wafers = _pick_wafers(lot, data.wafers)
    # A running lot that loses its last wafer leaves its tool, which idles unless it runs others.
    tool: Equipment | None = None
    tool_stays_busy = False
    if lot.equipment_id is not None and len(wafers) == lot.wafer_count:
        tool = await session.get(Equipment, lot.equipment_id, with_for_update={"key_share": True})
        assert tool is not None  # the FK guarantees it
        tool_stays_busy = len(await lots_on_tool(session, tool.id)) > 1
    slots_freed = {w.scribe_id: w.slot for w in wafers}
    for wafer in wafers:
        wafer.state = WaferState.SCRAPPED
        wafer.slot = None  # out of the carrier: the slot takes another wafer
    lot.wafer_count -= len(wafers)
    closed: list[int] = []
    if lot.wafer_count == 0:
        closed = await close_holds(
            session, lot, actor=actor.username, at=now, reason="every wafer of the lot scrapped"
        )
        finish(lot, LotState.SCRAPPED, now)
        await release_carrier(session, lot)
        if tool is not None and not tool_stays_busy and tool.e10_state == E10State.PRD:
            tool_state(session, tool, E10State.SBY, actor=actor.username, at=now)
    await session.flush()
    await change.record(
        "SCRAP",
        actor=actor.username,
        at=now,
        reason=data.comment,
        details={
            "reason_code": data.reason_code,
            "wafers": list(data.wafers),
            "slots": slots_freed,
            **({"closed_holds": closed} if closed else {}),
        },
    )
    return lot


async def bonus(
    session: AsyncSession, code: str, data: Bonus, *, actor: Principal, clock: Clock
) -> Lot:
    """Add wafers to a lot (found, recounted, monitor) with a reason code."""
    now = clock.now()
    rules.check_reason(data.reason_code, rules.BONUS_CODES, "bonus")
    lot, change = await begin(session, code, data.version, wafers=True)
    rules.check_bonus(lot_view(lot, change.holds))
    if lot.wafer_count + data.count > 25:
        raise RuleViolation("lot.too_many_wafers", "a lot holds at most 25 wafers")
    slots = rules.free_slots(_slots(lot.wafers), data.count)
    taken = {w.scribe_id for w in lot.wafers}
    added = []
    for slot in slots:
        for scribe in rules.bonus_scribe_ids(lot.code, slot):
            if scribe not in taken and (
                await session.scalar(select(Wafer.id).where(Wafer.scribe_id == scribe)) is None
            ):
                break
        taken.add(scribe)
        added.append(scribe)
    for slot, scribe in zip(slots, added, strict=True):
        lot.wafers.append(Wafer(scribe_id=scribe, fab_id=lot.fab_id, slot=slot))
    lot.wafer_count += data.count
    await session.flush()
    await change.record(
        "BONUS",
        actor=actor.username,
        at=now,
        reason=data.comment,
        details={"reason_code": data.reason_code, "wafers": added},
    )
    return lot
