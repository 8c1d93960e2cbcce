"""Building blocks of the lot transactions (private to ``mes.lots``).

Every transaction locks the lot row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has one writer
at a time), checks the caller's expected version, applies ``rules``, and writes one LotEvent whose
before/after snapshots chain up to the lot's current state (``begin`` … ``Change.record``). Lots
are locked before tools, and several lots in id order, so concurrent transactions cannot
deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, event, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction, selectinload

from mes.db import memo
from mes.durables.models import Carrier, CarrierState
from mes.equipment import service as equipment_service
from mes.equipment.models import Equipment, StateChangeSource
from mes.equipment.states import DEFAULT_SUBSTATE, E10State
from mes.errors import NotFound, RuleViolation, StaleVersion
from mes.kit import wakeups
from mes.kit.lookup import get_by_key
from mes.lots import rules
from mes.lots.models import FutureAction, HoldCode, Lot, LotEvent, LotHold, QTimeWindow
from mes.lots.states import FutureActionKind, LotState, QTimeStatus
from mes.routes.models import RouteVersion, RouteVersionStatus, Step

# --- steps -----------------------------------------------------------------------------------


async def route_steps(session: AsyncSession, route_version_id: int) -> tuple[rules.StepView, ...]:
    """The steps of a route version, as plain views (columns only: no ORM objects to build).

    Only a draft's steps change; once released (pending, active, obsolete) a version's steps
    are fixed for good, so they are read once per database and remembered (mes.db.memo)."""
    key = ("route_steps", route_version_id)
    known: tuple[rules.StepView, ...] | None = memo.recall(session, key)
    if known is not None:
        return known
    steps = await _read_steps(session, route_version_id)
    status = await session.scalar(
        select(RouteVersion.status).where(RouteVersion.id == route_version_id)
    )
    if status is not None and status != RouteVersionStatus.DRAFT:
        memo.remember(session, key, steps)
    return steps


async def _read_steps(session: AsyncSession, route_version_id: int) -> tuple[rules.StepView, ...]:
    rows = await session.execute(
        select(
            Step.id,
            Step.sequence,
            Step.tool_group_id,
            Step.operation,
            Step.recipe_name,
            Step.sampling_rate,
            Step.rework_to_sequence,
            Step.rework_limit,
            Step.qtime_to_sequence,
            Step.qtime_max_s,
            Step.qtime_min_s,
            Step.batch_max,
            Step.setup,
            Step.same_tool_as_sequence,
            Step.process_time_s,
        )
        .where(Step.route_version_id == route_version_id)
        .order_by(Step.sequence)
    )
    return tuple(rules.StepView(**row) for row in rows.mappings().all())


def step_of(steps: Sequence[rules.StepView], step_id: int | None) -> rules.StepView:
    found = next((st for st in steps if st.id == step_id), None)
    if found is None:
        raise RuleViolation("lot.no_step", "the lot is not at a step")
    return found


def by_sequence(steps: Sequence[rules.StepView], sequence: int) -> rules.StepView:
    found = next((st for st in steps if st.sequence == sequence), None)
    if found is None:
        raise NotFound(f"the lot's route has no step {sequence}", code="lot.step_not_found")
    return found


# --- the lot and its event ------------------------------------------------------------------


# The statements every lot transaction runs, built once: building a select and computing its
# cache key cost more CPU than PostgreSQL spends running it (the cache key is memoised on the
# statement object, so a statement made once is keyed once). Values go in as bind parameters.
# FOR NO KEY UPDATE (key_share): see mes.kit.lookup.get_by_key.
_LOCK_LOT = select(Lot).where(Lot.code == bindparam("code")).with_for_update(key_share=True)
_LOCK_LOT_WITH_WAFERS = _LOCK_LOT.options(selectinload(Lot.wafers))
_HOLD_COUNT = (
    select(func.count())
    .select_from(LotHold)
    .where(LotHold.lot_id == bindparam("lot_id"), LotHold.released_at.is_(None))
)


async def lock_lot(
    session: AsyncSession, code: str, version: int | None, *, wafers: bool = False
) -> Lot:
    found = await session.scalars(_LOCK_LOT_WITH_WAFERS if wafers else _LOCK_LOT, {"code": code})
    lot = found.unique().one_or_none()
    if lot is None:
        raise NotFound(f"lot {code!r} does not exist", code="lot.not_found")
    if version is not None and version != lot.version:
        raise StaleVersion(
            f"lot {code} is at version {lot.version}, not {version}",
            code="lot.stale_version",
            current_version=lot.version,
        )
    return lot


async def hold_count(session: AsyncSession, lot_id: int) -> int:
    return int(await session.scalar(_HOLD_COUNT, {"lot_id": lot_id}) or 0)


def lot_view(lot: Lot, holds: int) -> rules.LotView:
    return rules.LotView(
        code=lot.code,
        state=lot.state,
        step_id=lot.current_step_id,
        equipment_id=lot.equipment_id,
        wafer_count=lot.wafer_count,
        active_holds=holds,
        fab_id=lot.fab_id,
        lot_type=lot.lot_type,
    )


def snapshot(lot: Lot, holds: int) -> dict[str, Any]:
    return {
        "state": lot.state.value,
        "step_id": lot.current_step_id,
        "equipment_id": lot.equipment_id,
        "wafer_count": lot.wafer_count,
        "fab_id": lot.fab_id,
        "priority_class": lot.priority_class.value,
        "active_holds": holds,
    }


class Change:
    """Captures a lot's state before a transaction and writes the LotEvent after it."""

    def __init__(self, session: AsyncSession, lot: Lot, holds: int) -> None:
        self.session, self.lot, self.holds = session, lot, holds
        self.before = snapshot(lot, holds)

    async def record(
        self,
        event_type: str,
        *,
        actor: str,
        at: datetime,
        reason: str | None = None,
        step_id: int | None = None,
        equipment_id: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        holds = self.holds
        if _holds_may_have_changed(self.session, self.lot.id):
            holds = await hold_count(self.session, self.lot.id)
        self.lot.state = rules.state_with_holds(self.lot.state, holds)
        after = snapshot(self.lot, holds)
        self.session.add(
            LotEvent(
                lot_id=self.lot.id,
                fab_id=self.lot.fab_id,
                event_type=event_type,
                occurred_at=at,
                actor=actor,
                step_id=step_id if step_id is not None else self.lot.current_step_id,
                equipment_id=equipment_id,
                reason=reason,
                before=self.before,
                after={**after, **(details or {})},
            )
        )
        if after["state"] == LotState.WAITING.value or (
            (self.before or {}).get("equipment_id") is not None and after["equipment_id"] is None
        ):
            # A lot that can run now, or a tool it left: the fab's dispatcher should look.
            wakeups.request(self.session, self.lot.fab_id)
        await self.session.flush()


# Lot ids whose holds a flush of the session wrote (see _holds_may_have_changed).
_HOLDS_TOUCHED = "mes.lots.holds_touched"


def _note_hold_writes(session: Session, _context: UOWTransaction) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, LotHold):
            touched = session.info.setdefault(_HOLDS_TOUCHED, set())
            touched.add(obj.lot_id)
            # A hold handed to another lot (merge) changed the count of the lot it left too.
            touched.update(inspect(obj).attrs.lot_id.history.deleted)


# Registered on import: whoever uses Change (HTTP, adapters, dispatcher, CLI, tests) has it.
event.listen(Session, "after_flush", _note_hold_writes)


def _holds_may_have_changed(session: AsyncSession, lot_id: int) -> bool:
    """Whether this transaction wrote holds of the lot (or may have). The count taken at
    ``begin`` stands otherwise: every writer of a lot's holds holds the lot's lock, as we do,
    so re-counting them for the event's after-snapshot would be a round trip for nothing."""
    touched = session.info.get(_HOLDS_TOUCHED, ())
    if lot_id in touched or None in touched:
        return True
    sync = session.sync_session
    return any(isinstance(o, LotHold) for o in (*sync.new, *sync.dirty, *sync.deleted))


async def begin(
    session: AsyncSession, code: str, version: int | None, *, wafers: bool = False
) -> tuple[Lot, Change]:
    lot = await lock_lot(session, code, version, wafers=wafers)
    return lot, Change(session, lot, await hold_count(session, lot.id))


# --- holds, carriers, tools -----------------------------------------------------------------


async def get_hold_code(session: AsyncSession, code: str) -> HoldCode:
    return await get_by_key(
        session, HoldCode, HoldCode.code, code, code="hold.unknown_code", what="hold code"
    )


def place_hold(
    session: AsyncSession, lot: Lot, code: HoldCode, reason: str, *, actor: str, at: datetime
) -> LotHold:
    hold = LotHold(
        lot_id=lot.id,
        fab_id=lot.fab_id,
        hold_code=code,
        step_id=lot.current_step_id,
        reason=reason,
        placed_by=actor,
        placed_at=at,
    )
    session.add(hold)
    return hold


async def release_carrier(session: AsyncSession, lot: Lot) -> None:
    # Loaded explicitly: a lazy load of ``lot.carrier`` cannot run in an async session.
    if lot.carrier_id is not None:
        carrier = await session.get(Carrier, lot.carrier_id)
        assert carrier is not None  # the FK guarantees it
        carrier.state = CarrierState.DIRTY
        carrier.uses_since_clean += 1
    lot.carrier_id = None


async def close_holds(
    session: AsyncSession, lot: Lot, *, actor: str, at: datetime, reason: str
) -> list[int]:
    """Close the active holds of a lot that ends (terminated, scrapped, merged away): an ended
    lot keeps no open holds, and the event that ends it lists the ones it closed."""
    holds = list(
        await session.scalars(
            select(LotHold).where(LotHold.lot_id == lot.id, LotHold.released_at.is_(None))
        )
    )
    for h in holds:
        h.released_at, h.released_by, h.release_reason = at, actor, reason
    return sorted(h.id for h in holds)


def finish(lot: Lot, state: LotState, at: datetime) -> None:
    lot.state = state
    lot.ended_at = at
    lot.equipment_id = None
    lot.tracked_in_at = None


_LOTS_ON_TOOL = (
    select(Step.id, Step.recipe_name)
    .join(Lot, Lot.current_step_id == Step.id)
    .where(Lot.equipment_id == bindparam("tool_id"))
)


async def lots_on_tool(session: AsyncSession, tool_id: int) -> list[tuple[int, str | None]]:
    rows = await session.execute(_LOTS_ON_TOOL, {"tool_id": tool_id})
    return [(step_id, recipe) for step_id, recipe in rows.all()]


async def lots_running_on(session: AsyncSession, tool_id: int) -> int:
    """How many lots are on the tool (installed as ``equipment.wip``'s counter)."""
    count = await session.scalar(
        select(func.count()).select_from(Lot).where(Lot.equipment_id == tool_id)
    )
    return int(count or 0)


def tool_state(
    session: AsyncSession, tool: Equipment, state: E10State, *, actor: str, at: datetime
) -> None:
    """The automatic E10 transitions of track-in/out (SBY→PRD, PRD→SBY), recorded by the
    equipment service like every other state change of a tool. The caller holds the tool."""
    equipment_service.record_state(
        session,
        tool,
        state,
        DEFAULT_SUBSTATE[state],
        actor=actor,
        at=at,
        recorded_at=at,
        source=StateChangeSource.SYSTEM,
        reason="lot track-in" if state == E10State.PRD else "last lot tracked out",
    )


# --- future actions and Q-time windows ------------------------------------------------------


_OPEN_ACTIONS = (
    select(FutureAction)
    .options(selectinload(FutureAction.hold_code))
    .where(FutureAction.lot_id == bindparam("lot_id"), FutureAction.done_at.is_(None))
)


async def open_actions(session: AsyncSession, lot_id: int) -> list[FutureAction]:
    return list(await session.scalars(_OPEN_ACTIONS, {"lot_id": lot_id}))


ARRIVAL = FutureActionKind.HOLD_ON_ARRIVAL
AFTER_TRACK_OUT = FutureActionKind.HOLD_AFTER_TRACK_OUT


def fire(
    session: AsyncSession,
    lot: Lot,
    actions: Sequence[FutureAction],
    *,
    kind: FutureActionKind,
    step_id: int,
    at: datetime,
) -> int:
    """Place the holds of the armed actions of ``kind`` at ``step_id``; how many."""
    placed = 0
    for action in actions:
        if action.kind == kind and action.step_id == step_id and action.done_at is None:
            place_hold(
                session, lot, action.hold_code, action.reason, actor=action.created_by, at=at
            )
            action.done_at = at
            placed += 1
    return placed


def fire_passed_over(
    session: AsyncSession,
    lot: Lot,
    actions: Sequence[FutureAction],
    step_ids: Sequence[int],
    *,
    at: datetime,
) -> list[int]:
    """Fire every action armed on steps the lot passes over without running them (sampling
    skipped them, or a jump went past): their holds land where the lot goes next. Dropping
    them would leave an engineer's hold silently unmet and block shipping for good; firing
    early stops the lot near where the engineer asked. Returns the ids fired."""
    passed = set(step_ids)
    fired = []
    for action in actions:
        if action.step_id in passed and action.done_at is None:
            place_hold(
                session, lot, action.hold_code, action.reason, actor=action.created_by, at=at
            )
            action.done_at = at
            fired.append(action.id)
    return fired


async def arrive(session: AsyncSession, lot: Lot, step: rules.StepView, *, at: datetime) -> None:
    """Fire the hold-on-arrival actions armed for ``step``."""
    actions = await open_actions(session, lot.id)
    fire(session, lot, actions, kind=FutureActionKind.HOLD_ON_ARRIVAL, step_id=step.id, at=at)


async def void_windows(
    session: AsyncSession, lot: Lot, to_step_ids: Sequence[int] | None, at: datetime
) -> None:
    """Void the lot's open Q-time windows (to these closing steps only, if given). Row by row
    through the ORM, not one bulk UPDATE, so the audit trail records each window closed."""
    if to_step_ids is not None and not to_step_ids:
        return
    stmt = select(QTimeWindow).where(
        QTimeWindow.lot_id == lot.id, QTimeWindow.status == QTimeStatus.OPEN
    )
    if to_step_ids is not None:
        stmt = stmt.where(QTimeWindow.to_step_id.in_(to_step_ids))
    for window in await session.scalars(stmt):
        window.status, window.closed_at = QTimeStatus.VOID, at


async def void_windows_sent_to(
    session: AsyncSession,
    lot: Lot,
    steps: Sequence[rules.StepView],
    target_sequence: int,
    at: datetime,
) -> list[int]:
    """Void the open windows that a move to ``target_sequence`` (rework or jump) makes
    meaningless, keeping those whose end step is still ahead; returns the voided ids."""
    sequence_of = {st.id: st.sequence for st in steps}
    open_windows = list(
        await session.scalars(
            select(QTimeWindow).where(
                QTimeWindow.lot_id == lot.id, QTimeWindow.status == QTimeStatus.OPEN
            )
        )
    )
    voided = set(
        rules.windows_made_meaningless(
            target_sequence,
            [
                (w.id, sequence_of.get(w.from_step_id, 0), sequence_of.get(w.to_step_id, 0))
                for w in open_windows
            ],
        )
    )
    for window in open_windows:
        if window.id in voided:
            window.status, window.closed_at = QTimeStatus.VOID, at
    return sorted(voided)
