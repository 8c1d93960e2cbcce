"""Equipment jobs: request (with the track-in), then what the tool reports drives the lot.

The adapter (``mes.opcua``) calls these inside its own ``unit_of_work`` per tool event; each
function takes the job row already locked by the caller and changes it together with the lot
(track-out, back to its step, hold) in that one transaction. Repeats are harmless: a job that
is already where an event would move it is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.auth.service import Principal
from mes.carriers import service as carriers_service
from mes.clock import Clock
from mes.errors import MesError, RuleViolation
from mes.jobs import schemas as s
from mes.jobs import states
from mes.jobs.models import EquipmentJob, EquipmentJobLot, JobWaferResult, ProcessValueSummary

# Read side, re-exported: callers reach jobs through this module.
from mes.jobs.queries import JOB_OPTIONS as JOB_OPTIONS
from mes.jobs.queries import find_job as find_job
from mes.jobs.queries import get_job as get_job
from mes.jobs.queries import job_read as job_read
from mes.jobs.queries import jobs_of_lot as jobs_of_lot
from mes.jobs.queries import open_jobs_of_tool as open_jobs_of_tool
from mes.jobs.results import (
    WAFER_PROCESSED,
    JobResult,
    ProcessValueBuffer,
    ValueSummary,
    WaferReport,
    tool_readings,
)
from mes.jobs.states import JobCommand, JobStatus
from mes.lots import service as lots_service
from mes.lots.commands import EngineeringRun, Measurement, TrackIn, TrackOut
from mes.lots.models import Lot
from mes.lots.states import LotState, WaferState
from mes.recipes.models import RecipeVersion
from mes.routes.models import Step

# A batch runs one recipe on one tool: this many lots at most in one job order.
MAX_BATCH_LOTS = 25


async def request_job(
    session: AsyncSession,
    code: str,
    data: s.JobRequest,
    *,
    principal: Principal,
    clock: Clock,
    engineering: EngineeringRun | None = None,
) -> EquipmentJob:
    """Track the lot in and queue its job order for the tool's adapter (one transaction).
    ``engineering``: the signed release of an engineering lot's run (verified by the caller)."""
    return await request_batch(
        session,
        data.tool,
        [code],
        version=data.version,
        step_sequence=data.step_sequence,
        chambers=tuple(data.chambers) if data.chambers else None,
        principal=principal,
        clock=clock,
        engineering=engineering,
    )


async def request_batch(
    session: AsyncSession,
    tool_code: str,
    lot_codes: Sequence[str],
    *,
    principal: Principal,
    clock: Clock,
    version: int | None = None,
    step_sequence: int | None = None,
    chambers: tuple[str, ...] | None = None,
    engineering: EngineeringRun | None = None,
) -> EquipmentJob:
    """Track every lot in on the tool and queue one job order that runs them together (a
    furnace or wet bench batch; one lot elsewhere). All or nothing: one refusal refuses the
    batch. The first lot leads (the job order id is made from it)."""
    if not 1 <= len(lot_codes) <= MAX_BATCH_LOTS:
        raise RuleViolation(
            "job.batch_size", f"a job order takes 1 to {MAX_BATCH_LOTS} lots, not {len(lot_codes)}"
        )
    if len(set(lot_codes)) != len(lot_codes):
        raise RuleViolation("job.duplicate_lot", "a lot appears twice in the batch")
    # Every lot is locked before the tool (track-in locks lot, then tool), in code order: two
    # requests sharing lots or the tool then wait for each other instead of deadlocking.
    await session.execute(
        select(Lot.id)
        .where(Lot.code.in_(lot_codes))
        .order_by(Lot.code)
        .with_for_update(key_share=True)
    )
    tracked: dict[str, tuple[Lot, RecipeVersion]] = {}
    commands = {
        code: TrackIn(
            tool=tool_code,
            version=version if len(lot_codes) == 1 else None,
            step_sequence=step_sequence,
            chambers=chambers,
            engineering=engineering,
        )
        for code in lot_codes
    }
    current = ""
    try:
        async with session.begin_nested():  # a savepoint before the first track-in
            for current in sorted(lot_codes):
                lot, tool, recipe, _chambers = await lots_service.track_in(
                    session, current, commands[current], actor=principal, clock=clock
                )
                tracked[current] = (lot, recipe)
    except MesError as exc:
        if len(lot_codes) == 1 or not getattr(exc, "keep_changes", False):
            raise
        # A refusal that keeps a trace (the Q-time hold) is committed, but the lots tracked in
        # before it must not be: the savepoint undid them all; refuse that one lot again alone.
        await lots_service.track_in(
            session, current, commands[current], actor=principal, clock=clock
        )
        raise RuleViolation(  # the refusal did not repeat: refuse the batch, keep nothing
            "job.batch_refused", f"lot {current} was refused in the batch: {exc.detail}"
        ) from exc
    await carriers_service.check_at_tool(
        session, {lot.carrier_id for lot, _ in tracked.values() if lot.carrier_id}, tool
    )
    if not tool.opcua_endpoint:
        raise RuleViolation(
            "job.tool_not_connected",
            f"tool {tool.code} has no OPC UA endpoint: track the lot in and out by hand",
        )
    recipes = {recipe.id for _, recipe in tracked.values()}
    if len(recipes) > 1:
        names = ", ".join(f"{c}: {r.recipe.name}@{r.version}" for c, (_, r) in tracked.items())
        raise RuleViolation(
            "job.batch_mismatch", f"the lots of one job order must run one recipe ({names})"
        )
    lead, recipe = tracked[lot_codes[0]]
    assert lead.current_step_id is not None
    sequence = await session.scalar(select(Step.sequence).where(Step.id == lead.current_step_id))
    previous = await session.scalar(
        select(func.count())
        .select_from(EquipmentJob)
        .where(EquipmentJob.lot_id == lead.id, EquipmentJob.step_id == lead.current_step_id)
    )
    attempt = int(previous or 0) + 1
    job = EquipmentJob(
        job_order_id=states.job_order_id(lead.code, int(sequence or 0), attempt),
        fab_id=tool.fab_id,
        equipment_id=tool.id,
        lot_id=lead.id,
        step_id=lead.current_step_id,
        recipe_version_id=recipe.id,
        attempt=attempt,
        status=JobStatus.REQUESTED,
        requested_by=principal.username,
        requested_at=clock.now(),
    )
    session.add(job)
    await session.flush()
    session.add_all(
        EquipmentJobLot(job_id=job.id, lot_id=tracked[code][0].id, position=position)
        for position, code in enumerate(lot_codes, start=1)
    )
    await session.flush()
    return job


async def request_command(
    session: AsyncSession,
    job_order_id: str,
    command: JobCommand,
    *,
    principal: Principal,
    clock: Clock,
) -> EquipmentJob:
    """Ask the owning adapter to abort, pause or resume a job on its tool."""
    job = await get_job(session, job_order_id, for_update=True)
    if not states.command_allowed(job.status, command):
        raise RuleViolation(
            "job.command_not_allowed", f"job {job_order_id} is {job.status.value}: cannot {command}"
        )
    if job.status is JobStatus.REQUESTED and command is JobCommand.ABORT:
        # Not sent yet: withdrawn here, the adapter never sees it; its lots go back to Waiting
        # at their step (nothing ran, so no hold).
        await end_without_run(
            session,
            job,
            JobStatus.ABORTED,
            f"withdrawn by {principal.username} before it was sent",
            hold=False,
            event_type="JOB_WITHDRAWN",
            principal=principal,
            clock=clock,
        )
        return job
    job.command = command
    await session.flush()
    return job


# --- what the tool reports --------------------------------------------------------------------


def _move(job: EquipmentJob, target: JobStatus) -> bool:
    if job.status is target or not states.can_move(job.status, target):
        return False
    job.status = target
    return True


def mark_sent(job: EquipmentJob, *, by: str, at: datetime) -> bool:
    """The outbox step: the adapter's intent to send, committed before the call to the tool."""
    if job.status is not JobStatus.REQUESTED:
        return False
    job.status, job.sent_at, job.sent_by = JobStatus.SENT, at, by
    return True


def confirm_running(job: EquipmentJob, *, at: datetime, tool_state: str) -> bool:
    """The tool runs the job: the track-in is confirmed."""
    job.tool_state = tool_state
    if not _move(job, JobStatus.RUNNING):
        return False
    job.started_at = job.started_at or at
    return True


def paused(job: EquipmentJob, *, tool_state: str) -> bool:
    job.tool_state = tool_state
    return _move(job, JobStatus.PAUSED)


async def record_wafers(
    session: AsyncSession, job: EquipmentJob, wafers: Sequence[WaferReport], at: datetime
) -> None:
    """Keep what the tool reported per wafer (end state, chamber, measurements)."""
    if not wafers:
        return
    known = {
        r.substrate_id: r
        for r in await session.scalars(
            select(JobWaferResult).where(JobWaferResult.job_id == job.id)
        )
    }
    for w in wafers:
        row = known.get(w.substrate_id)
        measured = {"sites": list(w.measurements)} if w.measurements else None
        if row is None:
            row = JobWaferResult(
                job_id=job.id,
                fab_id=job.fab_id,
                substrate_id=w.substrate_id,
                slot=w.slot,
                state=w.state,
                chamber=w.chamber or None,
                measurements=measured,
                recorded_at=at,
            )
            session.add(row)
            known[w.substrate_id] = row
        else:
            row.state, row.recorded_at = w.state, at
            row.chamber = w.chamber or row.chamber
            row.measurements = measured or row.measurements
    await session.flush()


async def store_process_values(
    session: AsyncSession, job: EquipmentJob, buffer: ProcessValueBuffer
) -> None:
    existing = {
        (r.substrate_id, r.name)
        for r in await session.scalars(
            select(ProcessValueSummary).where(ProcessValueSummary.job_id == job.id)
        )
    }
    for (substrate, name), st in sorted(buffer.stats.items()):
        if (substrate, name) in existing or not st.samples:
            continue
        assert st.first_at is not None
        assert st.last_at is not None
        session.add(
            ProcessValueSummary(
                job_id=job.id,
                fab_id=job.fab_id,
                substrate_id=substrate[:64],
                name=name[:64],
                samples=st.samples,
                mean=st.mean,
                minimum=st.minimum,
                maximum=st.maximum,
                first_at=st.first_at,
                last_at=st.last_at,
            )
        )
    await session.flush()


def _lot_on_tool(job: EquipmentJob, lot: Lot) -> bool:
    # The step too: a late end event of an old job must not move a lot that was sent on.
    return (
        lot.state == LotState.RUNNING
        and lot.equipment_id == job.equipment_id
        and lot.current_step_id == job.step_id
    )


async def open_job_of(session: AsyncSession, lot_code: str) -> str | None:
    """The job order a lot runs in that has not ended, if any."""
    return await session.scalar(
        select(EquipmentJob.job_order_id)
        .join(EquipmentJobLot, EquipmentJobLot.job_id == EquipmentJob.id)
        .join(Lot, Lot.id == EquipmentJobLot.lot_id)
        .where(Lot.code == lot_code, EquipmentJob.status.not_in(states.FINAL))
        .limit(1)
    )


async def member_lots(session: AsyncSession, job: EquipmentJob) -> list[Lot]:
    """The job's lots in batch order, freshly read (with their wafers). Every job has its
    ``equipment_job_lot`` rows: written with it, and backfilled for older jobs."""
    return list(
        await session.scalars(
            select(Lot)
            .options(selectinload(Lot.wafers))
            .join(EquipmentJobLot, EquipmentJobLot.lot_id == Lot.id)
            .where(EquipmentJobLot.job_id == job.id)
            .order_by(EquipmentJobLot.position)
            .execution_options(populate_existing=True)
        )
    )


def split_by_lot(
    lots: Sequence[Lot], result: JobResult
) -> list[tuple[Lot, int, list[WaferReport]]]:
    """Each lot's share of a job result: wafers processed and the tool's wafer reports.

    Per-wafer reports decide when the tool sent them (matched to the lots by scribe id, the job
    order carried them): a wafer counts as processed only if the tool says so. Without them the
    processed count is handed out in batch order (one lot takes it all).
    """
    if len(lots) == 1 and not result.wafers:
        return [(lots[0], min(result.wafers_processed, lots[0].wafer_count), [])]
    shares = []
    left = result.wafers_processed
    for lot in lots:
        scribes = {w.scribe_id for w in lot.wafers}
        reports = [w for w in result.wafers if w.substrate_id in scribes]
        if result.wafers:
            processed = sum(1 for w in reports if w.state == WAFER_PROCESSED)
        else:
            processed = min(left, lot.wafer_count)
            left -= processed
        shares.append((lot, min(processed, lot.wafer_count), reports))
    return shares


async def complete(
    session: AsyncSession,
    job: EquipmentJob,
    result: JobResult,
    *,
    principal: Principal,
    clock: Clock,
) -> bool:
    """The tool ended the job: track each of its lots out with its wafers processed and
    measurements (metrology results are recorded against the lot in its TRACK_OUT event)."""
    now = clock.now()
    if not _move(job, JobStatus.COMPLETED):
        return False
    job.tool_state = f"{result.state}/{result.substate}"
    job.ended_at, job.wafers_processed, job.command = now, result.wafers_processed, None
    await record_wafers(session, job, result.wafers, now)
    summaries = [
        ValueSummary(r.substrate_id, r.name, r.mean, r.minimum, r.maximum)
        for r in await session.scalars(
            select(ProcessValueSummary).where(ProcessValueSummary.job_id == job.id)
        )
    ]
    gone = []
    for lot, processed, reports in split_by_lot(await member_lots(session, job), result):
        if not _lot_on_tool(job, lot):
            gone.append(f"{lot.code} ({lot.state})")
            continue
        measurements = [
            Measurement(name=w.substrate_id[:64] or f"slot {w.slot}", values=w.measurements)
            for w in reports
            if w.measurements
        ][:100]
        reported = {w.substrate_id: w.state for w in reports}
        not_processed = (
            tuple(
                (w.scribe_id, reported.get(w.scribe_id, "not reported"))
                for w in sorted(lot.wafers, key=lambda w: w.slot or 0)
                if w.state == WaferState.ACTIVE and reported.get(w.scribe_id) != WAFER_PROCESSED
            )
            if reports
            else ()
        )
        await lots_service.track_out(
            session,
            lot.code,
            TrackOut(
                wafers_processed=processed,
                measurements=tuple(measurements),
                not_processed=not_processed,
                # For the step's data collection plan (metrology sites, process values).
                readings=tool_readings(
                    {w.scribe_id: w.slot for w in lot.wafers if w.slot is not None},
                    reports,
                    summaries,
                ),
                by_tool=True,
            ),
            actor=principal,
            clock=clock,
        )
    if gone:
        job.last_error = f"no longer on the tool, not tracked out: {', '.join(gone)}"[:2000]
        await session.flush()
    return True


async def end_without_run(
    session: AsyncSession,
    job: EquipmentJob,
    target: JobStatus,
    reason: str,
    *,
    hold: bool,
    event_type: str,
    principal: Principal,
    clock: Clock,
    result: JobResult | None = None,
) -> bool:
    """The job aborted, was cancelled, refused or lost: the lot goes back to its step
    (on hold ``EQUIPMENT`` when ``hold``), and the lot history says why."""
    now = clock.now()
    if not _move(job, target):
        return False
    job.ended_at, job.last_error, job.command = now, reason, None
    if result is not None:
        job.tool_state = f"{result.state}/{result.substate}"
        job.wafers_processed = result.wafers_processed
        await record_wafers(session, job, result.wafers, now)
    lots = await member_lots(session, job)
    # What each lot had processed before the end (nothing, without a result): the rest of its
    # wafers give back the usage counted at track-in.
    processed = (
        {lot.id: n for lot, n, _ in split_by_lot(lots, result)} if result is not None else {}
    )
    for lot in lots:
        if not _lot_on_tool(job, lot):
            continue
        await lots_service.abort_run(
            session,
            lot.code,
            event_type=event_type,
            reason=f"job {job.job_order_id}: {reason}",
            hold=hold,
            actor=principal,
            clock=clock,
            details={"job_order_id": job.job_order_id},
            wafers_processed=processed.get(lot.id, 0),
        )
    await session.flush()
    return True
