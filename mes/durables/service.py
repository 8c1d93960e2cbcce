"""Durables: carriers (FOUPs) with their cleaning cycle; reticles and probe cards with their
location, use counter and limit (rules in ``rules.py``); and what a track-in reserves on the
tool (``admit_lot``: the equipment's checks, then the recipe's reticle)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.audit.context import context_of
from mes.clock import Clock
from mes.durables import rules
from mes.durables.models import Carrier, CarrierState, Durable
from mes.durables.schemas import CarrierCreate, DurableCreate, DurableMove, DurableStateChange
from mes.equipment import service as equipment_service
from mes.equipment.models import Equipment, LoadPort
from mes.errors import Conflict, RuleViolation
from mes.fabs import service as fabs_service
from mes.fabs.models import Fab
from mes.kit.lookup import get_by_key


@dataclass(frozen=True)
class CarrierFilter:
    fab: str | None = None
    state: CarrierState | None = None


CARRIER_OPTIONS = (
    selectinload(Carrier.fab),
    selectinload(Carrier.load_port).selectinload(LoadPort.equipment),
)


def carrier_query(flt: CarrierFilter) -> Select[Carrier]:
    stmt = select(Carrier).options(*CARRIER_OPTIONS).order_by(Carrier.code)
    if flt.fab is not None:
        stmt = stmt.join(Fab, Fab.id == Carrier.fab_id).where(Fab.code == flt.fab)
    if flt.state is not None:
        stmt = stmt.where(Carrier.state == flt.state)
    return stmt


async def get_carrier(session: AsyncSession, code: str, *, for_update: bool = False) -> Carrier:
    """The carrier ``code``, or carrier.not_found."""
    return await get_by_key(
        session,
        Carrier,
        Carrier.code,
        code,
        code="carrier.not_found",
        what="carrier",
        options=CARRIER_OPTIONS,
        for_update=for_update,
    )


async def create_carrier(session: AsyncSession, data: CarrierCreate) -> Carrier:
    """Register a carrier in a fab."""
    if await session.scalar(select(Carrier.id).where(Carrier.code == data.code)) is not None:
        raise Conflict(f"carrier {data.code!r} already exists", code="carrier.duplicate")
    fab = await fabs_service.get_fab(session, data.fab)
    carrier = Carrier(
        code=data.code,
        fab=fab,
        capacity=data.capacity,
        location=rules.CarrierLocation.STOCKER,
        stocker=data.stocker,
    )
    session.add(carrier)
    await session.flush()
    return carrier


async def clean_carrier(session: AsyncSession, code: str, *, clock: Clock) -> Carrier:
    """Record a cleaning cycle: a dirty (or available) carrier becomes available again."""
    carrier = await get_carrier(session, code, for_update=True)
    if carrier.state not in (CarrierState.DIRTY, CarrierState.AVAILABLE):
        raise RuleViolation(
            "carrier.not_cleanable", f"carrier {code} is {carrier.state.value}; empty it first"
        )
    carrier.state = CarrierState.AVAILABLE
    carrier.uses_since_clean = 0
    carrier.cleanings += 1
    carrier.last_cleaned_at = clock.now()
    await session.flush()
    return carrier


def carrier_view(carrier: Carrier) -> rules.CarrierView:
    return rules.CarrierView(
        code=carrier.code,
        fab_id=carrier.fab_id,
        capacity=carrier.capacity,
        available=carrier.state == CarrierState.AVAILABLE,
        location=carrier.location,
    )


async def claim_carrier(
    session: AsyncSession, fab_id: int, code: str | None, wafers: int
) -> tuple[Carrier, bool]:
    """An empty, clean carrier for a lot of ``wafers`` wafers in ``fab_id``, marked in use:
    carrier ``code``, or when None the one ``rules.choose_free`` takes. Also answers whether
    the MES chose it (the caller's event says so)."""
    if code is not None:
        carrier = await get_carrier(session, code, for_update=True)
        rules.check_claim(carrier_view(carrier), fab_id, wafers)
        chosen = False
    else:
        # SKIP LOCKED: a carrier another transaction is claiming is passed over, so two splits
        # at once take two carriers instead of the second finding none after the wait.
        free = list(
            await session.scalars(
                select(Carrier)
                .where(
                    Carrier.fab_id == fab_id,
                    Carrier.state == CarrierState.AVAILABLE,
                    Carrier.location == rules.CarrierLocation.STOCKER,
                    Carrier.capacity >= wafers,
                )
                .order_by(Carrier.code)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
        )
        picked = rules.choose_free([carrier_view(c) for c in free], fab_id, wafers)
        carrier = next(c for c in free if c.code == picked.code)
        chosen = True
    carrier.state = CarrierState.IN_USE
    return carrier, chosen


# --- reticles and probe cards -------------------------------------------------------------

DURABLE_OPTIONS = (
    selectinload(Durable.fab),
    selectinload(Durable.equipment),
    selectinload(Durable.tool_group),
)


@dataclass(frozen=True)
class DurableFilter:
    fab: str | None = None
    design: str | None = None
    tool: str | None = None
    kind: rules.DurableKind | None = None


def durable_query(flt: DurableFilter) -> Select[Durable]:
    stmt = select(Durable).options(*DURABLE_OPTIONS).order_by(Durable.code)
    if flt.fab is not None:
        stmt = stmt.join(Fab, Fab.id == Durable.fab_id).where(Fab.code == flt.fab)
    if flt.design is not None:
        stmt = stmt.where(Durable.design == flt.design)
    if flt.kind is not None:
        stmt = stmt.where(Durable.kind == flt.kind)
    if flt.tool is not None:
        stmt = stmt.join(Equipment, Equipment.id == Durable.equipment_id).where(
            Equipment.code == flt.tool
        )
    return stmt


async def get_durable(session: AsyncSession, code: str, *, for_update: bool = False) -> Durable:
    """The reticle or probe card ``code``, or durable.not_found."""
    return await get_by_key(
        session,
        Durable,
        Durable.code,
        code,
        code="durable.not_found",
        what="durable",
        options=DURABLE_OPTIONS,
        for_update=for_update,
    )


def view(d: Durable) -> rules.DurableView:
    return rules.DurableView(
        code=d.code,
        kind=d.kind,
        state=d.state,
        location=d.location,
        equipment_id=d.equipment_id,
        usage_count=d.usage_count,
        usage_limit=d.usage_limit,
    )


async def create_durable(session: AsyncSession, data: DurableCreate, *, clock: Clock) -> Durable:
    """Register a reticle or probe card; it starts in the library."""
    if await session.scalar(select(Durable.id).where(Durable.code == data.code)) is not None:
        raise Conflict(f"durable {data.code!r} already exists", code="durable.duplicate")
    fab = await fabs_service.get_fab(session, data.fab)
    group = (
        None
        if data.tool_group is None
        else await fabs_service.get_tool_group(session, data.tool_group)
    )
    durable = Durable(
        code=data.code,
        design=data.design,
        kind=data.kind,
        fab_id=fab.id,
        tool_group_id=None if group is None else group.id,
        state=rules.DurableState.AVAILABLE,
        location=rules.DurableLocation.LIBRARY,
        usage_count=0,
        usage_limit=data.usage_limit,
        location_since=clock.now(),
    )
    session.add(durable)
    await session.flush()
    return await get_durable(session, data.code)


async def move_durable(
    session: AsyncSession, code: str, data: DurableMove, *, clock: Clock
) -> Durable:
    """Move a reticle or probe card to the library, a tool of its fab (and group) or cleaning."""
    durable = await get_durable(session, code, for_update=True)
    tool: Equipment | None = None
    if data.tool is not None:
        tool = await get_by_key(
            session, Equipment, Equipment.code, data.tool, code="tool.not_found", what="tool"
        )
    rules.check_move(view(durable), data.to, None if tool is None else tool.id)
    if tool is not None:
        if tool.fab_id != durable.fab_id:
            raise RuleViolation("durable.other_fab", f"{code} belongs to another fab's library")
        if durable.tool_group_id is not None and tool.tool_group_id != durable.tool_group_id:
            raise RuleViolation("durable.wrong_group", f"{code} does not fit tool {tool.code}")
    durable.location = data.to
    durable.equipment = tool
    durable.location_since = clock.now()
    await session.flush()
    return await get_durable(session, code)


async def change_durable_state(
    session: AsyncSession, code: str, data: DurableStateChange
) -> Durable:
    """Hold, release or retire a reticle or probe card (optionally resetting its counter)."""
    durable = await get_durable(session, code, for_update=True)
    context = context_of(session.sync_session)
    if context is not None:
        context.reason = data.reason  # the audit record of the change says why
    if durable.state == rules.DurableState.RETIRED:
        raise RuleViolation("durable.retired", f"{code} is retired")
    durable.state = data.state
    if data.reset_usage:
        durable.usage_count = 0
    if data.usage_limit is not None:
        durable.usage_limit = data.usage_limit
    await session.flush()
    return await get_durable(session, code)


# --- track-in --------------------------------------------------------------------------------


def reticle_of(recipe_body: dict[str, Any]) -> str | None:
    """The reticle a recipe names (parameter ``reticle``), if any."""
    for parameter in recipe_body.get("parameters", []):
        if parameter.get("name") == "reticle" and isinstance(parameter.get("value"), str):
            return str(parameter["value"])
    return None


async def reserve_reticle(
    session: AsyncSession, tool: Equipment, *, recipe_body: dict[str, Any], wafers: int
) -> Durable | None:
    """The copy of the recipe's reticle at the locked ``tool`` and under its limit, with its
    uses counted; None when the recipe needs no reticle."""
    design = reticle_of(recipe_body)
    if design is None:
        return None
    # No autoflush: the tool's counters just changed (admit_lot) and would be flushed here, a
    # second UPDATE of the tool and a second audit record in the same move; they do not bear
    # on which reticle is chosen, and the move's own flush writes them.
    copies = list(
        await session.scalars(
            select(Durable)
            .where(Durable.design == design)
            .order_by(Durable.id)
            .with_for_update(key_share=True)
            .execution_options(autoflush=False)
        )
    )
    chosen = rules.choose(design, [view(d) for d in copies], tool.id, tool.code, wafers)
    reticle = next(d for d in copies if d.code == chosen.code)
    reticle.usage_count += wafers
    return reticle


async def give_back_uses(session: AsyncSession, reticle_code: str, wafers: int) -> None:
    """Uses counted for wafers that were never exposed (the run did not happen)."""
    reticle = await session.scalar(
        select(Durable).where(Durable.code == reticle_code).with_for_update(key_share=True)
    )
    if reticle is not None:
        reticle.usage_count = max(0, reticle.usage_count - wafers)


async def admit_lot(
    session: AsyncSession,
    tool: Equipment,
    *,
    recipe_body: dict[str, Any],
    wafers: int,
    now: datetime,
) -> Durable | None:
    """The equipment and durables side of a track-in on the locked ``tool``: no PM due, the
    recipe's reticle at the tool and under its limit. Counts the wafers on the tool and the
    reticle's uses.

    Uses are counted at track-in, not track-out: the check and the count then happen under the
    same tool lock, so two lots can never both pass a reticle's last uses.
    """
    await equipment_service.admit_lot(session, tool, wafers=wafers, now=now)
    return await reserve_reticle(session, tool, recipe_body=recipe_body, wafers=wafers)
