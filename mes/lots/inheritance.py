"""What a lot's plans and history pass on when its wafers move between lots.

A split child is the same material at the same point of its route: it carries the parent's
open holds, Q-time windows, armed future actions and rework counts (a child must not get a fresh
rework budget or escape a hold armed for later). A merge keeps the union of both lots' plans, and
where both are in the same Q-time window the tighter deadline.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.lots._core import place_hold
from mes.lots.models import FutureAction, Lot, LotHold, QTimeWindow, ReworkCount
from mes.lots.queries import active_holds
from mes.lots.states import QTimeStatus


async def _open_windows(session: AsyncSession, lot_id: int) -> list[QTimeWindow]:
    return list(
        await session.scalars(
            select(QTimeWindow).where(
                QTimeWindow.lot_id == lot_id, QTimeWindow.status == QTimeStatus.OPEN
            )
        )
    )


async def _open_actions(session: AsyncSession, lot_id: int) -> list[FutureAction]:
    return list(
        await session.scalars(
            select(FutureAction).where(
                FutureAction.lot_id == lot_id, FutureAction.done_at.is_(None)
            )
        )
    )


async def _rework_counts(session: AsyncSession, lot_id: int) -> dict[int, ReworkCount]:
    rows = await session.scalars(select(ReworkCount).where(ReworkCount.lot_id == lot_id))
    return {row.step_id: row for row in rows}


async def copy_to_child(session: AsyncSession, parent: Lot, child: Lot) -> None:
    for h in await active_holds(session, [parent.id]):
        place_hold(session, child, h.hold_code, h.reason, actor=h.placed_by, at=h.placed_at)
    for window in await _open_windows(session, parent.id):
        session.add(
            QTimeWindow(
                lot_id=child.id,
                fab_id=child.fab_id,
                from_step_id=window.from_step_id,
                to_step_id=window.to_step_id,
                opened_at=window.opened_at,
                deadline_at=window.deadline_at,
                status=QTimeStatus.OPEN,
            )
        )
    for action in await _open_actions(session, parent.id):
        session.add(
            FutureAction(
                lot_id=child.id,
                fab_id=child.fab_id,
                step_id=action.step_id,
                kind=action.kind,
                hold_code_id=action.hold_code_id,
                reason=action.reason,
                created_by=action.created_by,
                created_at=action.created_at,
            )
        )
    for step_id, row in (await _rework_counts(session, parent.id)).items():
        session.add(ReworkCount(lot_id=child.id, step_id=step_id, count=row.count))


async def move_to_target(session: AsyncSession, source: Lot, target: Lot, *, at: datetime) -> None:
    """Give ``target`` everything ``source`` still had open; ``source`` ends."""
    # Through the ORM, not a bulk UPDATE, so the audit trail sees each row change lots.
    for hold in list(
        await session.scalars(
            select(LotHold).where(LotHold.lot_id == source.id, LotHold.released_at.is_(None))
        )
    ):
        hold.lot_id = target.id
    theirs = {w.to_step_id: w for w in await _open_windows(session, target.id)}
    for window in await _open_windows(session, source.id):
        same = theirs.get(window.to_step_id)
        if same is None:
            window.lot_id, window.fab_id = target.id, target.fab_id
            continue
        # Both lots must reach that step in time: the merged lot keeps the tighter deadline.
        if window.deadline_at < same.deadline_at:
            same.deadline_at, same.opened_at = window.deadline_at, window.opened_at
        window.status, window.closed_at = QTimeStatus.VOID, at
    armed = {(a.step_id, a.kind, a.hold_code_id) for a in await _open_actions(session, target.id)}
    for action in await _open_actions(session, source.id):
        if (action.step_id, action.kind, action.hold_code_id) in armed:
            action.cancelled = True  # the target has the same one armed
            action.done_at = at
        else:
            action.lot_id, action.fab_id = target.id, target.fab_id
    counts = await _rework_counts(session, target.id)
    for step_id, row in (await _rework_counts(session, source.id)).items():
        mine = counts.get(step_id)
        if mine is None:
            session.add(ReworkCount(lot_id=target.id, step_id=step_id, count=row.count))
        else:
            mine.count = max(mine.count, row.count)
