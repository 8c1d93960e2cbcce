"""Carriers: slot maps, moves between stockers and load ports (E87), lots into carriers, sorter
jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.carriers import schemas as s
from mes.carriers import service, sorter
from mes.carriers.models import SorterJob, SorterJobKind
from mes.db.transaction import ReadSession, WriteSession
from mes.durables import service as durables_service
from mes.equipment.models import LoadPort, LoadPortTransferState
from mes.errors import NotFound, RuleViolation
from mes.fabs.models import Fab
from mes.kit.api import ClockDep, CodePath, CodeStr, Page, PageQuery, fetch_page
from mes.lots.http import Answer, LotWrite, lot_write
from mes.lots.models import Lot

router = APIRouter(tags=["carriers"])

Mover = Annotated[Principal, requires(roles.CARRIER_MOVE)]
PortKeeper = Annotated[Principal, requires(roles.LOAD_PORT_SERVICE)]
Sorter = Annotated[LotWrite, lot_write(roles.SORTER_RUN)]
PortNumber = Annotated[int, Path(ge=1, le=16)]


@router.get("/carriers/{carrier}/slot-map", response_model=s.SlotMapRead)
async def slot_map(carrier: CodePath, session: ReadSession) -> s.SlotMapRead:
    """What the carrier holds: per slot, the wafer and its lot (None: empty)."""
    found = await durables_service.get_carrier(session, carrier)
    entries = {e.slot: e for e in await service.slot_map(session, found)}
    return s.SlotMapRead(
        carrier=found.code,
        capacity=found.capacity,
        lots=await service.lots_in(session, found.id),
        slots=[
            None if e is None else s.SlotRead(slot=e.slot, wafer=e.wafer, lot=e.lot)
            for e in (entries.get(n) for n in range(1, found.capacity + 1))
        ],
    )


@router.post("/carriers/{carrier}/move", response_model=s.SlotMapRead)
async def move_carrier(
    carrier: CodePath, body: s.CarrierMove, _by: Mover, session: WriteSession, clock: ClockDep
) -> s.SlotMapRead:
    """Put a carrier into a stocker or into transit (a carrier on a port: unload the port)."""
    await service.move_carrier(session, carrier, body.to, body.stocker, clock=clock)
    return await slot_map(carrier, session)


# --- load ports --------------------------------------------------------------------------------


async def _ports_read(session: AsyncSession, tool: str) -> list[s.LoadPortRead]:
    found, ports = await service.tool_ports(session, tool)
    docked = await service.carriers_on(session, [p.id for p in ports])
    return [
        s.LoadPortRead(
            tool=found.code,
            port_number=p.port_number,
            transfer_state=p.transfer_state,
            in_service=p.transfer_state != LoadPortTransferState.OUT_OF_SERVICE,
            carrier=docked[p.id].code if p.id in docked else None,
        )
        for p in ports
    ]


async def _port_read(session: AsyncSession, tool: str, port: LoadPort) -> s.LoadPortRead:
    return next(p for p in await _ports_read(session, tool) if p.port_number == port.port_number)


@router.get("/tools/{tool}/load-ports", response_model=list[s.LoadPortRead])
async def load_ports(tool: CodePath, session: ReadSession) -> list[s.LoadPortRead]:
    """The tool's load ports: E87 transfer state, in service or not, the carrier docked."""
    return await _ports_read(session, tool)


@router.post("/tools/{tool}/load-ports/{port}/load", response_model=s.LoadPortRead)
async def load(
    tool: CodePath,
    port: PortNumber,
    body: s.PortLoad,
    _by: Mover,
    session: WriteSession,
    clock: ClockDep,
) -> s.LoadPortRead:
    """Place a carrier on a ready-to-load port (it becomes transfer blocked)."""
    _, found = await service.load(session, tool, port, body.carrier, clock=clock)
    return await _port_read(session, tool, found)


@router.post("/tools/{tool}/load-ports/{port}/ready-to-unload", response_model=s.LoadPortRead)
async def ready_to_unload(
    tool: CodePath, port: PortNumber, _by: Mover, session: WriteSession
) -> s.LoadPortRead:
    """The tool is done with the docked carrier (none of its lots is on the tool)."""
    _, found = await service.ready_to_unload(session, tool, port)
    return await _port_read(session, tool, found)


@router.post("/tools/{tool}/load-ports/{port}/unload", response_model=s.LoadPortRead)
async def unload(
    tool: CodePath,
    port: PortNumber,
    body: s.PortUnload,
    _by: Mover,
    session: WriteSession,
    clock: ClockDep,
) -> s.LoadPortRead:
    """Take the carrier off a ready-to-unload port into transit or a stocker."""
    _, found, _carrier = await service.unload(
        session, tool, port, body.to, body.stocker, clock=clock
    )
    return await _port_read(session, tool, found)


@router.post("/tools/{tool}/load-ports/{port}/service", response_model=s.LoadPortRead)
async def port_service(
    tool: CodePath, port: PortNumber, body: s.PortService, _by: PortKeeper, session: WriteSession
) -> s.LoadPortRead:
    """Take an empty port out of service, or bring it back into service (ready to load)."""
    _, found = await service.set_service(session, tool, port, body.in_service, body.reason)
    return await _port_read(session, tool, found)


# --- lots into carriers, sorter jobs -------------------------------------------------------


@router.post("/lots/{lot}/carrier", response_model=s.SorterJobResult)
async def assign_carrier(lot: CodePath, body: s.LotCarrierRequest, tx: Sorter) -> Answer:
    """Put a lot into an empty carrier with a slot map; a lot in a carrier already is
    transferred (a sorter job, in the answer)."""

    async def assigned() -> s.SorterJobResult:
        found, job = await sorter.assign(
            tx.session,
            lot,
            body.carrier,
            body.slots,
            version=tx.version(body.version),
            actor=tx.by,
            clock=tx.clock,
        )
        return await _result(tx, job, [found.code])

    return await tx.run(assigned)


def _need(value: object, field: str, kind: SorterJobKind) -> None:
    if value is None:
        raise RuleViolation(
            "sorter.invalid_request", f"a {kind.value} sorter job needs {field}", status=422
        )


@router.post("/sorter-jobs", response_model=s.SorterJobResult, status_code=status.HTTP_201_CREATED)
async def run_sorter_job(body: s.SorterJobRequest, tx: Sorter) -> Answer:
    """Run a sorter job as one transaction: `transfer` (the lot into `carrier`), `reslot`
    (`slots` within its carrier), `split` (`wafers` into a child lot in `carrier`, or a free
    carrier the MES chooses) or `merge` (lot `source` into the lot's carrier)."""
    version = tx.version(body.version)

    async def sorted_() -> s.SorterJobResult:
        if body.kind == SorterJobKind.TRANSFER:
            _need(body.carrier, "carrier", body.kind)
            assert body.carrier is not None
            lot, job = await sorter.assign(
                tx.session,
                body.lot,
                body.carrier,
                body.slots,
                version=version,
                actor=tx.by,
                clock=tx.clock,
            )
            if job is None:
                raise RuleViolation(
                    "carrier.lot_without_carrier",
                    f"lot {body.lot} is in no carrier: assign it (POST /lots/{{lot}}/carrier)",
                )
            return await _result(tx, job, [lot.code])
        if body.kind == SorterJobKind.RESLOT:
            _need(body.slots, "slots", body.kind)
            assert body.slots is not None
            lot, job = await sorter.reslot(
                tx.session, body.lot, body.slots, version=version, actor=tx.by, clock=tx.clock
            )
            return await _result(tx, job, [lot.code])
        if body.kind == SorterJobKind.SPLIT:
            _need(body.wafers, "wafers", body.kind)
            assert body.wafers is not None
            parent, child, job = await sorter.split(
                tx.session,
                body.lot,
                body.wafers,
                body.carrier,
                body.slots,
                version=version,
                actor=tx.by,
                clock=tx.clock,
            )
            return await _result(tx, job, [parent.code, child.code])
        _need(body.source, "source", body.kind)
        assert body.source is not None
        target, job = await sorter.merge(
            tx.session, body.lot, body.source, version=version, actor=tx.by, clock=tx.clock
        )
        return await _result(tx, job, [target.code, body.source])

    return await tx.run(sorted_)


_JOB_OPTIONS = (
    selectinload(SorterJob.fab),
    selectinload(SorterJob.lot),
    selectinload(SorterJob.other_lot),
    selectinload(SorterJob.source_carrier),
    selectinload(SorterJob.target_carrier),
)


def job_read(job: SorterJob) -> s.SorterJobRead:
    return s.SorterJobRead(
        id=job.id,
        kind=job.kind,
        fab=job.fab.code,
        lot=job.lot.code,
        other_lot=None if job.other_lot is None else job.other_lot.code,
        source_carrier=None if job.source_carrier is None else job.source_carrier.code,
        target_carrier=None if job.target_carrier is None else job.target_carrier.code,
        moves=[
            s.SorterMove(
                wafer=m[0], from_carrier=m[1], from_slot=m[2], to_carrier=m[3], to_slot=m[4]
            )
            for m in job.moves
        ],
        requested_by=job.requested_by,
        completed_at=job.completed_at,
    )


async def _job(session: AsyncSession, job_id: int) -> SorterJob:
    job = await session.scalar(
        select(SorterJob).options(*_JOB_OPTIONS).where(SorterJob.id == job_id)
    )
    if job is None:
        raise NotFound(f"sorter job {job_id} does not exist", code="sorter.not_found")
    return job


async def _result(tx: LotWrite, job: SorterJob | None, lots: list[str]) -> s.SorterJobResult:
    await tx.session.flush()
    read = None if job is None else job_read(await _job(tx.session, job.id))
    return s.SorterJobResult(job=read, lots=[await tx.read(code) for code in lots])


@router.get("/sorter-jobs", response_model=Page[s.SorterJobRead])
async def list_sorter_jobs(
    session: ReadSession,
    page: PageQuery,
    fab: Annotated[CodeStr | None, Query()] = None,
    lot: Annotated[CodeStr | None, Query()] = None,
) -> Page[s.SorterJobRead]:
    """Sorter jobs, newest first, filterable by fab and by a lot they moved wafers of."""
    stmt = select(SorterJob).options(*_JOB_OPTIONS).order_by(SorterJob.id.desc())
    if fab is not None:
        stmt = stmt.join(Fab, Fab.id == SorterJob.fab_id).where(Fab.code == fab)
    if lot is not None:
        ids = select(Lot.id).where(Lot.code == lot).scalar_subquery()
        stmt = stmt.where((SorterJob.lot_id == ids) | (SorterJob.other_lot_id == ids))
    rows, total = await fetch_page(session, stmt, page)
    return Page(items=[job_read(j) for j in rows], total=total, **page.model_dump())


@router.get("/sorter-jobs/{job_id}", response_model=s.SorterJobRead)
async def get_sorter_job(
    job_id: Annotated[int, Path(ge=1, le=2**62)], session: ReadSession
) -> s.SorterJobRead:
    """One sorter job."""
    return job_read(await _job(session, job_id))
