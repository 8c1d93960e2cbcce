"""Automatic dispatch: one dispatcher per fab (the holder of the fab's lease) runs a cycle every
``interval_s``: one consistent read of the fab, what-next for every idle tool with its rule set
(and its shadow set, logged only), and for each tool whose list offers a lot that batch
formation says to start now, the same job request as ``POST /lots/{lot}/jobs``, one
transaction per decision. A refused request (the lot was taken meanwhile, the tool went down) is
logged with its code and not retried: the next cycle decides again on fresh data. A refusal by
or about the tool — at the request, or when its adapter reports the job failed — pauses that
tool's dispatch with a growing back-off per code (``backoff``), logged once per pause as a
``backoff`` decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind
from mes.auth.roles import Role
from mes.auth.service import Principal
from mes.clock import Clock
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.dispatch import decisions, leader, policy
from mes.dispatch import service as dispatch_service
from mes.dispatch.backoff import Backoff, refusal_code
from mes.dispatch.models import DispatchDecision
from mes.errors import MesError
from mes.fabs import service as fabs_service
from mes.jobs import service as jobs_service
from mes.jobs.models import EquipmentJob
from mes.jobs.states import JobStatus
from mes.kit import wakeups
from mes.observability import instruments

log = logging.getLogger(__name__)

PRINCIPAL = Principal(
    user_id=0,
    username=decisions.DISPATCH_ACTOR,
    kind=AccountKind.SERVICE,
    roles=frozenset({Role.DISPATCHER}),
    auth_time=None,
)


class Mode(StrEnum):
    AUTO = "auto"  # request the jobs
    ADVISE = "advise"  # log the decisions only (operators dispatch; compliance measures them)


def parse_fabs(value: str | None) -> dict[str, Mode]:
    """``"F1,F2=advise"`` → {"F1": auto, "F2": advise}."""
    out: dict[str, Mode] = {}
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        fab, _, mode = item.partition("=")
        out[fab.strip()] = Mode(mode.strip() or Mode.AUTO)
    return out


@dataclass
class CycleReport:
    fab: str
    leader: bool
    tools: int = 0
    requested: list[str] = field(default_factory=list)  # job order ids
    refused: list[tuple[str, str]] = field(default_factory=list)  # (lot, code)
    logged: int = 0
    lost_lease: bool = False


class Dispatcher:
    """The automatic dispatcher of some fabs (leader of those whose lease it holds)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        fabs: Mapping[str, Mode],
        *,
        owner: str,
        interval_s: float = 30.0,
        lease_ttl_s: float = 90.0,
        top_n: int = 5,
        backoff_base_s: float = 30.0,
        backoff_max_s: float = 1800.0,
        min_gap_s: float = 1.0,
        event_driven: bool = True,
    ) -> None:
        self.db = db
        self.clock = clock
        self.fabs = dict(fabs)
        self.owner = owner
        self.interval_s = interval_s
        self.ttl = timedelta(seconds=lease_ttl_s)
        self.top_n = top_n
        self._fab_ids: dict[str, int] = {}
        self._wake = asyncio.Event()
        self.leading: set[str] = set()  # fabs whose last cycle we ran as leader
        # A standby's next try: when the leader's lease runs out, not a whole interval later
        # (a take-over then costs one TTL, not one TTL + one cycle).
        self._lease_expiry: dict[str, datetime] = {}
        self.backoff = Backoff(backoff_base_s, backoff_max_s)
        self.min_gap_s = min_gap_s
        self.event_driven = event_driven  # False: the periodic cycle only (bench baseline)
        self.wakeups = 0  # cycles run early because a change asked for it
        self.cycles = 0  # rounds over our fabs since run() began
        # Up to when each fab's job outcomes were read (for the back-off).
        self._outcomes_seen: dict[str, datetime] = {}
        # (job, status) read last time: a boundary instant is read twice, acted on once.
        self._jobs_seen: dict[str, set[tuple[int, JobStatus]]] = {}

    def wake(self) -> None:
        """Run the next cycle now (an event-driven trigger: a tool became free, a lot arrived)."""
        self._wake.set()

    def on_wakeup(self, fab_ids: Iterable[int]) -> None:
        """A committed change asked for its fab's dispatcher (``mes.kit.wakeups``): wake if it
        is one of ours (once our fab ids are known; before that, the first cycle is due)."""
        if set(fab_ids) & set(self._fab_ids.values()):
            self.wake()

    async def run(self) -> None:
        """Cycle until cancelled, every interval and whenever a committed change of one of our
        fabs asks for it (in this process, or on PostgreSQL from another); gives the leases
        up on the way out."""

        def ignore(_fabs: Iterable[int]) -> None:
            return None

        hear = self.on_wakeup if self.event_driven else ignore
        unsubscribe = wakeups.subscribe(hear)
        listener = asyncio.create_task(
            wakeups.listen_for_wakeups(self.db.engine, hear), name="dispatch-wakeups"
        )
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                self._wake.clear()  # changes from here on ask for the next cycle
                for fab in self.fabs:
                    try:
                        cycle_started = loop.time()
                        report = await self.cycle(fab)
                        if report.leader:
                            instruments.dispatch_cycle(fab, loop.time() - cycle_started)
                        self._note_leadership(report)
                    except Exception:
                        log.exception("dispatch cycle of %s failed; retrying", fab)
                self.cycles += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.next_wait_s()):  # cancellation-safe (3.11)
                        await self._wake.wait()
                        self.wakeups += 1
                        # A busy line asks often: one cycle per min_gap_s takes them all.
                        await asyncio.sleep(max(0.0, started + self.min_gap_s - loop.time()))
        finally:
            unsubscribe()
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
            with contextlib.suppress(Exception):
                await self.release()

    def next_wait_s(self) -> float:
        """Seconds until the next cycle: the interval, or less for a standby whose leader's
        lease runs out sooner."""
        now = self.clock.now()
        waits = [(at - now).total_seconds() + 0.05 for at in self._lease_expiry.values()]
        return max(0.05, min([self.interval_s, *waits]))

    def _note_leadership(self, report: CycleReport) -> None:
        instruments.dispatch_leading(report.fab, report.leader)
        # One line per change of role: a take-over's timing is read from these (bench/scale_out).
        if report.leader and report.fab not in self.leading:
            self.leading.add(report.fab)
            log.info(
                "%s: leading %s (first cycle decided %d tools)",
                self.owner,
                report.fab,
                report.tools,
            )
        elif not report.leader and report.fab in self.leading:
            self.leading.discard(report.fab)
            log.warning("%s: no longer leads %s; standing by", self.owner, report.fab)

    async def release(self) -> None:
        now = self.clock.now()
        async with unit_of_work(self.db) as session:
            for fab_id in self._fab_ids.values():
                await leader.release_lease(session, fab_id, self.owner, now)

    def _fab_code(self, fab_id: int) -> str:
        return next((code for code, i in self._fab_ids.items() if i == fab_id), str(fab_id))

    async def _fab_id(self, fab: str) -> int:
        if fab not in self._fab_ids:
            async with unit_of_work(self.db, write=False) as session:
                self._fab_ids[fab] = (await fabs_service.get_fab(session, fab)).id
        return self._fab_ids[fab]

    async def lead(self, fab: str) -> bool:
        """Take or renew the fab's lease (False: another dispatcher leads; stay standby)."""
        fab_id = await self._fab_id(fab)
        self._lease_expiry.pop(fab, None)
        try:
            async with unit_of_work(self.db) as session:
                if await leader.take_lease(session, fab_id, self.owner, self.clock.now(), self.ttl):
                    return True
        except Exception:  # a racing INSERT lost on the primary key
            log.info("%s: lease of %s taken by another dispatcher", self.owner, fab)
        async with unit_of_work(self.db, write=False) as session:
            expiry = await leader.lease_expiry(session, fab_id)
        if expiry is not None:
            self._lease_expiry[fab] = expiry
        return False

    async def cycle(self, fab: str) -> CycleReport:
        if not await self.lead(fab):
            return CycleReport(fab, leader=False)
        fab_id = self._fab_ids[fab]
        mode = self.fabs.get(fab, Mode.AUTO)
        now = self.clock.now()
        report = CycleReport(fab, leader=True)
        taken: set[int] = set()
        async with unit_of_work(self.db, write=False) as session:
            snap = await dispatch_service.fab_snapshot(session, fab, now)
            await self._learn_job_outcomes(session, fab, fab_id, now)
        for tool in snap.tools:
            if policy.tool_exclusion(tool) is not None or len(tool.running) >= tool.max_lots:
                continue  # not idle: down, due for PM, not remote, or full
            listing = snap.rank(tool, without=taken)
            assert listing is not None
            if not listing.ranked and not listing.excluded:
                continue  # no lot for its group at all: nothing to decide
            report.tools += 1
            pause = self.backoff.paused(tool.id, now.timestamp())
            if pause is not None:
                if not pause.logged:  # once per pause, not once per cycle
                    pause.logged = await self._log_backoff(fab_id, listing, pause.code, now)
                continue
            shadow = snap.rank(tool, shadow=True, without=taken)
            starts = policy.choose_starts(listing, snap.situation)
            # Lots chosen for a tool are off the lists of the tools decided after it, and those
            # that open a Q-time window count for the gate of the lots decided after them.
            taken.update(r.lot.id for r in starts.lots)
            snap.situation = policy.with_committed(snap.situation, [r.lot for r in starts.lots])
            if not await self._decide(report, fab_id, mode, listing, starts, shadow, now):
                report.lost_lease = True
                log.warning("%s: lost the lease of %s mid-cycle; standing by", self.owner, fab)
                break
        return report

    async def _learn_job_outcomes(
        self, session: AsyncSession, fab: str, fab_id: int, now: datetime
    ) -> None:
        """Jobs this dispatcher requested that the tool refused since the last look start a
        back-off for that tool; a job the tool started clears it."""
        since = self._outcomes_seen.get(fab, now)
        self._outcomes_seen[fab] = now
        if since >= now:
            return  # first cycle as leader: nothing of ours to learn from yet
        rows = await session.execute(
            select(
                EquipmentJob.id,
                EquipmentJob.equipment_id,
                EquipmentJob.status,
                EquipmentJob.last_error,
                EquipmentJob.started_at,
            )
            .where(
                EquipmentJob.fab_id == fab_id,
                EquipmentJob.requested_by == decisions.DISPATCH_ACTOR,
                # >=: a job that ended at the very instant of the last look is read now;
                # what was read last time is skipped, so nothing is acted on twice.
                or_(EquipmentJob.ended_at >= since, EquipmentJob.started_at >= since),
            )
            .order_by(EquipmentJob.id)
        )
        seen_before = self._jobs_seen.get(fab, set())
        self._jobs_seen[fab] = seen_now = set()
        for job_id, tool_id, status, error, started_at in rows.all():
            seen_now.add((job_id, status))
            if (job_id, status) in seen_before:
                continue
            if started_at is not None and started_at >= since:
                self.backoff.accepted(tool_id)
            elif status == JobStatus.FAILED:
                code = refusal_code(error)
                pause = self.backoff.refused(tool_id, code, now.timestamp())
                log.info(
                    "tool %s refused a job (%s): dispatch paused %d s",
                    tool_id,
                    code,
                    pause.until - now.timestamp(),
                )

    async def _log_backoff(
        self, fab_id: int, listing: policy.DispatchList, code: str, now: datetime
    ) -> bool:
        async with unit_of_work(self.db) as session:
            if not await leader.holds_lease(session, fab_id, self.owner, self.clock.now()):
                return False
            session.add(
                decisions.decision_row(
                    listing,
                    fab_id=fab_id,
                    at=now,
                    owner=self.owner,
                    outcome=decisions.BACKOFF,
                    chosen=None,
                    top_n=self.top_n,
                    refusal_code=code,
                )
            )
        instruments.dispatch_decision(self._fab_code(fab_id), decisions.BACKOFF)
        return True

    async def _decide(
        self,
        report: CycleReport,
        fab_id: int,
        mode: Mode,
        listing: policy.DispatchList,
        starts: policy.Starts,
        shadow: policy.DispatchList | None,
        now: datetime,
    ) -> bool:
        """One decision, one transaction: the jobs and the log rows commit together. Returns
        False when the lease is no longer ours."""
        chosen = starts.lots[0] if starts.lots else None
        if chosen is None:
            outcome = decisions.WAITING if starts.waiting else decisions.NONE
        else:
            outcome = decisions.ADVISORY if mode is Mode.ADVISE else decisions.REQUESTED

        def rows(
            outcome: str, refusal: str | None = None, job: str | None = None
        ) -> list[DispatchDecision]:
            out = [
                decisions.decision_row(
                    listing,
                    fab_id=fab_id,
                    at=now,
                    owner=self.owner,
                    outcome=outcome,
                    chosen=chosen,
                    top_n=self.top_n,
                    refusal_code=refusal,
                    job_order_id=job,
                )
            ]
            if shadow is not None:
                shadow_starts = policy.choose_starts(shadow)
                out.append(
                    decisions.decision_row(
                        shadow,
                        fab_id=fab_id,
                        at=now,
                        owner=self.owner,
                        outcome=decisions.SHADOW,
                        chosen=shadow_starts.lots[0] if shadow_starts.lots else None,
                        top_n=self.top_n,
                    )
                )
            return out

        try:
            async with unit_of_work(self.db) as session:
                bind(
                    session,
                    AuditContext(
                        actor=decisions.DISPATCH_ACTOR,
                        role=Role.DISPATCHER.value,
                        operation="dispatch.automatic",
                        at=self.clock.now(),
                    ),
                )
                if not await leader.holds_lease(session, fab_id, self.owner, self.clock.now()):
                    return False
                jobs: list[str] = []
                if outcome == decisions.REQUESTED:
                    # A batch is one job order: the tool runs its lots together.
                    job = await jobs_service.request_batch(
                        session,
                        listing.tool.code,
                        [ranked.lot.code for ranked in starts.lots],
                        step_sequence=starts.lots[0].lot.step.sequence,
                        principal=PRINCIPAL,
                        clock=self.clock,
                    )
                    jobs.append(job.job_order_id)
                session.add_all(rows(outcome, job=",".join(jobs) or None))
            report.requested.extend(jobs)
            report.logged += 1
            instruments.dispatch_decision(report.fab, outcome)
            return True
        except MesError as exc:  # refused: logged, not retried
            code = exc.code
            lot_code = chosen.lot.code if chosen is not None else "-"
            log.info(
                "dispatch of %s to %s refused (%s): %s", lot_code, listing.tool.code, code, exc
            )
            if not code.startswith("lot."):  # a lot taken meanwhile is a race, not the tool
                self.backoff.refused(listing.tool.id, code, now.timestamp())
        report.refused.append((chosen.lot.code if chosen else "-", code))
        async with unit_of_work(self.db) as session:
            if not await leader.holds_lease(session, fab_id, self.owner, self.clock.now()):
                return False
            session.add_all(rows(decisions.REFUSED, refusal=code))
        report.logged += 1
        instruments.dispatch_decision(report.fab, decisions.REFUSED)
        return True
