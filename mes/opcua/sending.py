"""The adapter's outbox calls: send a requested job to the tool (recipe download, checksum
check, select, StoreAndStart) and carry out operator commands (abort, pause, resume).

A mixin of ``ToolAdapter``: the intent is committed before anything reaches the tool, and a
definite refusal fails the job, while a lost answer leaves it ``sent`` for reconciliation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from mes.clock import Clock
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.durables.models import Carrier
from mes.jobs.models import EquipmentJob, EquipmentJobLot
from mes.jobs.states import JobCommand
from mes.lots.models import Lot, LotEvent, Wafer
from mes.lots.states import WaferState
from mes.opcua import mapping
from mes.opcua import service as opcua_service
from mes.opcua.client import ToolRefused, ToolSession
from mes.opcua.model import ControlState
from mes.opcua.service import ToolRef

log = logging.getLogger("mes.opcua.adapter")


@dataclass(frozen=True)
class _JobToSend:
    job_order_id: str
    recipe_id: str
    body: dict[str, Any]
    checksum: str
    document: str
    # Why the job cannot be sent as one order (its lots share no chamber), if so.
    refusal: str | None = None
    # carrier -> the slots the MES holds wafers in, for the carriers of the job's lots
    carrier_slots: dict[str, frozenset[int]] = field(default_factory=dict)


class JobSender:
    """Outbox work of one tool's adapter (state owned by ``ToolAdapter``)."""

    db: Database
    tool: ToolRef
    clock: Clock
    settings: Any

    async def _do_work(self, session: ToolSession, job_order_id: str) -> None:
        async with unit_of_work(self.db, write=False) as db_session:
            job = (
                await db_session.scalars(
                    select(EquipmentJob).where(EquipmentJob.job_order_id == job_order_id)
                )
            ).one_or_none()
            if job is None:
                return
            status, command = job.status.value, job.command
        if status == "requested":
            await self._send(session, job_order_id)
        elif command is not None:
            await self._command(session, job_order_id, command)

    async def _send(self, session: ToolSession, job_order_id: str) -> None:
        # 1. The intent, committed before anything reaches the tool.
        async with unit_of_work(self.db) as db_session:
            now = self.clock.now()
            opcua_service.bind_adapter(db_session, self.tool, "opcua.send_job", now)
            job = await opcua_service.claim_send(
                db_session, self.tool, job_order_id, self.settings.owner, now
            )
            if job is None:
                return
            order = await _job_to_send(db_session, job)
        # 2. The calls. A Bad status is a definite refusal (the job fails, the lot goes back);
        # a lost connection leaves the job ``sent`` for reconciliation to settle.
        try:
            if order.refusal is not None:
                raise ToolRefused(order.refusal)
            control = await session.read("ControlState")
            if control != ControlState.ONLINE_REMOTE:
                raise ToolRefused(f"tool.not_remote: the tool is {control}, not OnlineRemote")
            held = await session.recipe_checksums()
            if order.recipe_id not in held:
                await session.download_recipe(order.recipe_id, order.body, order.checksum)
            reported = await session.recipe_checksum(order.recipe_id)
            if reported.lower() != order.checksum.lower():
                raise ToolRefused(
                    f"recipe.checksum_mismatch: tool reports {reported} for {order.recipe_id}, "
                    f"the approved version has {order.checksum}; job not started"
                )
            await _check_slot_maps(session, order)
            await session.select_recipe(order.recipe_id)
            await session.store_and_start(order.document, f"MES job {job_order_id}")
        except ToolRefused as exc:
            log.warning("%s: job %s refused: %s", self.tool.code, job_order_id, exc)
            async with unit_of_work(self.db) as db_session:
                opcua_service.bind_adapter(
                    db_session, self.tool, "opcua.job_refused", self.clock.now()
                )
                await opcua_service.fail_job(
                    db_session, self.tool, job_order_id, str(exc), clock=self.clock
                )

    async def _command(self, session: ToolSession, job_order_id: str, command: JobCommand) -> None:
        method = {JobCommand.ABORT: "Abort", JobCommand.PAUSE: "Pause", JobCommand.RESUME: "Resume"}
        error = None
        try:
            await session.job_command(method[command], job_order_id, "MES request")
        except ToolRefused as exc:
            error = f"{command.value} refused: {exc}"
        async with unit_of_work(self.db) as db_session:
            opcua_service.bind_adapter(db_session, self.tool, "opcua.job_command", self.clock.now())
            await opcua_service.clear_command(db_session, job_order_id, error)


async def _job_to_send(session: Any, job: EquipmentJob) -> _JobToSend:
    lots = list(
        await session.scalars(
            select(Lot)
            .options(selectinload(Lot.wafers), selectinload(Lot.carrier))
            .join(EquipmentJobLot, EquipmentJobLot.lot_id == Lot.id)
            .where(EquipmentJobLot.job_id == job.id)
            .order_by(EquipmentJobLot.position)
        )
    )
    carrier_ids = {lot.carrier_id for lot in lots if lot.carrier_id is not None}
    held = await session.execute(
        select(Carrier.code, Wafer.slot)
        .join(Lot, Lot.carrier_id == Carrier.id)
        .join(Wafer, Wafer.lot_id == Lot.id)
        .where(
            Carrier.id.in_(carrier_ids),
            Wafer.state == WaferState.ACTIVE,
            Wafer.slot.is_not(None),
        )
    )
    carrier_slots: dict[str, set[int]] = {
        lot.carrier.code: set() for lot in lots if lot.carrier is not None
    }
    for carrier_code, slot in held.all():
        carrier_slots[carrier_code].add(slot)
    version = job.recipe_version
    recipe_id = mapping.tool_recipe_id(version.recipe.name, version.version)
    chambers = mapping.job_chambers(await _chambers_checked(session, job, lots))
    return _JobToSend(
        job_order_id=job.job_order_id,
        recipe_id=recipe_id,
        body=dict(version.body),
        checksum=version.checksum,
        document=mapping.job_order_document(
            job.job_order_id,
            recipe_id,
            [
                mapping.JobOrderLot(
                    lot.code,
                    lot.carrier.code if lot.carrier is not None else None,
                    sorted((w.slot, w.scribe_id) for w in lot.wafers if _active_wafer(w)),
                )
                for lot in lots
            ],
            chambers or (),
        ),
        refusal=None
        if chambers is not None
        else "job.chambers_conflict: the lots of the job were tracked in for different chambers",
        carrier_slots={c: frozenset(slots) for c, slots in carrier_slots.items()},
    )


async def _chambers_checked(session: Any, job: EquipmentJob, lots: list[Lot]) -> list[list[str]]:
    """Per lot, the chambers its track-in for this job checked and recorded (qualification
    and context are per chamber, so the tool must run the lot in those only)."""
    rows = await session.execute(
        select(LotEvent.lot_id, LotEvent.after)
        .where(
            LotEvent.lot_id.in_([lot.id for lot in lots]),
            LotEvent.event_type == "TRACK_IN",
            LotEvent.equipment_id == job.equipment_id,
            LotEvent.step_id == job.step_id,
        )
        .order_by(LotEvent.id)
    )
    latest: dict[int, list[str]] = {}
    for lot_id, after in rows.all():  # the last track-in of each lot wins
        latest[lot_id] = list((after or {}).get("chambers") or [])
    return [latest.get(lot.id, []) for lot in lots]


async def _check_slot_maps(session: ToolSession, order: _JobToSend) -> None:
    """E87 slot-map verification before the job starts: each of the job's carriers that the
    tool has on a load port must hold wafers exactly where the MES has them. A mismatch (a
    wafer missing, one too many, one in the wrong slot) refuses the job before it runs."""
    if not order.carrier_slots:
        return
    try:
        reported = await session.carriers_on_ports()
    except ValueError as exc:
        raise ToolRefused(f"carrier.slot_map_unreadable: {exc}; job not started") from exc
    if reported is None:
        return  # a tool model without load ports: nothing to compare
    mismatches = mapping.slot_map_mismatches(dict(order.carrier_slots), reported)
    if mismatches:
        raise ToolRefused(
            "carrier.slot_map_mismatch: "
            + "; ".join(str(m) for m in mismatches)
            + "; job not started"
        )


def _active_wafer(wafer: Wafer) -> bool:
    return wafer.state == WaferState.ACTIVE
