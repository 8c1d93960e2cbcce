"""Holds: hold and release a lot, hold many at once, and arm holds at later steps."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth.service import Principal
from mes.clock import Clock
from mes.errors import Forbidden, InvalidInput, NotFound, RuleViolation
from mes.lots import rules
from mes.lots._core import (
    Change,
    begin,
    by_sequence,
    finish,
    get_hold_code,
    hold_count,
    lock_lot,
    lot_view,
    place_hold,
    release_carrier,
    route_steps,
    step_of,
)
from mes.lots.commands import AddFutureAction, Hold, MassHold, Release
from mes.lots.models import FutureAction, Lot
from mes.lots.queries import LotFilter, active_holds, lot_query
from mes.lots.states import FutureActionKind, LotState


async def hold(
    session: AsyncSession, code: str, data: Hold, *, actor: Principal, clock: Clock
) -> Lot:
    """Put a hold on a lot. A running lot stops at its track-out; a travelling lot arrives held
    (an excursion must be able to contain lots on the road)."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    rules.require_active(lot_view(lot, change.holds))
    by = actor.username
    place_hold(
        session, lot, await get_hold_code(session, data.hold_code), data.reason, actor=by, at=now
    )
    await session.flush()
    await change.record(
        "HOLD", actor=by, at=now, reason=data.reason, details={"hold_code": data.hold_code}
    )
    return lot


async def release(
    session: AsyncSession,
    code: str,
    data: Release,
    *,
    actor: Principal,
    clock: Clock,
) -> Lot:
    """Release holds; each hold code names the role that may release it."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    holds = await active_holds(session, [lot.id])
    if data.hold_ids is not None:
        chosen = [h for h in holds if h.id in set(data.hold_ids)]
        if len(chosen) != len(set(data.hold_ids)):
            raise NotFound("some of these holds are not active on the lot", code="hold.not_found")
    elif data.hold_code is not None:
        chosen = [h for h in holds if h.hold_code.code == data.hold_code]
    else:
        chosen = holds
    if not chosen:
        raise RuleViolation("hold.none_active", f"lot {code} has no such active hold")
    roles = {r.value for r in actor.roles}
    refused = sorted(
        {h.hold_code.code for h in chosen if not rules.can_release(h.hold_code.release_role, roles)}
    )
    if refused:
        raise Forbidden(
            f"releasing holds {refused} needs the role their code names", code="hold.release_role"
        )
    reason = data.reason
    for h in chosen:
        h.released_at, h.released_by, h.release_reason = now, actor.username, reason
    details: dict[str, object] = {"released": sorted(h.id for h in chosen)}
    if lot.route_completed_at is not None and len(chosen) == len(holds):
        # It ran its last step and only its holds kept it: now it completes.
        finish(lot, LotState.COMPLETED, now)
        await release_carrier(session, lot)
        details["completed"] = True
    await session.flush()
    await change.record("RELEASE", actor=actor.username, at=now, reason=reason, details=details)
    return lot


@dataclass(frozen=True)
class MassHoldOutcome:
    held: list[Lot]
    skipped: list[tuple[str, str]]  # (lot code, why)


async def mass_hold(
    session: AsyncSession, data: MassHold, *, actor: Principal, clock: Clock
) -> MassHoldOutcome:
    """Hold every active lot matching the filter (at a step, on a tool, of a product, in a fab),
    travelling lots included; a lot that already carries an active hold of this code is left
    as it is and reported as skipped."""
    if not any((data.product, data.tool, data.route, data.fab)):
        raise InvalidInput("a mass hold needs at least one filter", code="hold.no_filter")
    if data.step_sequence is not None and data.route is None:
        raise InvalidInput("a step is named by route and sequence", code="hold.step_needs_route")
    code = await get_hold_code(session, data.hold_code)
    flt = LotFilter(
        fab=data.fab,
        product=data.product,
        route=data.route,
        step_sequence=data.step_sequence,
        tool=data.tool,
    )
    ids = list(
        await session.scalars(
            lot_query(flt)
            .where(Lot.state.in_(HOLDABLE))
            .order_by(Lot.code)  # the lock order of every multi-lot operation
            .with_only_columns(Lot.id)
        )
    )
    held, skipped = [], []
    now = clock.now()
    for lot_id in ids:
        lot = await session.get(Lot, lot_id, with_for_update={"key_share": True})
        assert lot is not None
        if any(h.hold_code_id == code.id for h in await active_holds(session, [lot.id])):
            skipped.append((lot.code, f"already on hold {code.code}"))
            continue
        change = Change(session, lot, await hold_count(session, lot.id))
        place_hold(session, lot, code, data.reason, actor=actor.username, at=now)
        await session.flush()
        await change.record(
            "HOLD",
            actor=actor.username,
            at=now,
            reason=data.reason,
            details={"hold_code": code.code, "mass": True},
        )
        held.append(lot)
    return MassHoldOutcome(held, skipped)


HOLDABLE = (LotState.WAITING, LotState.RUNNING, LotState.ON_HOLD, LotState.IN_TRANSIT)


# --- future actions ---------------------------------------------------------------------------


async def add_future_action(
    session: AsyncSession, code: str, data: AddFutureAction, *, actor: Principal, clock: Clock
) -> FutureAction:
    """Arm a hold at a later step of a lot."""
    lot = await lock_lot(session, code, None)
    rules.require_active(lot_view(lot, 0))
    steps = await route_steps(session, lot.route_version_id)
    target = by_sequence(steps, data.step_sequence)
    current = step_of(steps, lot.current_step_id)
    later = target.sequence > current.sequence or (
        target.sequence == current.sequence and data.kind == FutureActionKind.HOLD_AFTER_TRACK_OUT
    )
    if not later:
        raise RuleViolation(
            "lot.step_passed",
            "a future action must be at a step the lot has not passed",
            status=422,
        )
    action = FutureAction(
        lot_id=lot.id,
        fab_id=lot.fab_id,
        step_id=target.id,
        kind=data.kind,
        hold_code=await get_hold_code(session, data.hold_code),
        reason=data.reason,
        created_by=actor.username,
        created_at=clock.now(),
    )
    session.add(action)
    await session.flush()
    return action


async def cancel_future_action(
    session: AsyncSession, code: str, action_id: int, *, clock: Clock
) -> None:
    """Disarm a future action that has not fired yet."""
    lot = await lock_lot(session, code, None)
    action = await session.get(FutureAction, action_id)
    if action is None or action.lot_id != lot.id or action.done_at is not None:
        raise NotFound("no such open future action on this lot", code="lot.future_action_not_found")
    action.done_at, action.cancelled = clock.now(), True
    await session.flush()
