"""Carriers where they are: stockers, transit, the load ports of tools (E87), and what a carrier
holds (its slot map). The rules are in ``rules``; lots into carriers and sorter jobs in
``sorter``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.context import context_of
from mes.carriers import rules
from mes.clock import Clock
from mes.durables import service as durables_service
from mes.durables.models import Carrier, CarrierState
from mes.durables.rules import CarrierLocation
from mes.equipment.models import Equipment, LoadPort, LoadPortTransferState
from mes.errors import NotFound, RuleViolation
from mes.kit.lookup import get_by_key
from mes.lots.models import Lot, Wafer
from mes.lots.states import WaferState


@dataclass(frozen=True)
class SlotEntry:
    slot: int
    wafer: str
    lot: str


async def slot_map(session: AsyncSession, carrier: Carrier) -> list[SlotEntry]:
    """What the MES holds in the carrier: per occupied slot, the wafer and its lot."""
    rows = await session.execute(
        select(Wafer.slot, Wafer.scribe_id, Lot.code)
        .join(Lot, Lot.id == Wafer.lot_id)
        .where(
            Lot.carrier_id == carrier.id,
            Wafer.state == WaferState.ACTIVE,
            Wafer.slot.is_not(None),
        )
        .order_by(Wafer.slot)
    )
    return [SlotEntry(slot or 0, wafer, lot) for slot, wafer, lot in rows.all()]  # slot: not None


async def lots_in(session: AsyncSession, carrier_id: int) -> list[str]:
    return list(
        await session.scalars(
            select(Lot.code).where(Lot.carrier_id == carrier_id).order_by(Lot.code)
        )
    )


# --- carriers moving -------------------------------------------------------------------------


async def move_carrier(
    session: AsyncSession,
    code: str,
    to: CarrierLocation,
    stocker: str | None,
    *,
    clock: Clock,
) -> Carrier:
    """Put a carrier into a stocker (named or not) or into transit; a carrier on a load port
    leaves it through ``unload``."""
    if to == CarrierLocation.LOAD_PORT:
        raise RuleViolation(
            "carrier.invalid_move", "a carrier reaches a load port by loading the port", status=422
        )
    if stocker is not None and to != CarrierLocation.STOCKER:
        raise RuleViolation(
            "carrier.invalid_move", "name a stocker only when moving into one", status=422
        )
    carrier = await durables_service.get_carrier(session, code, for_update=True)
    rules.check_carrier_move(code, carrier.location == CarrierLocation.LOAD_PORT)
    carrier.location = to
    carrier.stocker = stocker
    carrier.location_since = clock.now()
    await session.flush()
    return carrier


# --- load ports --------------------------------------------------------------------------------


async def tool_ports(session: AsyncSession, tool_code: str) -> tuple[Equipment, list[LoadPort]]:
    tool = await get_by_key(
        session, Equipment, Equipment.code, tool_code, code="tool.not_found", what="tool"
    )
    ports = list(
        await session.scalars(
            select(LoadPort).where(LoadPort.equipment_id == tool.id).order_by(LoadPort.port_number)
        )
    )
    return tool, ports


async def carriers_on(session: AsyncSession, port_ids: list[int]) -> dict[int, Carrier]:
    found = await session.scalars(select(Carrier).where(Carrier.load_port_id.in_(port_ids)))
    return {c.load_port_id: c for c in found if c.load_port_id is not None}


async def _lock_port(
    session: AsyncSession, tool_code: str, number: int
) -> tuple[Equipment, LoadPort]:
    tool = await get_by_key(
        session, Equipment, Equipment.code, tool_code, code="tool.not_found", what="tool"
    )
    port = await session.scalar(
        select(LoadPort)
        .where(LoadPort.equipment_id == tool.id, LoadPort.port_number == number)
        .with_for_update()
    )
    if port is None:
        raise NotFound(f"tool {tool_code} has no load port {number}", code="load_port.not_found")
    return tool, port


async def _docked(session: AsyncSession, port: LoadPort) -> Carrier | None:
    return await session.scalar(
        select(Carrier).where(Carrier.load_port_id == port.id).with_for_update()
    )


def _advance(port: LoadPort, action: rules.PortAction, occupied: bool) -> None:
    state = rules.port_transition(
        rules.PortState(port.transfer_state.value), action, occupied=occupied
    )
    port.transfer_state = LoadPortTransferState(state.value)


async def load(
    session: AsyncSession, tool_code: str, number: int, carrier_code: str, *, clock: Clock
) -> tuple[Equipment, LoadPort]:
    """Place and dock a carrier on a ready-to-load port of a tool of its fab."""
    tool, port = await _lock_port(session, tool_code, number)
    carrier = await durables_service.get_carrier(session, carrier_code, for_update=True)
    if carrier.fab_id != tool.fab_id:
        raise RuleViolation(
            "carrier.other_fab", f"carrier {carrier_code} belongs to another fab than {tool_code}"
        )
    if carrier.state == CarrierState.OUT_OF_SERVICE:
        raise RuleViolation("carrier.not_available", f"carrier {carrier_code} is out of service")
    rules.check_carrier_move(carrier_code, carrier.location == CarrierLocation.LOAD_PORT)
    _advance(port, rules.PortAction.LOAD, occupied=await _docked(session, port) is not None)
    carrier.location = CarrierLocation.LOAD_PORT
    carrier.load_port_id = port.id
    carrier.stocker = None
    carrier.location_since = clock.now()
    await session.flush()
    return tool, port


async def ready_to_unload(
    session: AsyncSession, tool_code: str, number: int
) -> tuple[Equipment, LoadPort]:
    """The tool is done with the docked carrier: it may be taken away."""
    tool, port = await _lock_port(session, tool_code, number)
    carrier = await _docked(session, port)
    if carrier is not None:
        running = await session.scalar(
            select(Lot.code).where(Lot.carrier_id == carrier.id, Lot.equipment_id == tool.id)
        )
        if running is not None:
            raise RuleViolation(
                "load_port.carrier_in_process",
                f"lot {running} of carrier {carrier.code} is on {tool_code}",
            )
    _advance(port, rules.PortAction.READY_TO_UNLOAD, occupied=carrier is not None)
    await session.flush()
    return tool, port


async def unload(
    session: AsyncSession,
    tool_code: str,
    number: int,
    to: CarrierLocation,
    stocker: str | None,
    *,
    clock: Clock,
) -> tuple[Equipment, LoadPort, Carrier]:
    """Take the carrier off a ready-to-unload port, into transit or a stocker."""
    if to == CarrierLocation.LOAD_PORT or (stocker is not None and to != CarrierLocation.STOCKER):
        raise RuleViolation(
            "carrier.invalid_move",
            "a carrier leaves a port into transit or a stocker (named only for a stocker)",
            status=422,
        )
    tool, port = await _lock_port(session, tool_code, number)
    carrier = await _docked(session, port)
    if carrier is None:
        raise RuleViolation("load_port.empty", f"no carrier is on port {number} of {tool_code}")
    _advance(port, rules.PortAction.UNLOAD, occupied=True)
    carrier.location = to
    carrier.load_port_id = None
    carrier.stocker = stocker
    carrier.location_since = clock.now()
    await session.flush()
    return tool, port, carrier


async def set_service(
    session: AsyncSession, tool_code: str, number: int, in_service: bool, reason: str
) -> tuple[Equipment, LoadPort]:
    """Take an empty port out of service, or bring it back (ready to load)."""
    tool, port = await _lock_port(session, tool_code, number)
    context = context_of(session.sync_session)
    if context is not None:
        context.reason = reason  # the audit record of the port says why
    occupied = await _docked(session, port) is not None
    action = rules.PortAction.IN_SERVICE if in_service else rules.PortAction.OUT_OF_SERVICE
    _advance(port, action, occupied=occupied)
    await session.flush()
    return tool, port


async def check_at_tool(session: AsyncSession, carrier_ids: set[int], tool: Equipment) -> None:
    """A job's carriers must not be docked on another tool's port: that tool holds them."""
    if not carrier_ids:
        return
    elsewhere = await session.execute(
        select(Carrier.code, Equipment.code)
        .join(LoadPort, LoadPort.id == Carrier.load_port_id)
        .join(Equipment, Equipment.id == LoadPort.equipment_id)
        .where(Carrier.id.in_(carrier_ids), LoadPort.equipment_id != tool.id)
        .order_by(Carrier.code)
    )
    found = elsewhere.first()
    if found is not None:
        raise RuleViolation(
            "carrier.at_other_tool",
            f"carrier {found[0]} is on a load port of {found[1]}, not of {tool.code}",
        )
