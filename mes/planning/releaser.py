"""The releaser: every ``interval_s`` it releases the lots the active start plans have due.

Off unless configured (``MES_RELEASE_ENABLED``). Several service processes may each run one:
per fab, only the holder of the fab's row in ``release_leader`` (``mes.kit.lease``, the same
mechanism as the dispatcher's) releases, and every release transaction re-checks that lease
(share-locked on PostgreSQL), so a stalled releaser that lost it releases nothing. Each plan's
due lots are started in one transaction through the lot start service of ``POST /lots``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mes.audit.context import AuditContext, bind
from mes.clock import Clock
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.errors import MesError
from mes.kit.lease import LeaseTable
from mes.planning import service
from mes.planning.models import ReleaseLeader

log = logging.getLogger(__name__)

FAB_LEASES: LeaseTable[int] = LeaseTable(ReleaseLeader, ReleaseLeader.fab_id)


@dataclass
class CycleReport:
    leading: set[int] = field(default_factory=set)  # fab ids whose lease we hold
    released: list[str] = field(default_factory=list)  # lot codes
    refused: list[tuple[int, str]] = field(default_factory=list)  # (plan id, error code)


class Releaser:
    """Releases the due lots of the active start plans of the fabs whose lease it holds."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        owner: str,
        interval_s: float = 5.0,
        lease_ttl_s: float = 30.0,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.owner = owner
        self.interval_s = interval_s
        self.ttl = timedelta(seconds=lease_ttl_s)
        # Called after lots were released (the service wakes the dispatcher with it).
        self.on_release = on_release
        self._held: set[int] = set()
        self._refusals: dict[int, str] = {}  # plan id -> last error code, logged once

    async def run(self) -> None:
        """Cycle until cancelled; gives the leases up on the way out."""
        try:
            while True:
                try:
                    report = await self.cycle()
                    if report.released and self.on_release is not None:
                        self.on_release()
                except Exception:
                    log.exception("release cycle failed; retrying")
                await asyncio.sleep(self.interval_s)
        finally:
            with contextlib.suppress(Exception):
                await self.release_leases()

    async def release_leases(self) -> None:
        async with unit_of_work(self.db) as session:
            await FAB_LEASES.release(session, self._held, self.owner, self.clock.now())
        self._held.clear()

    async def _lead(self, fab_id: int) -> bool:
        try:
            async with unit_of_work(self.db) as session:
                return await FAB_LEASES.acquire(
                    session, fab_id, self.owner, self.clock.now(), self.ttl
                )
        except Exception:  # a racing INSERT lost on the primary key: another one leads
            return False

    async def cycle(self) -> CycleReport:
        """One pass over every active plan of the fabs we lead (or can take the lead of)."""
        report = CycleReport()
        async with unit_of_work(self.db, write=False) as session:
            plans = await service.active_plans(session)
        fabs = sorted({fab_id for _, fab_id, _ in plans})
        for fab_id in fabs:
            if await self._lead(fab_id):
                report.leading.add(fab_id)
        # Fabs without active plans any more: let their leases go.
        idle = self._held - set(fabs)
        if idle:
            async with unit_of_work(self.db) as session:
                await FAB_LEASES.release(session, idle, self.owner, self.clock.now())
        self._held = set(report.leading)
        for plan_id, fab_id, code in plans:
            if fab_id in report.leading:
                await self._release_plan(report, plan_id, fab_id, code)
        return report

    async def _release_plan(
        self, report: CycleReport, plan_id: int, fab_id: int, code: str
    ) -> None:
        now: datetime = self.clock.now()
        # Most cycles find nothing due: ask in a read transaction first, so the releaser takes
        # the (SQLite: single) writer lock only when it has lots to start.
        async with unit_of_work(self.db, write=False) as session:
            if not (await service.slots_due(session, plan_id, now)).sequences:
                return
        try:
            async with unit_of_work(self.db) as session:
                bind(
                    session,
                    AuditContext(
                        actor=service.RELEASER_ACTOR,
                        role="system",
                        operation="planning.release",
                        at=now,
                    ),
                )
                if not await FAB_LEASES.holds(session, fab_id, self.owner, now, lock=True):
                    report.leading.discard(fab_id)
                    return
                released = await service.release_due(
                    session, plan_id, owner=self.owner, clock=self.clock
                )
                codes = [r.lot.code for r in released]
        except MesError as exc:
            # E.g. the product has no active route any more: nothing released, try next cycle.
            report.refused.append((plan_id, exc.code))
            if self._refusals.get(plan_id) != exc.code:
                log.warning("start plan %s released nothing: %s (%s)", code, exc, exc.code)
            self._refusals[plan_id] = exc.code
            return
        self._refusals.pop(plan_id, None)
        report.released.extend(codes)
        if codes:
            log.info("released %s", ", ".join(codes))
