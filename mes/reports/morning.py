"""The morning reports of a fab (or the network): the queries behind ``morning_rules``.

Each report reads a date range of the fab's calendar (the network's: UTC). The lot history is
read once per report as plain columns (the JSON snapshot fields are extracted by the database,
never whole documents): each alive lot's last state before the range, and the events inside it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from mes.equipment.models import Equipment
from mes.errors import InvalidInput, refuses
from mes.fabs import service as fabs_service
from mes.fabs.models import Area, Fab
from mes.lots.models import HoldCode, Lot, LotEvent, LotHold
from mes.lots.states import LotState as LotStateEnum
from mes.products.models import Product
from mes.reports import morning_rules as rules
from mes.routes.models import Step

# A morning report reads days, a quarter at most: longer ranges are exports, not reports.
MAX_DAYS = 92
QUIET = ("TRACK_IN", "HOLD", "TRACK_IN_CANCELLED")
# Events that put a lot at a (new) step: its arrival time there.
ARRIVALS = ("START", "TRACK_OUT", "JUMP", "RECEIVE", "SPLIT_FROM")


@dataclass(frozen=True)
class Window:
    fab: str | None
    fab_ids: frozenset[int] | None  # None: the network
    zone: tzinfo
    first: date
    last: date
    calendar: list[rules.Day]
    as_of: datetime  # the end of the range, or now if that is sooner

    @property
    def start(self) -> datetime:
        return self.calendar[0].start

    @property
    def end(self) -> datetime:
        return self.calendar[-1].end


@refuses("report.range_too_large", "report.invalid_range", status=422)
async def window(
    session: AsyncSession, fab: str | None, first: date | None, last: date | None, now: datetime
) -> Window:
    """The report's scope and days; by default yesterday (of the fab's calendar)."""
    zone: tzinfo = UTC
    fab_ids: frozenset[int] | None = None
    if fab is not None:
        row = await fabs_service.get_fab(session, fab)
        zone = ZoneInfo(row.timezone)
        fab_ids = frozenset({row.id})
    today = now.astimezone(zone).date()
    last = last or (first if first is not None and first >= today else today - timedelta(days=1))
    first = first or last
    try:
        calendar = rules.days(first, last, zone, max_days=MAX_DAYS)
    except rules.InvalidRange as exc:
        code = "report.range_too_large" if exc.too_large else "report.invalid_range"
        raise InvalidInput(str(exc), code=code) from exc
    return Window(fab, fab_ids, zone, first, last, calendar, min(calendar[-1].end, now))


def _fab_filter(column: Any, w: Window) -> ColumnElement[bool]:
    found: ColumnElement[bool] = (
        column.in_(w.fab_ids) if w.fab_ids is not None else column.is_not(None)
    )
    return found


# --- the lot history ----------------------------------------------------------------------------


@dataclass
class History:
    lives: list[rules.LotLife]
    initial: dict[int, rules.LotState]
    events: list[rules.Event]
    replayed: dict[int, list[tuple[rules.Event, rules.LotState]]]


def _alive(w: Window) -> Select[Any]:
    return select(Lot.id).where(
        Lot.started_at < w.end, or_(Lot.ended_at.is_(None), Lot.ended_at >= w.start)
    )


async def history(session: AsyncSession, w: Window) -> History:
    lives = [
        rules.LotLife(lot_id, product, started, ended)
        for lot_id, product, started, ended in await session.execute(
            select(Lot.id, Product.code, Lot.started_at, Lot.ended_at)
            .join(Product, Product.id == Lot.product_id)
            .where(Lot.started_at < w.end, or_(Lot.ended_at.is_(None), Lot.ended_at >= w.start))
        )
    ]
    initial = await _initial(session, w)
    after, before = LotEvent.after, LotEvent.before
    rows = await session.execute(
        select(
            LotEvent.lot_id,
            LotEvent.occurred_at,
            LotEvent.event_type,
            LotEvent.fab_id,
            LotEvent.step_id,
            after["step_id"].as_integer(),
            func.coalesce(after["state"].as_string(), ""),
            func.coalesce(after["wafer_count"].as_integer(), 0),
            func.coalesce(after["wafers_processed"].as_integer(), 0),
            after["outcome"].as_string(),
            func.coalesce(before["wafer_count"].as_integer(), 0),
            after["reason_code"].as_string(),
        ).where(
            LotEvent.occurred_at >= w.start,
            LotEvent.occurred_at < w.end,
            # Events that change neither the step, the wafers nor whether the lot is WIP: half
            # of a history is track-ins.
            LotEvent.event_type.not_in(QUIET),
        )
    )
    events = [rules.Event._make(row) for row in rows]
    # A shipped lot's snapshot says InTransit until its receipt: no WIP meanwhile.
    return History(lives, initial, events, rules.replay(initial, events))


async def _initial(session: AsyncSession, w: Window) -> dict[int, rules.LotState]:
    """Each alive lot's state after its last event before the range, with its arrival time."""
    alive = _alive(w).scalar_subquery()

    def last_before(types: tuple[str, ...] | None) -> Select[int, datetime]:
        query = select(LotEvent.lot_id, func.max(LotEvent.occurred_at).label("at")).where(
            LotEvent.occurred_at < w.start, LotEvent.lot_id.in_(alive)
        )
        if types is not None:
            query = query.where(LotEvent.event_type.in_(types))
        return query.group_by(LotEvent.lot_id)

    last = last_before(None).subquery()
    after = LotEvent.after
    found: dict[int, tuple[int, rules.LotState]] = {}
    for event_id, lot_id, at, fab_id, step_after, state, wafers in await session.execute(
        select(
            LotEvent.id,
            LotEvent.lot_id,
            LotEvent.occurred_at,
            LotEvent.fab_id,
            after["step_id"].as_integer(),
            after["state"].as_string(),
            after["wafer_count"].as_integer(),
        ).join(last, and_(LotEvent.lot_id == last.c.lot_id, LotEvent.occurred_at == last.c.at))
    ):
        kept = found.get(lot_id)
        if kept is None or event_id > kept[0]:  # two events at one instant: the later one
            found[lot_id] = (
                event_id,
                rules.LotState(at, step_after, state or "", wafers or 0, fab_id, None),
            )
    arrived: dict[int, datetime] = {
        lot_id: at for lot_id, at in await session.execute(last_before(ARRIVALS))
    }
    return {
        lot_id: rules.LotState(
            st.at, st.step_id, st.state, st.wafers, st.fab_id, arrived.get(lot_id)
        )
        for lot_id, (_, st) in found.items()
    }


# --- maps of the master data --------------------------------------------------------------------


async def step_infos(session: AsyncSession) -> dict[int, rules.StepInfo]:
    rows = await session.execute(select(Step.id, Step.sequence, Step.operation))
    return {step_id: rules.StepInfo(seq, op) for step_id, seq, op in rows}


async def step_areas(session: AsyncSession, w: Window) -> dict[tuple[int, int], str]:
    """(fab, step) -> the area of the step's tool group in that fab: where most of the group's
    tools stand (a tool group spans one area in a usual layout)."""
    counts: dict[tuple[int, int], Counter[str]] = {}
    for fab_id, group_id, area in await session.execute(
        select(Equipment.fab_id, Equipment.tool_group_id, Area.code)
        .join(Area, Area.id == Equipment.area_id)
        .where(_fab_filter(Equipment.fab_id, w))
    ):
        counts.setdefault((fab_id, group_id), Counter())[area] += 1
    group_area = {key: c.most_common(1)[0][0] for key, c in counts.items()}
    fabs = {fab_id for fab_id, _ in group_area}
    areas: dict[tuple[int, int], str] = {}
    for step_id, group_id in await session.execute(select(Step.id, Step.tool_group_id)):
        for fab_id in fabs:
            found = group_area.get((fab_id, group_id))
            if found is not None:
                areas[fab_id, step_id] = found
    return areas


async def fab_code(session: AsyncSession, fab_id: int) -> str:
    return str(await session.scalar(select(Fab.code).where(Fab.id == fab_id)))


# --- the reports --------------------------------------------------------------------------------


async def moves(session: AsyncSession, w: Window) -> list[rules.AreaDay]:
    h = await history(session, w)
    areas = await step_areas(session, w)
    return rules.moves_and_turns(h.lives, h.initial, h.replayed, areas, w.calendar, w.fab_ids)


async def wip(
    session: AsyncSession, w: Window
) -> tuple[list[rules.ProductStep], list[rules.ProductCycle]]:
    h = await history(session, w)
    steps = await step_infos(session)
    return rules.wip_and_cycle_time(
        h.lives, h.initial, h.replayed, steps, w.start, w.end, w.as_of, w.fab_ids
    )


async def holds(
    session: AsyncSession, w: Window, escalate_after_h: float
) -> tuple[list[rules.HoldCodeRow], list[rules.Escalation]]:
    rows = await session.execute(
        select(Lot.code, HoldCode.code, Step.operation, LotHold.placed_at, LotHold.released_at)
        .join(Lot, Lot.id == LotHold.lot_id)
        .join(HoldCode, HoldCode.id == LotHold.hold_code_id)
        .outerjoin(Step, Step.id == LotHold.step_id)
        .where(
            _fab_filter(LotHold.fab_id, w),
            LotHold.placed_at < w.end,
            or_(
                LotHold.placed_at >= w.start,
                LotHold.released_at.is_(None),
                LotHold.released_at > w.as_of,
            ),
        )
    )
    found = [
        rules.Hold(lot, code, op, placed, released) for lot, code, op, placed, released in rows
    ]
    return rules.hold_pareto(found, w.start, w.end, w.as_of, escalate_after_h)


async def scrap_and_rework(
    session: AsyncSession, w: Window
) -> tuple[list[rules.ParetoRow], list[rules.ParetoRow], list[rules.ParetoRow]]:
    """Scrap by reason code and by operation; rework by operation (wafers, largest first)."""
    after, before = LotEvent.after, LotEvent.before
    rows = (
        await session.execute(
            select(
                LotEvent.event_type,
                Step.operation,
                after["reason_code"].as_string(),
                before["wafer_count"].as_integer(),
                after["wafer_count"].as_integer(),
                after["wafers_processed"].as_integer(),
            )
            .outerjoin(Step, Step.id == LotEvent.step_id)
            .where(
                LotEvent.occurred_at >= w.start,
                LotEvent.occurred_at < w.end,
                _fab_filter(LotEvent.fab_id, w),
                or_(
                    LotEvent.event_type == "SCRAP",
                    and_(
                        LotEvent.event_type == "TRACK_OUT",
                        after["outcome"].as_string() == "rework",
                    ),
                ),
            )
        )
    ).all()
    scrapped = [
        (reason or "?", op or "?", (was or 0) - (now or 0))
        for kind, op, reason, was, now, _ in rows
        if kind == "SCRAP"
    ]
    reworked = [
        (op or "?", processed or 0) for kind, op, _, _, _, processed in rows if kind != "SCRAP"
    ]
    return (
        rules.pareto((reason, n) for reason, _, n in scrapped),
        rules.pareto((op, n) for _, op, n in scrapped),
        rules.pareto(reworked),
    )


async def delivery(session: AsyncSession, w: Window) -> list[rules.DeliveryRow]:
    rows = await session.execute(
        select(Product.code, Lot.priority_class, Lot.ended_at, Lot.due_at)
        .join(Product, Product.id == Lot.product_id)
        .where(
            Lot.state == LotStateEnum.COMPLETED,
            Lot.ended_at >= w.start,
            Lot.ended_at < w.end,
            _fab_filter(Lot.fab_id, w),
        )
    )
    return rules.on_time_delivery(
        rules.Completion(product, priority.value, ended, due)
        for product, priority, ended, due in rows
        if ended is not None
    )
