"""A tool's E10 history: the state events with the corrections recorded for past time applied,
re-qualification of past time (``qualify_time``), the NO_SIGNAL time nobody has qualified yet,
and the paged event list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.equipment import metrics, states
from mes.equipment.models import Chamber, EquipmentStateCorrection, EquipmentStateEvent
from mes.equipment.schemas import CorrectionCreate
from mes.equipment.tools import chamber_of, get_equipment, validated_substate
from mes.errors import InvalidInput
from mes.kit.api import PageParams, fetch_page


async def history(
    session: AsyncSession,
    tool_id: int,
    chamber_id: int | None,
    start: datetime,
    end: datetime,
) -> list[metrics.Interval]:
    """The tool's (or chamber's) intervals from the last change before ``start`` to ``end``,
    with the corrections recorded for that time applied."""
    owner = (
        EquipmentStateEvent.chamber_id.is_(None)
        if chamber_id is None
        else EquipmentStateEvent.chamber_id == chamber_id
    )
    base = select(
        EquipmentStateEvent.occurred_at, EquipmentStateEvent.to_state, EquipmentStateEvent.substate
    ).where(EquipmentStateEvent.equipment_id == tool_id, owner)
    first = await session.execute(
        base.where(EquipmentStateEvent.occurred_at <= start)
        .order_by(EquipmentStateEvent.occurred_at.desc(), EquipmentStateEvent.id.desc())
        .limit(1)
    )
    rows = list(first.all())
    rows += list(
        (
            await session.execute(
                base.where(
                    EquipmentStateEvent.occurred_at > start, EquipmentStateEvent.occurred_at < end
                ).order_by(EquipmentStateEvent.occurred_at, EquipmentStateEvent.id)
            )
        ).all()
    )
    changes = [(at, state, sub) for at, state, sub in rows]
    if chamber_id is not None and (not changes or changes[0][0] > start):
        # Chambers are installed with their tool, in SBY, without an event of their own.
        installed = await session.scalar(
            select(func.min(EquipmentStateEvent.occurred_at)).where(
                EquipmentStateEvent.equipment_id == tool_id
            )
        )
        if installed is not None and (not changes or installed < changes[0][0]):
            sby = states.E10State.SBY
            changes.insert(0, (installed, sby, states.DEFAULT_SUBSTATE[sby]))
    intervals = metrics.intervals_from_events(changes, end)
    fix_owner = (
        EquipmentStateCorrection.chamber_id.is_(None)
        if chamber_id is None
        else EquipmentStateCorrection.chamber_id == chamber_id
    )
    fixes = await session.scalars(
        select(EquipmentStateCorrection)
        .where(
            EquipmentStateCorrection.equipment_id == tool_id,
            fix_owner,
            EquipmentStateCorrection.end_at > (intervals[0].start if intervals else start),
            EquipmentStateCorrection.start_at < end,
        )
        .order_by(EquipmentStateCorrection.recorded_at, EquipmentStateCorrection.id)
    )
    return metrics.apply_corrections(
        intervals,
        [metrics.Correction(f.start_at, f.end_at, f.state, f.substate) for f in fixes],
    )


async def histories(
    session: AsyncSession,
    tool_ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    scope: Select[Any] | None = None,
) -> dict[int, list[metrics.Interval]]:
    """``history`` of many tools (not chambers) in three queries: each tool's last change at or
    before ``start``, the changes after it, and the corrections of that time.

    ``scope``: a query of ids that includes ``tool_ids`` (a board's fab), used in the SQL
    instead of a thousand bound ids, which SQLAlchemy renders one by one at every execution."""
    if not tool_ids:
        return {}
    ids = list(tool_ids)
    within: Select[Any] | list[int] = scope if scope is not None else ids
    event = EquipmentStateEvent
    before = (
        select(event.equipment_id, func.max(event.occurred_at).label("at"))
        .where(
            event.equipment_id.in_(within), event.chamber_id.is_(None), event.occurred_at <= start
        )
        .group_by(event.equipment_id)
        .subquery()
    )
    columns = (event.equipment_id, event.occurred_at, event.to_state, event.substate)
    first = select(*columns).join(
        before, (before.c.equipment_id == event.equipment_id) & (before.c.at == event.occurred_at)
    )
    later = select(*columns).where(
        event.equipment_id.in_(within),
        event.chamber_id.is_(None),
        event.occurred_at > start,
        event.occurred_at < end,
    )
    changes: dict[int, list[tuple[datetime, states.E10State, str]]] = {i: [] for i in ids}
    # Ordered as ``history`` orders them: by time, then id (the later record wins a tie).
    for stmt in (first.where(event.chamber_id.is_(None)), later):
        for tool_id, at, state, sub in (
            await session.execute(stmt.order_by(event.occurred_at, event.id))
        ).all():
            if tool_id in changes:
                changes[tool_id].append((at, state, sub))
    fixes: dict[int, list[EquipmentStateCorrection]] = {i: [] for i in ids}
    for fix in await session.scalars(
        select(EquipmentStateCorrection)
        .where(
            EquipmentStateCorrection.equipment_id.in_(within),
            EquipmentStateCorrection.chamber_id.is_(None),
            EquipmentStateCorrection.start_at < end,
        )
        .order_by(EquipmentStateCorrection.recorded_at, EquipmentStateCorrection.id)
    ):
        if fix.equipment_id in fixes:
            fixes[fix.equipment_id].append(fix)
    found = {}
    for tool_id in ids:
        intervals = metrics.intervals_from_events(changes[tool_id], end)
        begins = intervals[0].start if intervals else start
        found[tool_id] = metrics.apply_corrections(
            intervals,
            [
                metrics.Correction(f.start_at, f.end_at, f.state, f.substate)
                for f in fixes[tool_id]
                if f.end_at > begins
            ],
        )
    return found


async def qualify_time(
    session: AsyncSession, code: str, data: CorrectionCreate, *, actor: str, clock: Clock
) -> EquipmentStateCorrection:
    """Re-qualify a past interval (e.g. NO_SIGNAL time) by recording a correction."""
    tool = await get_equipment(session, code, for_update=True)
    chamber = chamber_of(tool, data.chamber)
    now = clock.now()
    if data.end_at <= data.start_at:
        raise InvalidInput("the interval must end after it starts", code="tool.invalid_interval")
    if data.end_at > now:
        raise InvalidInput(
            "only past time can be re-qualified; change the state for the present",
            code="tool.future_time",
        )
    try:
        state = states.state_of(data.substate)
    except states.InvalidSubstate as exc:
        raise InvalidInput(str(exc), code="tool.invalid_substate") from exc
    substate = await validated_substate(session, state, data.substate)
    installed = await session.scalar(
        select(func.min(EquipmentStateEvent.occurred_at)).where(
            EquipmentStateEvent.equipment_id == tool.id
        )
    )
    if installed is not None and data.start_at < installed:
        raise InvalidInput(
            "the interval starts before the tool's history", code="tool.invalid_interval"
        )
    fix = EquipmentStateCorrection(
        fab_id=tool.fab_id,
        equipment_id=tool.id,
        chamber_id=None if chamber is None else chamber.id,
        start_at=data.start_at,
        end_at=data.end_at,
        state=state,
        substate=substate,
        recorded_at=now,
        actor=actor,
        reason=data.reason,
    )
    session.add(fix)
    await session.flush()
    return fix


async def corrections(session: AsyncSession, code: str) -> list[EquipmentStateCorrection]:
    """The corrections recorded for a tool, newest first."""
    tool = await get_equipment(session, code)
    return list(
        await session.scalars(
            select(EquipmentStateCorrection)
            .where(EquipmentStateCorrection.equipment_id == tool.id)
            .order_by(
                EquipmentStateCorrection.recorded_at.desc(), EquipmentStateCorrection.id.desc()
            )
        )
    )


async def unexplained_time(
    session: AsyncSession, code: str, *, start: datetime, end: datetime
) -> list[metrics.Interval]:
    """The NO_SIGNAL time in the window that no correction has qualified yet."""
    tool = await get_equipment(session, code)
    return [
        iv
        for iv in metrics.clip(await history(session, tool.id, None, start, end), start, end)
        if iv.substate == states.NO_SIGNAL
    ]


async def state_history(
    session: AsyncSession, code: str, page: PageParams, *, since: datetime | None = None
) -> tuple[list[tuple[EquipmentStateEvent, str | None]], int]:
    """A tool's E10 history, newest first, with the chamber name of chamber-level changes."""
    tool = await get_equipment(session, code)
    stmt = (
        select(EquipmentStateEvent, Chamber.name)
        .outerjoin(Chamber, Chamber.id == EquipmentStateEvent.chamber_id)
        .where(EquipmentStateEvent.equipment_id == tool.id)
        .order_by(EquipmentStateEvent.occurred_at.desc(), EquipmentStateEvent.id.desc())
    )
    if since is not None:
        stmt = stmt.where(EquipmentStateEvent.occurred_at >= since)
    rows, total = await fetch_page(session, stmt, page, scalars=False)
    return [(event, chamber) for event, chamber in rows], total
