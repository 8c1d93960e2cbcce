"""Lot control by the planners: jump to another step, change priority or lot type, terminate."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth.service import Principal
from mes.clock import Clock
from mes.errors import RuleViolation
from mes.lots import rules, type_rules
from mes.lots._core import (
    arrive,
    begin,
    by_sequence,
    close_holds,
    finish,
    fire_passed_over,
    lot_view,
    open_actions,
    release_carrier,
    route_steps,
    void_windows_sent_to,
)
from mes.lots.commands import ChangeLotType, ChangePriority, Jump, Terminate
from mes.lots.models import Lot
from mes.lots.states import LotState


async def jump(
    session: AsyncSession, code: str, data: Jump, *, actor: Principal, clock: Clock
) -> Lot:
    """Move a lot to another step of its route (skip ahead or go back)."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    view = lot_view(lot, change.holds)
    rules.require_active(view)
    if lot.state in (LotState.RUNNING, LotState.IN_TRANSIT):
        raise RuleViolation("lot.not_movable", f"lot {code} is {lot.state.value}")
    steps = await route_steps(session, lot.route_version_id)
    target = by_sequence(steps, data.to_sequence)
    if target.id == lot.current_step_id:
        raise RuleViolation(
            "lot.already_there", f"lot {code} is at step {data.to_sequence}", status=422
        )
    # Only the windows the jump makes meaningless are voided: one whose end step is still
    # ahead keeps its deadline (a jump is no way around a Q-time).
    voided = await void_windows_sent_to(session, lot, steps, target.sequence, now)
    here = next(st for st in steps if st.id == lot.current_step_id)
    # Forward past steps (this one included: it will not run now) carries their future actions.
    passed = [st.id for st in steps if here.sequence <= st.sequence < target.sequence]
    carried = fire_passed_over(session, lot, await open_actions(session, lot.id), passed, at=now)
    lot.current_step_id = target.id
    lot.step_entered_at = now
    lot.route_completed_at = None  # sent back into its route: the end is ahead again
    await arrive(session, lot, target, at=now)
    await session.flush()
    await change.record(
        "JUMP",
        actor=actor.username,
        at=now,
        reason=data.reason,
        step_id=target.id,
        details={
            **({"qtime_voided": voided} if voided else {}),
            **({"future_actions_carried": carried} if carried else {}),
        }
        or None,
    )
    return lot


async def change_priority(
    session: AsyncSession, code: str, data: ChangePriority, *, actor: Principal, clock: Clock
) -> Lot:
    """Change a lot's priority class (and due date)."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    rules.require_active(lot_view(lot, change.holds))
    lot.priority_class = data.priority_class
    if data.due_at is not None:
        lot.due_at = data.due_at
    await change.record("PRIORITY", actor=actor.username, at=now, reason=data.reason)
    return lot


async def change_lot_type(
    session: AsyncSession, code: str, data: ChangeLotType, *, actor: Principal, clock: Clock
) -> Lot:
    """Change what a lot is for (production, engineering, monitor, dummy, rework). Not while
    it runs: its run was admitted under the type it had."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    rules.require_active(lot_view(lot, change.holds))
    if lot.state == LotState.RUNNING:
        raise RuleViolation("lot.running", f"lot {code} is running; track it out first")
    type_rules.check_type_change(code, lot.lot_type, data.lot_type)
    before = lot.lot_type
    lot.lot_type = data.lot_type
    await change.record(
        "LOT_TYPE",
        actor=actor.username,
        at=now,
        reason=data.reason,
        details={"lot_type_before": before.value, "lot_type": data.lot_type.value},
    )
    return lot


async def terminate(
    session: AsyncSession, code: str, data: Terminate, *, actor: Principal, clock: Clock
) -> Lot:
    """End a lot before its route is done."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    rules.require_active(lot_view(lot, change.holds))
    if lot.state == LotState.RUNNING:
        raise RuleViolation("lot.running", f"lot {code} is running; track it out first")
    if lot.state == LotState.IN_TRANSIT:
        raise RuleViolation("lot.in_transit", f"lot {code} is travelling")
    closed = await close_holds(
        session, lot, actor=actor.username, at=now, reason=f"lot terminated: {data.reason}"
    )
    finish(lot, LotState.TERMINATED, now)
    await release_carrier(session, lot)
    await session.flush()
    await change.record(
        "TERMINATE",
        actor=actor.username,
        at=now,
        reason=data.reason,
        details={"closed_holds": closed},
    )
    return lot
