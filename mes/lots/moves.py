"""Moving lots on tools: track-in (the recipe to run), track-out (next step, rework or
completion) and taking a lot off its tool when its job ends without a run."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from mes.auth.models import AccountKind, Certification
from mes.auth.service import Principal
from mes.clock import Clock
from mes.durables import service as durables_service
from mes.equipment.models import Equipment
from mes.equipment.states import E10State
from mes.errors import Forbidden, NotFound, RuleViolation
from mes.lots import checks, qtime_gate, rules
from mes.lots._core import (
    AFTER_TRACK_OUT,
    ARRIVAL,
    begin,
    by_sequence,
    finish,
    fire,
    fire_passed_over,
    get_hold_code,
    lot_view,
    lots_on_tool,
    open_actions,
    place_hold,
    release_carrier,
    route_steps,
    step_of,
    tool_state,
    void_windows,
    void_windows_sent_to,
)
from mes.lots.admission import ENGINEERING_UP, check_batch, engineering_up, recipe_to_run
from mes.lots.chambers import UP
from mes.lots.commands import TrackIn, TrackOut, TrackOutcome
from mes.lots.models import HoldCode, Lot, LotEvent, QTimeWindow, ReworkCount
from mes.lots.states import LotState, QTimeStatus
from mes.recipes.models import RecipeVersion

# --- track-in --------------------------------------------------------------------------------


# Built once (see mes.lots._core: building a statement costs more than running it).
# The chambers come with the tool (selectinload was a second round trip on every track-in);
# the row lock stays on the tool's row alone, as before.
_LOCK_TOOL = (
    select(Equipment)
    .where(Equipment.code == bindparam("code"))
    .options(joinedload(Equipment.chambers))
    .with_for_update(key_share=True, of=Equipment)
)
_CERTIFIED = select(Certification.id).where(
    Certification.user_id == bindparam("user_id"),
    Certification.tool_group_id == bindparam("tool_group_id"),
    or_(Certification.expires_at.is_(None), Certification.expires_at > bindparam("now")),
)
_WINDOWS_TO_STEP = select(QTimeWindow).where(
    QTimeWindow.lot_id == bindparam("lot_id"),
    QTimeWindow.to_step_id == bindparam("step_id"),
    QTimeWindow.status == QTimeStatus.OPEN,
)


async def _lock_tool(session: AsyncSession, code: str) -> Equipment:
    tool = (await session.scalars(_LOCK_TOOL, {"code": code})).unique().one_or_none()
    if tool is None:
        raise NotFound(f"tool {code!r} does not exist", code="tool.not_found")
    return tool


def _tool_view(
    tool: Equipment, up: tuple[E10State, ...] = (E10State.SBY, E10State.PRD)
) -> rules.ToolView:
    chambers_up = sum(1 for c in tool.chambers if c.e10_state in up) if tool.chambers else None
    return rules.ToolView(
        id=tool.id,
        code=tool.code,
        tool_group_id=tool.tool_group_id,
        fab_id=tool.fab_id,
        e10_state=tool.e10_state,
        max_lots=tool.max_lots,
        chambers_up=chambers_up,
    )


async def _check_certified(
    session: AsyncSession, principal: Principal, tool_group_id: int, now: datetime
) -> None:
    if principal.kind != AccountKind.HUMAN:
        return  # machines act for the tool; people are certified
    certified = await session.scalar(
        _CERTIFIED, {"user_id": principal.user_id, "tool_group_id": tool_group_id, "now": now}
    )
    if certified is None:
        raise Forbidden(
            f"{principal.username} is not certified for this tool group",
            code="user.not_certified",
        )


async def _tool_that_ran(session: AsyncSession, lot: Lot, step: rules.StepView) -> int | None:
    """The tool the lot last tracked in on at ``step`` (None: it has not run it)."""
    return await session.scalar(
        select(LotEvent.equipment_id)
        .where(
            LotEvent.lot_id == lot.id,
            LotEvent.step_id == step.id,
            LotEvent.event_type == "TRACK_IN",
        )
        .order_by(LotEvent.occurred_at.desc(), LotEvent.id.desc())
        .limit(1)
    )


async def track_in(
    session: AsyncSession, code: str, data: TrackIn, *, actor: Principal, clock: Clock
) -> tuple[Lot, Equipment, RecipeVersion, list[str]]:
    """Put a waiting lot on a tool and say which recipe version to run (and, on a cluster
    tool, in which chambers)."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    steps = await route_steps(session, lot.route_version_id)
    rules.require_waiting(lot_view(lot, change.holds))
    step = step_of(steps, lot.current_step_id)
    tool = await _lock_tool(session, data.tool)
    view = _tool_view(tool, ENGINEERING_UP if engineering_up(lot, data) else UP)
    on_tool = await lots_on_tool(session, tool.id)
    rules.check_track_in(
        lot_view(lot, change.holds),
        step,
        view,
        lots_on_tool=on_tool,
        expected_step_sequence=data.step_sequence,
    )
    if step.same_tool_as_sequence is not None:
        earlier = by_sequence(steps, step.same_tool_as_sequence)
        rules.check_dedication(step, _tool_view(tool), await _tool_that_ran(session, lot, earlier))
    # Q-time: a window this step closes that has already run out holds the lot instead.
    # Only a step some window can end at has windows to read (most steps: a round trip saved).
    windows = (
        list(await session.scalars(_WINDOWS_TO_STEP, {"lot_id": lot.id, "step_id": step.id}))
        if rules.closes_qtime_window(steps, step)
        else []
    )
    expired = [w for w in windows if rules.qtime_expired(w.deadline_at, now)]
    too_early = [w for w in windows if rules.qtime_too_early(w.earliest_at, now)]
    if too_early and not expired:
        wait_until = max(w.earliest_at for w in too_early if w.earliest_at is not None)
        raise RuleViolation(
            "lot.qtime_min_not_reached",
            f"lot {code} may not start step {step.sequence} before {wait_until.isoformat()} "
            "(minimum Q-time)",
        )
    if expired:
        for window in expired:
            window.status, window.closed_at = QTimeStatus.EXPIRED, now
        place_hold(
            session,
            lot,
            await get_hold_code(session, "QTIME_EXPIRED"),
            f"Q-time to step {step.sequence} expired at {expired[0].deadline_at.isoformat()}",
            actor="system",
            at=now,
        )
        await session.flush()
        await change.record("QTIME_EXPIRED", actor=actor.username, at=now)
        raise RuleViolation(
            "lot.qtime_expired",
            f"the Q-time window of lot {code} to step {step.sequence} expired; the lot is on hold",
            keep_changes=True,
        )
    recipe, chambers, engineering = await recipe_to_run(session, lot, step, tool, now, data)
    if on_tool:
        await check_batch(session, step, tool, recipe)
    await _check_certified(session, actor, step.tool_group_id, now)
    gated = await qtime_gate.check(
        session,
        lot,
        steps,
        step,
        actor=actor,
        override=data.qtime_gate_override,
        inside_window=bool(windows),
        now=now,
    )
    # The equipment's side: no PM due, the recipe's reticle at the tool and under its
    # limit; counts the wafers on the tool and the reticle's uses.
    reticle = await durables_service.admit_lot(
        session, tool, recipe_body=recipe.body, wafers=lot.wafer_count, now=now
    )
    for window in windows:
        window.status, window.closed_at = QTimeStatus.MET, now
    if tool.e10_state == E10State.SBY:
        tool_state(session, tool, E10State.PRD, actor=actor.username, at=now)
    lot.state = LotState.RUNNING
    lot.equipment_id = tool.id
    lot.tracked_in_at = now
    setup = rules.next_setup_count(tool.current_setup, tool.setup_lots, step.setup)
    if setup != (tool.current_setup, tool.setup_lots):
        tool.current_setup, tool.setup_lots = setup
    await change.record(
        "TRACK_IN",
        actor=actor.username,
        at=now,
        equipment_id=tool.id,
        details={
            "recipe": recipe.recipe.name,
            "recipe_version": recipe.version,
            # What was counted, so a run that never happens can give it back (abort_run).
            "counted_wafers": lot.wafer_count,
            "reticle": reticle.code if reticle is not None else None,
            # The chambers the lot runs in (cluster tools), each qualified for the version.
            **({"chambers": chambers} if chambers else {}),
            # An engineering lot's signed run on an ENG tool or an unreleased version.
            **({"engineering": engineering} if engineering else {}),
            # The Q-time gate's verdict where this step opens a window (and any override).
            **({"qtime_gate": gated} if gated is not None else {}),
        },
    )
    return lot, tool, recipe, chambers


# --- track-out and abort --------------------------------------------------------------------


async def track_out(
    session: AsyncSession, code: str, data: TrackOut, *, actor: Principal, clock: Clock
) -> Lot:
    """Take a lot off its tool and move it on: next step, rework, or completion."""
    now = clock.now()
    lot, change = await begin(session, code, data.version)
    if lot.state != LotState.RUNNING or lot.equipment_id is None:
        raise RuleViolation("lot.not_running", f"lot {code} is not on a tool")
    steps = await route_steps(session, lot.route_version_id)
    step = step_of(steps, lot.current_step_id)
    processed = lot.wafer_count if data.wafers_processed is None else data.wafers_processed
    rules.check_wafers_processed(processed, lot.wafer_count)
    partial = rules.partial_run_reason(processed, lot.wafer_count, data.not_processed)
    # FOR NO KEY UPDATE (key_share without read): concurrent writers of the tool's counters
    # and state queue behind us, while inserts referencing the tool do not.
    tool = await session.get(Equipment, lot.equipment_id, with_for_update={"key_share": True})
    assert tool is not None  # the FK guarantees it

    # Read and decide everything first: a query after a change would flush it early, and one
    # UPDATE of the lot (one audit record) per move is what we want.
    actions = await open_actions(session, lot.id)
    # This lot is one of them; the tool stays productive if it runs others too.
    tool_stays_busy = len(await lots_on_tool(session, tool.id)) > 1
    details: dict[str, Any] = {
        "outcome": data.outcome.value,
        "wafers_processed": processed,
        # Every wafer of the run accounted for (processed, aborted, skipped, not reported).
        "wafer_outcomes": rules.wafer_outcomes(processed, lot.wafer_count, data.not_processed),
        "measurements": [m.as_json() for m in data.measurements],
    }
    # Data collection and SPC (registered by the quality domain): they may refuse the whole
    # track-out, or hold the lot at this step.
    quality_holds = await checks.run(
        session,
        checks.TrackOutFacts(
            lot=lot,
            step=step,
            tool=tool,
            data=data,
            actor=actor.username,
            at=now,
        ),
    )
    quality_codes = [await get_hold_code(session, h.hold_code) for h in quality_holds]
    if quality_holds:
        details["quality_holds"] = [
            {"hold_code": h.hold_code, "reason": h.reason} for h in quality_holds
        ]
    rework_counter: ReworkCount | None = None
    decision: rules.ReworkDecision | None = None
    limit_code: HoldCode | None = None
    following: rules.StepView | None = None
    skipped: list[rules.StepView] = []
    partial_code = await get_hold_code(session, "PARTIAL_RUN") if partial else None
    if partial:
        details["usage_given_back"] = await _give_back_usage(session, lot, tool, processed)
        # Never "pass" a step some wafers did not see: the lot stays at it, held, and an
        # engineer decides (re-run, split the unprocessed wafers off, scrap, jump on).
        details["partial_run"] = [list(pair) for pair in data.not_processed]
    elif quality_holds:
        # Measured out of spec or out of control: it waits at the step for an engineer.
        details["stays_at_step"] = True
    elif data.outcome == TrackOutcome.REWORK:
        rework_counter = (
            await session.scalars(
                select(ReworkCount).where(
                    ReworkCount.lot_id == lot.id, ReworkCount.step_id == step.id
                )
            )
        ).one_or_none()
        decision = rules.rework(step, rework_counter.count if rework_counter else 0)
        details["rework_count"] = decision.count
        if decision.target_sequence is None:
            limit_code = await get_hold_code(session, "REWORK_LIMIT")
        else:
            # Sent back to or before a window's start step: that window opens anew later.
            voided = await void_windows_sent_to(session, lot, steps, decision.target_sequence, now)
            if voided:
                details["qtime_voided"] = voided
    else:
        following, skipped = rules.next_step(steps, step.sequence, lot.code)
        details["skipped"] = [sk.sequence for sk in skipped]
        await void_windows(session, lot, [sk.id for sk in skipped], now)

    lot.equipment_id = None
    lot.tracked_in_at = None
    lot.state = LotState.WAITING
    for quality_hold, quality_code in zip(quality_holds, quality_codes, strict=True):
        place_hold(session, lot, quality_code, quality_hold.reason, actor="quality", at=now)
    if partial_code is not None and partial is not None:
        place_hold(session, lot, partial_code, partial, actor="system", at=now)
    elif quality_holds:
        pass  # held above; stays at the step
    elif decision is not None:
        if rework_counter is None:
            session.add(ReworkCount(lot_id=lot.id, step_id=step.id, count=decision.count))
        else:
            rework_counter.count = decision.count
        if decision.target_sequence is None:
            assert limit_code is not None
            reason = f"rework limit {step.rework_limit} of step {step.sequence} reached"
            place_hold(session, lot, limit_code, reason, actor="system", at=now)
        else:
            target = by_sequence(steps, decision.target_sequence)
            lot.current_step_id, lot.step_entered_at = target.id, now
            fire(session, lot, actions, kind=ARRIVAL, step_id=target.id, at=now)
    else:
        if rules.opens_qtime_window(step):
            assert step.qtime_to_sequence is not None
            assert step.qtime_max_s is not None
            closing = by_sequence(steps, step.qtime_to_sequence)
            session.add(
                QTimeWindow(
                    lot_id=lot.id,
                    fab_id=lot.fab_id,
                    from_step_id=step.id,
                    to_step_id=closing.id,
                    opened_at=now,
                    deadline_at=now + timedelta(seconds=step.qtime_max_s),
                    earliest_at=(
                        now + timedelta(seconds=step.qtime_min_s)
                        if step.qtime_min_s is not None
                        else None
                    ),
                    # Sampling skips its closing step for this lot: the window never applies.
                    status=QTimeStatus.VOID if closing in skipped else QTimeStatus.OPEN,
                    closed_at=now if closing in skipped else None,
                )
            )
        armed = fire(session, lot, actions, kind=AFTER_TRACK_OUT, step_id=step.id, at=now)
        carried = fire_passed_over(session, lot, actions, [sk.id for sk in skipped], at=now)
        if carried:
            details["future_actions_carried"] = carried
            armed += len(carried)
        if following is None and change.holds + armed > 0:
            # Held material never completes: it waits OnHold at its last step, and the release
            # of its last hold completes it (holds.release).
            lot.route_completed_at = now
            details["held_at_route_end"] = True
        elif following is None:
            finish(lot, LotState.COMPLETED, now)
            await release_carrier(session, lot)
        else:
            lot.current_step_id, lot.step_entered_at = following.id, now
            fire(session, lot, actions, kind=ARRIVAL, step_id=following.id, at=now)
    if not tool_stays_busy and tool.e10_state == E10State.PRD:
        tool_state(session, tool, E10State.SBY, actor=actor.username, at=now)
    await change.record(
        "TRACK_OUT",
        actor=actor.username,
        at=now,
        step_id=step.id,
        equipment_id=tool.id,
        details=details,
    )
    return lot


async def abort_run(
    session: AsyncSession,
    code: str,
    *,
    event_type: str,
    reason: str,
    hold: bool,
    actor: Principal,
    clock: Clock,
    details: dict[str, Any] | None = None,
    wafers_processed: int = 0,
    reopen_qtime: bool = False,
    version: int | None = None,
) -> Lot:
    """Take a running lot off its tool without moving it on: back to Waiting at the same step
    (its job was aborted, lost or refused by the tool), optionally on hold ``EQUIPMENT``.
    ``reopen_qtime``: the track-in is undone as if it never happened (cancel track-in), so the
    Q-time windows it met are open again, with their deadlines."""
    now = clock.now()
    lot, change = await begin(session, code, version)
    if lot.state != LotState.RUNNING or lot.equipment_id is None:
        raise RuleViolation("lot.not_running", f"lot {code} is not on a tool")
    tool = await session.get(Equipment, lot.equipment_id, with_for_update={"key_share": True})
    assert tool is not None  # the FK guarantees it
    hold_code = await get_hold_code(session, "EQUIPMENT") if hold else None
    tool_stays_busy = len(await lots_on_tool(session, tool.id)) > 1
    # Usage was counted at track-in; the wafers the tool never processed give theirs back, so
    # refused and lost jobs leave no phantom wear on the tool or the reticle.
    reversed_wafers = await _give_back_usage(session, lot, tool, wafers_processed)
    reopened = await _reopen_windows(session, lot) if reopen_qtime else []
    lot.equipment_id = None
    lot.tracked_in_at = None
    lot.state = LotState.WAITING
    if hold_code is not None:
        place_hold(session, lot, hold_code, reason, actor=actor.username, at=now)
    if not tool_stays_busy and tool.e10_state == E10State.PRD:
        tool_state(session, tool, E10State.SBY, actor=actor.username, at=now)
    await session.flush()
    await change.record(
        event_type,
        actor=actor.username,
        at=now,
        reason=reason,
        equipment_id=tool.id,
        details={
            **(details or {}),
            "usage_given_back": reversed_wafers,
            **({"qtime_reopened": reopened} if reopened else {}),
        },
    )
    return lot


async def _reopen_windows(session: AsyncSession, lot: Lot) -> list[int]:
    """The windows the lot's track-in met at its step, open again (deadline unchanged: the
    watch holds the lot if it has passed meanwhile)."""
    met = list(
        await session.scalars(
            select(QTimeWindow).where(
                QTimeWindow.lot_id == lot.id,
                QTimeWindow.to_step_id == lot.current_step_id,
                QTimeWindow.status == QTimeStatus.MET,
                QTimeWindow.closed_at == lot.tracked_in_at,
            )
        )
    )
    for window in met:
        window.status, window.closed_at = QTimeStatus.OPEN, None
    return [w.id for w in met]


async def _give_back_usage(
    session: AsyncSession, lot: Lot, tool: Equipment, wafers_processed: int
) -> int:
    tracked_in = await session.scalar(
        select(LotEvent.after)
        .where(LotEvent.lot_id == lot.id, LotEvent.event_type == "TRACK_IN")
        .order_by(LotEvent.occurred_at.desc(), LotEvent.id.desc())
        .limit(1)
    )
    counted = int((tracked_in or {}).get("counted_wafers", 0))
    unused = max(0, counted - max(0, wafers_processed))
    if unused:
        tool.wafers_processed = max(0, tool.wafers_processed - unused)
        reticle = (tracked_in or {}).get("reticle")
        if reticle:
            await durables_service.give_back_uses(session, str(reticle), unused)
    return unused
