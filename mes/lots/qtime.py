"""Q-time windows watched over time: a lot whose window runs out while it waits is held at once
(``QTIME_EXPIRED``), not only when someone tries to track it in; and the windows about to run
out are listed so the line can hurry those lots.

``expire_windows`` is one transaction (the tests call it with a fake clock); the service runs it
every ``MES_QTIME_CHECK_INTERVAL_S`` seconds (``watch_qtime_forever``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.context import AuditContext, bind
from mes.clock import Clock
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.fabs.models import Fab
from mes.lots import rules
from mes.lots._core import begin, get_hold_code, place_hold
from mes.lots.models import Lot, QTimeWindow
from mes.lots.states import FINAL_STATES, QTimeStatus
from mes.routes.models import Step

log = logging.getLogger(__name__)


async def expire_windows(
    session: AsyncSession, clock: Clock, *, fabs: list[str] | None = None
) -> list[str]:
    """Hold every lot with an open window past its deadline; the codes of the lots held.

    A window of a lot that has ended is voided instead (nothing left to protect)."""
    now = clock.now()
    query = (
        select(Lot.code)
        .join(QTimeWindow, QTimeWindow.lot_id == Lot.id)
        .where(QTimeWindow.status == QTimeStatus.OPEN, QTimeWindow.deadline_at <= now)
        .distinct()
        .order_by(Lot.code)  # the lock order of every multi-lot operation
    )
    if fabs:
        query = query.join(Fab, Fab.id == Lot.fab_id).where(Fab.code.in_(fabs))
    code = await get_hold_code(session, "QTIME_EXPIRED")
    held = []
    for lot_code in list(await session.scalars(query)):
        lot, change = await begin(session, lot_code, None)
        # Read again under the lot's lock: a track-in may have met the window meanwhile.
        expired = [
            w
            for w in await session.scalars(
                select(QTimeWindow).where(
                    QTimeWindow.lot_id == lot.id, QTimeWindow.status == QTimeStatus.OPEN
                )
            )
            if rules.qtime_expired(w.deadline_at, now)
        ]
        if not expired:
            continue
        ended = lot.state in FINAL_STATES
        for window in expired:
            window.status = QTimeStatus.VOID if ended else QTimeStatus.EXPIRED
            window.closed_at = now
        if ended:
            continue
        to_step = await session.get(Step, expired[0].to_step_id)
        sequence = to_step.sequence if to_step is not None else "?"
        reason = f"Q-time to step {sequence} expired at {expired[0].deadline_at.isoformat()}"
        place_hold(session, lot, code, reason, actor="system", at=now)
        await session.flush()
        await change.record("QTIME_EXPIRED", actor="system", at=now, reason=reason)
        held.append(lot_code)
    return held


@dataclass(frozen=True)
class OpenWindow:
    lot: str
    fab: str
    to_step_sequence: int
    opened_at: datetime
    deadline_at: datetime
    remaining_s: float


async def open_windows(
    session: AsyncSession, clock: Clock, *, fab: str | None, within_s: float | None
) -> list[OpenWindow]:
    """Open windows, soonest deadline first; with ``within_s``, only those running out within
    that many seconds (the warning list)."""
    now = clock.now()
    query = (
        select(Lot.code, Fab.code, Step.sequence, QTimeWindow.opened_at, QTimeWindow.deadline_at)
        .join(Lot, Lot.id == QTimeWindow.lot_id)
        .join(Fab, Fab.id == Lot.fab_id)
        .join(Step, Step.id == QTimeWindow.to_step_id)
        .where(QTimeWindow.status == QTimeStatus.OPEN)
        .order_by(QTimeWindow.deadline_at, Lot.code)
        .limit(1000)
    )
    if fab is not None:
        query = query.where(Fab.code == fab)
    if within_s is not None:
        query = query.where(QTimeWindow.deadline_at <= now + timedelta(seconds=within_s))
    return [
        OpenWindow(lot, fab_code, seq, opened, deadline, (deadline - now).total_seconds())
        for lot, fab_code, seq, opened, deadline in await session.execute(query)
    ]


async def watch_qtime_forever(db: Database, clock: Clock, interval_s: float) -> None:
    """Run ``expire_windows`` every ``interval_s`` seconds until cancelled."""
    while True:
        try:
            async with unit_of_work(db) as session:
                bind(
                    session,
                    AuditContext(
                        actor="system",
                        role="system",
                        operation="lots.expire_qtime",
                        at=clock.now(),
                    ),
                )
                held = await expire_windows(session, clock)
            if held:
                log.warning("Q-time expired: held %s", ", ".join(held))
        except Exception:  # keep watching after a transient database error
            log.exception("Q-time watch failed; retrying")
        await asyncio.sleep(interval_s)
