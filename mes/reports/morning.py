"""The morning reports of a fab (or the network): the queries behind ``morning_rules``.

Each report reads a date range of the fab's calendar (the network's: UTC). Nothing reads a
lot's whole history: moves are counted by the database per step and day, the lots' positions at
an instant are one index seek per lot (``snapshot``), and a track-out's arrival time comes from
one window function over the window's arrivals (a seek only for a lot's first one); the JSON
snapshot fields are extracted by the database.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
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


# --- the lots at an instant ---------------------------------------------------------------------


async def snapshot(
    session: AsyncSession, instant: datetime, *, inclusive: bool
) -> list[rules.Snapshot]:
    """Every lot started by ``instant`` and not finished at it, as its last event up to then
    (``inclusive``: an event at the instant counts) left it.

    One index seek per lot (``ix_lot_event_lot_time``, newest first), not a read of the lots'
    history: a long-lived lot has hundreds of events.
    """
    inner = aliased(LotEvent)
    upto = inner.occurred_at <= instant if inclusive else inner.occurred_at < instant
    last = (
        select(inner.id)
        .where(inner.lot_id == Lot.id, upto)
        .order_by(inner.lot_id.desc(), inner.occurred_at.desc(), inner.id.desc())
        .limit(1)
        .correlate(Lot)
        .scalar_subquery()
    )
    alive = (
        select(Lot.id.label("lot_id"), Product.code.label("product"), last.label("last"))
        .join(Product, Product.id == Lot.product_id)
        .where(Lot.started_at <= instant, or_(Lot.ended_at.is_(None), Lot.ended_at > instant))
        .subquery()
    )
    after = LotEvent.after
    rows = await session.execute(
        select(
            alive.c.lot_id,
            alive.c.product,
            after["step_id"].as_integer(),
            func.coalesce(after["state"].as_string(), ""),
            func.coalesce(after["wafer_count"].as_integer(), 0),
            LotEvent.fab_id,
        ).join(alive, LotEvent.id == alive.c.last)
    )
    return [rules.Snapshot._make(row) for row in rows]


def _epoch_s(session: AsyncSession, value: Any) -> Any:
    """Seconds since 1970 of a timestamp, in SQL (the two databases spell it differently)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", value)
    return (func.julianday(value) - 2440587.5) * 86400.0


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
    day = case(
        *[(LotEvent.occurred_at < d.end, i) for i, d in enumerate(w.calendar)], else_=-1
    ).label("day")
    processed = func.coalesce(LotEvent.after["wafers_processed"].as_integer(), 0)
    counted = await session.execute(
        select(LotEvent.fab_id, LotEvent.step_id, day, func.count(), func.sum(processed))
        .where(
            LotEvent.event_type == "TRACK_OUT",
            LotEvent.occurred_at >= w.start,
            LotEvent.occurred_at < w.end,
            _fab_filter(LotEvent.fab_id, w),
        )
        .group_by(LotEvent.fab_id, LotEvent.step_id, day)
    )
    found = [rules.StepMoves(f, s, d, n, int(wafers or 0)) for f, s, d, n, wafers in counted]
    # WIP when each day began (only days that have begun: a future day has no WIP yet).
    starts = [
        await snapshot(session, d.start, inclusive=False) if d.start <= w.as_of else []
        for d in w.calendar
    ]
    areas = await step_areas(session, w)
    return rules.moves_and_turns(found, starts, areas, w.calendar, w.fab_ids)


async def wip(
    session: AsyncSession, w: Window
) -> tuple[list[rules.ProductStep], list[rules.ProductCycle]]:
    at_end = await snapshot(session, w.as_of, inclusive=True)
    # The lot's arrival at the step it tracks out of: its latest arrival (start, the track-out of
    # the step before or a rework, jump, receipt) strictly before the track-out. Within the window
    # lag() over the arrivals finds it; only a lot's first track-out in the window (arrived before
    # the window began) needs an index seek. One seek per track-out took 3.9 s for 30 days on
    # PostgreSQL at 700 k events (a max() frame with EXCLUDE GROUP: 3.0 s, not incremental).
    in_window = (
        select(
            LotEvent.lot_id.label("lot_id"),
            LotEvent.event_type.label("event_type"),
            LotEvent.step_id.label("step_id"),
            LotEvent.fab_id.label("fab_id"),
            LotEvent.occurred_at.label("occurred_at"),
            func.lag(LotEvent.occurred_at)
            .over(partition_by=LotEvent.lot_id, order_by=(LotEvent.occurred_at, LotEvent.id))
            .label("previous"),
        )
        .where(
            LotEvent.event_type.in_(ARRIVALS),
            LotEvent.occurred_at >= w.start,
            LotEvent.occurred_at < w.end,
        )
        .subquery()
    )
    arrival = aliased(LotEvent)
    arrived_before = (
        select(arrival.occurred_at)
        .where(
            arrival.lot_id == in_window.c.lot_id,
            arrival.occurred_at < in_window.c.occurred_at,
            arrival.event_type.in_(ARRIVALS),
        )
        .order_by(arrival.lot_id.desc(), arrival.occurred_at.desc())
        .limit(1)
        .correlate(in_window)
        .scalar_subquery()
    )
    # The previous arrival in the window, unless it has the same time (then the seek finds the
    # one strictly before); COALESCE evaluates the seek only where needed (both databases).
    previous = in_window.c.previous
    arrived = func.coalesce(case((previous < in_window.c.occurred_at, previous)), arrived_before)
    outs = (
        select(
            Product.code.label("product"),
            in_window.c.step_id.label("step_id"),
            (_epoch_s(session, in_window.c.occurred_at) - _epoch_s(session, arrived)).label("span"),
        )
        .join(Lot, Lot.id == in_window.c.lot_id)
        .join(Product, Product.id == Lot.product_id)
        .where(
            in_window.c.event_type == "TRACK_OUT",
            in_window.c.step_id.is_not(None),
            _fab_filter(in_window.c.fab_id, w),
        )
        .subquery()
    )
    cycles = [
        rules.StepCycle(product, step_id, n, float(total or 0.0), known)
        for product, step_id, n, total, known in await session.execute(
            select(
                outs.c.product,
                outs.c.step_id,
                func.count(),
                func.sum(outs.c.span),
                func.count(outs.c.span),
            ).group_by(outs.c.product, outs.c.step_id)
        )
    ]
    completed = [
        (product, started, ended)
        for product, started, ended in await session.execute(
            select(Product.code, Lot.started_at, Lot.ended_at)
            .join(Product, Product.id == Lot.product_id)
            .where(
                Lot.state == LotStateEnum.COMPLETED,
                Lot.ended_at >= w.start,
                Lot.ended_at < w.end,
                _fab_filter(Lot.fab_id, w),
            )
        )
        if ended is not None
    ]
    steps = await step_infos(session)
    return rules.wip_and_cycle_time(at_end, cycles, completed, steps, w.fab_ids)


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
