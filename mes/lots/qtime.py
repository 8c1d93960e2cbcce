"""Q-time windows watched over time: a lot whose window runs out while it waits is held at once
(``QTIME_EXPIRED``), not only when someone tries to track it in; a window entering its last
``MES_QTIME_WARN_S`` seconds is warned of once (event ``QTIME_WARNING`` in the lot's history,
metric ``mes_qtime_warnings``); and the windows about to run out are listed so the line can
hurry those lots.

``expire_windows`` and ``warn_windows`` are one transaction each (the tests call them with a
fake clock); the service runs them every ``MES_QTIME_CHECK_INTERVAL_S`` seconds
(``watch_qtime_forever``).
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
from mes.lots.models import Lot, LotEvent, QTimeWindow
from mes.lots.states import FINAL_STATES, QTimeStatus
from mes.observability import instruments
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


async def warn_windows(
    session: AsyncSession, clock: Clock, warn_s: float, *, fabs: list[str] | None = None
) -> list[str]:
    """Record a ``QTIME_WARNING`` event, once per window, for each open window with at most
    ``warn_s`` seconds left; the codes of the lots warned of. The event names the window, so
    a later round (or another process) sees it was warned of: no extra column needed."""
    if warn_s <= 0:
        return []
    now = clock.now()
    query = (
        select(QTimeWindow, Lot.code, Fab.code, Step.sequence)
        .join(Lot, Lot.id == QTimeWindow.lot_id)
        .join(Fab, Fab.id == Lot.fab_id)
        .join(Step, Step.id == QTimeWindow.to_step_id)
        .where(
            QTimeWindow.status == QTimeStatus.OPEN,
            QTimeWindow.deadline_at > now,
            QTimeWindow.deadline_at <= now + timedelta(seconds=warn_s),
            Lot.state.not_in(FINAL_STATES),
        )
        .order_by(Lot.code, QTimeWindow.id)  # the lock order of every multi-lot operation
    )
    if fabs:
        query = query.where(Fab.code.in_(fabs))
    due = [
        row
        for row in (await session.execute(query)).all()
        if rules.qtime_warning_due(row[0].deadline_at, now, warn_s)
    ]
    if not due:
        return []
    warned = {
        (after or {}).get("qtime_window")
        for after in await session.scalars(
            select(LotEvent.after).where(
                LotEvent.lot_id.in_({w.lot_id for w, *_ in due}),
                LotEvent.event_type == "QTIME_WARNING",
                LotEvent.occurred_at >= min(w.opened_at for w, *_ in due),
            )
        )
    }
    codes = []
    for window, lot_code, fab_code, sequence in due:
        if window.id in warned:
            continue
        _lot, change = await begin(session, lot_code, None)
        left = int((window.deadline_at - now).total_seconds() // 60)
        await change.record(
            "QTIME_WARNING",
            actor="system",
            at=now,
            reason=f"Q-time to step {sequence} expires at {window.deadline_at.isoformat()} "
            f"({left} min left)",
            details={"qtime_window": window.id, "deadline_at": window.deadline_at.isoformat()},
        )
        instruments.qtime_warning(fab_code)
        codes.append(lot_code)
    return codes


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


async def watch_qtime_forever(
    db: Database, clock: Clock, interval_s: float, warn_s: float = 0
) -> None:
    """Run ``expire_windows`` and ``warn_windows`` every ``interval_s`` seconds until
    cancelled."""
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
                warned = await warn_windows(session, clock, warn_s)
            if held:
                log.warning("Q-time expired: held %s", ", ".join(held))
            if warned:
                log.warning(
                    "Q-time about to expire (under %.0f s left): %s", warn_s, ", ".join(warned)
                )
        except Exception:  # keep watching after a transient database error
            log.exception("Q-time watch failed; retrying")
        await asyncio.sleep(interval_s)
