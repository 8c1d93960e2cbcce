"""The figures of the morning reports, computed from plain records (no database, no clock).

Definitions (docs/operations.md, "Morning reports"):

* a **move** is a track-out: the lot's wafers processed at a step; moves count per area (the area
  of the step's tool group in the fab) and per day of the fab's calendar;
* **WIP** of an area at an instant: the wafers of the lots that are started, not finished, not
  travelling between fabs, whose current step belongs to the area; **turns** of an area on a day
  are its wafer moves that day divided by its WIP at the start of the day;
* **cycle time at a step**: from the lot's arrival at the step (the event that put it there:
  start, track-out of the step before, rework, jump, receipt) to its track-out there;
* a lot is **on time** when it completed no later than its due time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import NamedTuple

# Lots in these states are no WIP (finished, or between fabs).
NOT_WIP = frozenset({"Completed", "Scrapped", "Terminated", "InTransit"})
UNASSIGNED = "(no area)"
# Open holds by age (hours): the bucket a hold falls in is the first whose bound exceeds its age.
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 4 h", 4.0),
    ("4-24 h", 24.0),
    ("1-3 d", 72.0),
    ("> 3 d", float("inf")),
)


EARLIEST_DAY, LATEST_DAY = date(1970, 1, 1), date(2199, 12, 31)


class InvalidRange(ValueError):
    """The date range is empty, reversed or too long."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass(frozen=True)
class Day:
    day: date
    start: datetime
    end: datetime


def days(first: date, last: date, zone: tzinfo, *, max_days: int) -> list[Day]:
    """The calendar days ``first``..``last`` (inclusive) in ``zone``, each as an instant range."""
    for d in (first, last):
        if not EARLIEST_DAY <= d <= LATEST_DAY:
            raise InvalidRange(f"{d} lies outside {EARLIEST_DAY}..{LATEST_DAY}")
    if last < first:
        raise InvalidRange(f"the range ends ({last}) before it starts ({first})")
    count = (last - first).days + 1
    if count > max_days:
        raise InvalidRange(
            f"a report covers at most {max_days} days; {first}..{last} has {count}", too_large=True
        )
    found = []
    for offset in range(count):
        d = first + timedelta(days=offset)
        nxt = d + timedelta(days=1)
        # Midnights of the fab's calendar as UTC instants: arithmetic on aware datetimes of one
        # zone ignores its offset changes (a 23-hour day would count 24).
        start = datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC)
        found.append(Day(d, start, end))
    return found


# --- inputs -------------------------------------------------------------------------------------


class LotState(NamedTuple):
    """Where a lot stands after an event (its snapshot), or at the start of the report."""

    at: datetime
    step_id: int | None
    state: str
    wafers: int
    fab_id: int
    entered_at: datetime | None  # arrival at ``step_id``, if known


class Event(NamedTuple):
    """One lot event, the fields the reports read (tuples: a report reads many thousands)."""

    lot_id: int
    at: datetime
    kind: str
    fab_id: int
    step_id: int | None  # the step the event is about (for a track-out: the step done)
    step_after: int | None  # the lot's current step after the event
    state_after: str
    wafers_after: int
    wafers_processed: int = 0  # track-outs
    outcome: str | None = None  # track-outs: pass or rework
    wafers_before: int = 0
    reason_code: str | None = None  # scrap


@dataclass(frozen=True)
class LotLife:
    lot_id: int
    product: str
    started_at: datetime
    ended_at: datetime | None


# --- moves and turns ----------------------------------------------------------------------------


@dataclass
class AreaDay:
    area: str
    day: date
    lot_moves: int = 0
    wafer_moves: int = 0
    wip_wafers: int = 0  # at the start of the day
    turns: float | None = None


def _area(areas: Mapping[tuple[int, int], str], fab_id: int, step_id: int | None) -> str:
    if step_id is None:
        return UNASSIGNED
    return areas.get((fab_id, step_id), UNASSIGNED)


def _in_scope(fabs: frozenset[int] | None, fab_id: int) -> bool:
    return fabs is None or fab_id in fabs


def replay(
    initial: Mapping[int, LotState], events: Iterable[Event]
) -> dict[int, list[tuple[Event, LotState]]]:
    """Each lot's states through the window: the event and the state it left, in time order.

    The arrival time at a step is carried forward: an event that changes the lot's step sets
    it, any other keeps it.
    """
    by_lot: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_lot[event.lot_id].append(event)
    found: dict[int, list[tuple[Event, LotState]]] = {}
    for lot_id, own in by_lot.items():
        own.sort(key=lambda e: e.at)
        current = initial.get(lot_id)
        states = []
        for event in own:
            moved = current is None or current.step_id != event.step_after or _arrives(event)
            entered = event.at if moved else current.entered_at if current else None
            current = LotState(
                event.at,
                event.step_after,
                event.state_after,
                event.wafers_after,
                event.fab_id,
                entered,
            )
            states.append((event, current))
        found[lot_id] = states
    return found


def _arrives(event: Event) -> bool:
    # A rework back to the same step is an arrival too: the step starts again.
    return event.kind == "TRACK_OUT" and event.outcome == "rework"


def state_at(
    initial: LotState | None, states: Sequence[tuple[Event, LotState]], instant: datetime
) -> LotState | None:
    """The lot's state at ``instant``: after its last event up to it (one at the instant
    counts: a report made now shows the track-out that happened now)."""
    found = initial if initial is not None and initial.at <= instant else None
    for event, state in states:
        if event.at > instant:
            break
        found = state
    return found


def moves_and_turns(
    lives: Sequence[LotLife],
    initial: Mapping[int, LotState],
    replayed: Mapping[int, list[tuple[Event, LotState]]],
    areas: Mapping[tuple[int, int], str],
    calendar: Sequence[Day],
    fabs: frozenset[int] | None,
) -> list[AreaDay]:
    """Moves, WIP at the start of the day and turns, per area and day (areas sorted)."""
    cells: dict[tuple[str, date], AreaDay] = {}

    def cell(area: str, day: date) -> AreaDay:
        if (area, day) not in cells:
            cells[area, day] = AreaDay(area, day)
        return cells[area, day]

    for states in replayed.values():
        for event, _ in states:
            if event.kind != "TRACK_OUT" or not _in_scope(fabs, event.fab_id):
                continue
            day = _day_of(calendar, event.at)
            if day is None:
                continue
            c = cell(_area(areas, event.fab_id, event.step_id), day)
            c.lot_moves += 1
            c.wafer_moves += event.wafers_processed
    for life in lives:
        states = replayed.get(life.lot_id, [])
        current, i = initial.get(life.lot_id), 0
        for d in calendar:  # days in order: one walk through the lot's states
            while i < len(states) and states[i][0].at < d.start:
                current, i = states[i][1], i + 1
            if life.started_at > d.start or (
                life.ended_at is not None and life.ended_at <= d.start
            ):
                continue
            st = current
            if st is None or st.state in NOT_WIP or not _in_scope(fabs, st.fab_id):
                continue
            cell(_area(areas, st.fab_id, st.step_id), d.day).wip_wafers += st.wafers
    for c in cells.values():
        c.turns = round(c.wafer_moves / c.wip_wafers, 4) if c.wip_wafers else None
    return sorted(cells.values(), key=lambda c: (c.area, c.day))


def _day_of(calendar: Sequence[Day], instant: datetime) -> date | None:
    for d in calendar:
        if d.start <= instant < d.end:
            return d.day
    return None


# --- WIP and cycle time -------------------------------------------------------------------------


@dataclass(frozen=True)
class StepInfo:
    sequence: int
    operation: str


@dataclass
class ProductStep:
    product: str
    sequence: int
    operation: str
    wip_lots: int = 0  # at the end of the range
    wip_wafers: int = 0
    track_outs: int = 0
    mean_cycle_time_h: float | None = None


@dataclass
class ProductCycle:
    product: str
    completed_lots: int
    mean_cycle_time_d: float | None
    wip_lots: int
    wip_wafers: int


def wip_and_cycle_time(
    lives: Sequence[LotLife],
    initial: Mapping[int, LotState],
    replayed: Mapping[int, list[tuple[Event, LotState]]],
    steps: Mapping[int, StepInfo],
    start: datetime,
    end: datetime,
    as_of: datetime,
    fabs: frozenset[int] | None,
) -> tuple[list[ProductStep], list[ProductCycle]]:
    """WIP at ``as_of`` and mean step cycle time of the track-outs in [start, end), per product
    and step; and per product the lots completed in the range and their mean cycle time."""
    rows: dict[tuple[str, int], ProductStep] = {}

    def row(product: str, step_id: int) -> ProductStep | None:
        info = steps.get(step_id)
        if info is None:
            return None
        key = (product, step_id)
        if key not in rows:
            rows[key] = ProductStep(product, info.sequence, info.operation)
        return rows[key]

    cycles: dict[tuple[str, int], list[float]] = defaultdict(list)
    completed: dict[str, list[float]] = defaultdict(list)
    wip: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for life in lives:
        states = replayed.get(life.lot_id, [])
        previous = initial.get(life.lot_id)
        for event, state in states:
            if (
                event.kind == "TRACK_OUT"
                and start <= event.at < end
                and _in_scope(fabs, event.fab_id)
                and event.step_id is not None
            ):
                r = row(life.product, event.step_id)
                if r is not None:
                    r.track_outs += 1
                    arrived = previous.entered_at if previous is not None else None
                    if arrived is not None:
                        cycles[life.product, event.step_id].append(
                            (event.at - arrived).total_seconds()
                        )
            previous = state
        if life.ended_at is not None and start <= life.ended_at < end:
            last = states[-1][1] if states else initial.get(life.lot_id)
            if last is not None and last.state == "Completed" and _in_scope(fabs, last.fab_id):
                completed[life.product].append((life.ended_at - life.started_at).total_seconds())
        if life.started_at > as_of or (life.ended_at is not None and life.ended_at <= as_of):
            continue
        st = state_at(initial.get(life.lot_id), states, as_of)
        if st is None or st.state in NOT_WIP or not _in_scope(fabs, st.fab_id):
            continue
        if st.step_id is not None and (r := row(life.product, st.step_id)) is not None:
            r.wip_lots += 1
            r.wip_wafers += st.wafers
        wip[life.product][0] += 1
        wip[life.product][1] += st.wafers
    for key, spans in cycles.items():
        rows[key].mean_cycle_time_h = round(sum(spans) / len(spans) / 3600, 4)
    per_product = [
        ProductCycle(
            product,
            len(completed.get(product, [])),
            round(sum(completed[product]) / len(completed[product]) / 86400, 4)
            if completed.get(product)
            else None,
            wip[product][0] if product in wip else 0,
            wip[product][1] if product in wip else 0,
        )
        for product in sorted(set(completed) | set(wip))
    ]
    return sorted(rows.values(), key=lambda r: (r.product, r.sequence)), per_product


# --- Paretos ------------------------------------------------------------------------------------


@dataclass
class ParetoRow:
    key: str
    count: int
    wafers: int
    share_pct: float
    cumulative_pct: float


def pareto(items: Iterable[tuple[str, int]]) -> list[ParetoRow]:
    """Occurrences (key, wafers) grouped by key, largest wafer count first (then count, key),
    with each key's share of the wafers and the running total."""
    counts: dict[str, int] = defaultdict(int)
    wafers: dict[str, int] = defaultdict(int)
    for key, n in items:
        counts[key] += 1
        wafers[key] += n
    total = sum(wafers.values())
    ordered = sorted(counts, key=lambda k: (-wafers[k], -counts[k], k))
    rows, running = [], 0
    for key in ordered:
        running += wafers[key]
        rows.append(
            ParetoRow(
                key,
                counts[key],
                wafers[key],
                round(100 * wafers[key] / total, 2) if total else 0.0,
                round(100 * running / total, 2) if total else 0.0,
            )
        )
    return rows


@dataclass(frozen=True)
class Hold:
    lot: str
    hold_code: str
    operation: str | None
    placed_at: datetime
    released_at: datetime | None


@dataclass
class HoldCodeRow:
    hold_code: str
    placed: int  # holds placed in the range
    hold_hours: float  # their time on hold, up to their release or the report's instant
    share_pct: float
    cumulative_pct: float
    open: int  # open at the report's instant (placed any time)
    ageing: dict[str, int]  # open holds per age bucket


@dataclass
class Escalation:
    lot: str
    hold_code: str
    operation: str | None
    placed_at: datetime
    age_h: float


def _bucket(age_h: float) -> str:
    return next(name for name, bound in AGE_BUCKETS if age_h < bound)


def hold_pareto(
    holds: Iterable[Hold], start: datetime, end: datetime, as_of: datetime, escalate_after_h: float
) -> tuple[list[HoldCodeRow], list[Escalation]]:
    """Holds per code, most hold hours first, and the open holds older than the threshold
    (oldest first). ``as_of`` is the report's instant: the end of the range, or now if sooner."""
    placed: dict[str, int] = defaultdict(int)
    hours: dict[str, float] = defaultdict(float)
    open_: dict[str, dict[str, int]] = defaultdict(lambda: {name: 0 for name, _ in AGE_BUCKETS})
    escalated = []
    for h in holds:
        if start <= h.placed_at < end:
            placed[h.hold_code] += 1
            until = min(h.released_at or as_of, as_of)
            hours[h.hold_code] += max(0.0, (until - h.placed_at).total_seconds() / 3600)
        if h.placed_at <= as_of and (h.released_at is None or h.released_at > as_of):
            age_h = (as_of - h.placed_at).total_seconds() / 3600
            open_[h.hold_code][_bucket(age_h)] += 1
            if age_h > escalate_after_h:
                escalated.append(
                    Escalation(h.lot, h.hold_code, h.operation, h.placed_at, round(age_h, 2))
                )
    total = sum(hours.values())
    codes = sorted(set(placed) | set(open_), key=lambda c: (-hours.get(c, 0.0), c))
    rows, running = [], 0.0
    for code in codes:
        running += hours.get(code, 0.0)
        ageing = open_[code] if code in open_ else {name: 0 for name, _ in AGE_BUCKETS}
        rows.append(
            HoldCodeRow(
                code,
                placed.get(code, 0),
                round(hours.get(code, 0.0), 4),
                round(100 * hours.get(code, 0.0) / total, 2) if total else 0.0,
                round(100 * running / total, 2) if total else 0.0,
                sum(ageing.values()),
                dict(ageing),
            )
        )
    escalated.sort(key=lambda e: (-e.age_h, e.lot))
    return rows, escalated


# --- on-time delivery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    product: str
    priority_class: str
    ended_at: datetime
    due_at: datetime | None


@dataclass
class DeliveryRow:
    product: str
    priority_class: str
    completed: int
    with_due: int
    on_time: int
    late: int
    on_time_pct: float | None
    mean_lateness_h: float | None  # of the late lots


def on_time_delivery(completions: Iterable[Completion]) -> list[DeliveryRow]:
    """Per product and priority class, and a total row per product (priority ``*``)."""
    groups: dict[tuple[str, str], list[Completion]] = defaultdict(list)
    for c in completions:
        groups[c.product, c.priority_class].append(c)
        groups[c.product, "*"].append(c)
    rows = []
    for (product, priority), items in sorted(groups.items()):
        due = [(c.ended_at, c.due_at) for c in items if c.due_at is not None]
        late = [(ended - due_at).total_seconds() for ended, due_at in due if ended > due_at]
        on_time = len(due) - len(late)
        rows.append(
            DeliveryRow(
                product,
                priority,
                len(items),
                len(due),
                on_time,
                len(late),
                round(100 * on_time / len(due), 2) if due else None,
                round(sum(late) / len(late) / 3600, 4) if late else None,
            )
        )
    return rows
