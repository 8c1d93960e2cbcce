"""Lots: start them, and move them on and off tools (track-in, track-out)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status

from mes.auth import roles
from mes.auth.roles import Role
from mes.errors import RuleViolation
from mes.jobs import service as jobs_service
from mes.kit.api import CodePath
from mes.lots import commands as c
from mes.lots import schemas as s
from mes.lots import service, type_rules
from mes.lots.http import Answer, LotWrite, lot_read, lot_write
from mes.lots.models import Lot

router = APIRouter(prefix="/lots", tags=["lots"])

Starter = Annotated[LotWrite, lot_write(roles.LOT_START, if_match=False)]
Mover = Annotated[LotWrite, lot_write(roles.LOT_MOVE)]
Canceller = Annotated[LotWrite, lot_write(roles.LOT_CANCEL_TRACK_IN)]


@router.post("", response_model=s.LotRead, status_code=status.HTTP_201_CREATED)
async def start_lot(body: s.LotStart, tx: Starter) -> Answer:
    """Start (release) a lot on its product's active route version."""

    async def start() -> Lot:
        (lot,) = await service.start_lots(
            tx.session,
            product_code=body.product,
            fab_code=body.fab,
            route_code=body.route,
            count=1,
            wafer_count=body.wafer_count,
            lot_type=body.lot_type,
            priority_class=body.priority_class,
            due_at=body.due_at,
            code=body.code,
            carrier_code=body.carrier,
            actor=tx.by,
            clock=tx.clock,
        )
        return lot

    return await tx.run_lot(start)


@router.post("/bulk-start", response_model=s.LotList, status_code=status.HTTP_201_CREATED)
async def bulk_start(body: s.BulkStart, tx: Starter) -> Answer:
    """Start N lots of a product at once."""

    async def start() -> s.LotList:
        lots = await service.start_lots(
            tx.session,
            product_code=body.product,
            fab_code=body.fab,
            route_code=body.route,
            count=body.count,
            wafer_count=body.wafer_count,
            lot_type=body.lot_type,
            priority_class=body.priority_class,
            due_at=body.due_at,
            code=None,
            carrier_code=None,
            actor=tx.by,
            clock=tx.clock,
        )
        found = await service.lots_by_codes(tx.session, [lot.code for lot in lots])
        return s.LotList(lots=[lot_read(lot) for lot in found])

    return await tx.run(start)


@router.post("/{lot}/track-in", response_model=s.TrackInResult)
async def track_in(lot: CodePath, body: s.TrackIn, tx: Mover) -> Answer:
    """Put the lot on a tool; answers the recipe version and parameters to run. An engineering
    lot runs on a tool in ENG, or on a recipe version not approved or not qualified there, only
    with ``engineering`` signed by an engineer (``lot.engineering_signature_required``,
    ``lot.signer_not_engineer``); other lots never do (``tool.engineering_only``,
    ``lot.not_engineering``)."""
    engineering = None
    if body.engineering is not None:
        release = type_rules.Release(
            signed_by=tx.by.username, signer_is_engineer=Role.ENGINEER in tx.by.roles
        )
        engineering = c.EngineeringRun(release, body.engineering.recipe_version)
    command = c.TrackIn(
        tool=body.tool,
        version=tx.version(body.version),
        step_sequence=body.step_sequence,
        chambers=tuple(body.chambers) if body.chambers else None,
        engineering=engineering,
        qtime_gate_override=body.qtime_gate_override.reason if body.qtime_gate_override else None,
    )

    async def move() -> s.TrackInResult:
        if body.engineering is not None:
            # The signer is the caller: an engineer releases the run by tracking it in.
            await tx.sign(body.engineering.signature)
        if body.qtime_gate_override is not None:
            await tx.sign(body.qtime_gate_override)
        moved, tool, recipe, chambers = await service.track_in(
            tx.session, lot, command, actor=tx.by, clock=tx.clock
        )
        return s.TrackInResult(
            # Changed through the ORM only: the answer comes from the session's row.
            lot=await service.moved_lot_answer(tx.session, moved),
            tool=tool.code,
            recipe=s.RecipeToRun(
                name=recipe.recipe.name,
                version=recipe.version,
                checksum=recipe.checksum,
                body=recipe.body,
            ),
            chambers=chambers,
        )

    return await tx.run(move)


@router.post("/{lot}/track-out", response_model=s.LotRead)
async def track_out(lot: CodePath, body: s.TrackOut, tx: Mover) -> Answer:
    """Take the lot off its tool: next step (sampling applied), rework, or completion. The
    values of the step's data collection plan come along (``edc``): a required one missing
    refuses the track-out (``edc.missing_values``), as does a value of the wrong kind or unit
    (``edc.invalid_value``); out-of-spec or out-of-control values hold the lot at the step."""
    command = c.TrackOut(
        version=tx.version(body.version),
        wafers_processed=body.wafers_processed,
        outcome=body.outcome,
        measurements=tuple(
            c.Measurement(name=m.name, values=tuple(m.values), unit=m.unit)
            for m in body.measurements
        ),
        readings=tuple(
            c.Reading(
                parameter=r.parameter,
                value=r.value,
                unit=r.unit,
                slot=r.slot,
                site=r.site,
                chamber=r.chamber,
            )
            for r in body.edc
        ),
    )

    async def by_hand() -> Lot:
        moved = await service.track_out(tx.session, lot, command, actor=tx.by, clock=tx.clock)
        # Asked after the track-out, which holds the lot's lock: a job being created for the
        # lot has either committed (and is seen here) or waits for us.
        job = await jobs_service.open_job_of(tx.session, lot)
        if job is not None:
            raise RuleViolation(
                "lot.job_open",
                f"lot {lot} runs in job {job}, which tracks it out when the tool ends it; "
                "abort the job to take the lot off by hand",
            )
        return moved

    return await tx.run_lot(by_hand, from_session=True)


@router.post("/{lot}/cancel-track-in", response_model=s.LotRead)
async def cancel_track_in(lot: CodePath, body: s.CancelTrackInRequest, tx: Canceller) -> Answer:
    """Undo a track-in made by mistake (supervisor, e-signature): the lot is Waiting at its step
    again, the tool's state and the wafer and reticle counts are given back, the Q-time windows
    the track-in met are open again. Refused once a job for the lot has gone to the tool."""

    async def signed() -> Lot:
        await tx.sign(body.signature)
        cancelled = await service.abort_run(
            tx.session,
            lot,
            event_type="TRACK_IN_CANCELLED",
            reason=body.signature.reason,
            hold=False,
            actor=tx.by,
            clock=tx.clock,
            reopen_qtime=True,
            version=tx.version(body.version),
        )
        # Asked after, under the lot's lock: a job being created for the lot has either
        # committed (and is seen here, refusing and rolling back the cancel) or waits for us.
        job = await jobs_service.open_job_of(tx.session, lot)
        if job is not None:
            raise RuleViolation(
                "lot.job_open",
                f"lot {lot} is in job {job}: abort the job instead (before it is sent, that "
                "withdraws it; once the tool has it, the tool decides what was processed)",
            )
        return cancelled

    return await tx.run_lot(signed)
