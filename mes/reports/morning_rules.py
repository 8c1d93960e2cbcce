"""The figures of the morning reports, computed from plain records (no database, no clock).

Definitions (docs/operations.md, "Morning reports"):

* a **move** is a track-out: the lot's wafers processed at a step; moves count per area (the area
  of the step's tool group in the fab) and per day of the fab's calendar;
* **WIP** of an area at an instant: the wafers of the lots that are started, not finished, not
  travelling between fabs, whose current step belongs to the area; **turns** of an area on a day
  are its wafer moves that day divided by its WIP at the start of the day;
* **cycle time at a step**: from the lot's arrival at the step (its previous move: start,
  track-out of the step before or a rework, jump, receipt) to its track-out there;
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


class Snapshot(NamedTuple):
    """A lot at an instant: after its last event up to then (the event's snapshot)."""

    lot_id: int
    product: str
    step_id: int | None
    state: str
    wafers: int
    fab_id: int


class StepMoves(NamedTuple):
    """Track-outs of one step in one fab on one day of the calendar (index into it)."""

    fab_id: int
    step_id: int | None
    day: int
    lots: int
    wafers: int


def _area(areas: Mapping[tuple[int, int], str], fab_id: int, step_id: int | None) -> str:
    if step_id is None:
        return UNASSIGNED
    return areas.get((fab_id, step_id), UNASSIGNED)


def _in_scope(fabs: frozenset[int] | None, fab_id: int) -> bool:
    return fabs is None or fab_id in fabs


def is_wip(lot: Snapshot, fabs: frozenset[int] | None) -> bool:
    return lot.state not in NOT_WIP and _in_scope(fabs, lot.fab_id)


# --- moves and turns ----------------------------------------------------------------------------


@dataclass
class AreaDay:
    area: str
    day: date
    lot_moves: int = 0
    wafer_moves: int = 0
    wip_wafers: int = 0  # at the start of the day
    turns: float | None = None


def moves_and_turns(
    moves: Iterable[StepMoves],
    day_starts: Sequence[Iterable[Snapshot]],
    areas: Mapping[tuple[int, int], str],
    calendar: Sequence[Day],
    fabs: frozenset[int] | None,
) -> list[AreaDay]:
    """Moves, WIP at the start of the day and turns, per area and day (areas sorted).

    ``moves``: the track-outs per step and day; ``day_starts[i]``: the lots as they stood when
    day ``i`` began."""
    cells: dict[tuple[str, date], AreaDay] = {}

    def cell(area: str, day: date) -> AreaDay:
        if (area, day) not in cells:
            cells[area, day] = AreaDay(area, day)
        return cells[area, day]

    for m in moves:
        if _in_scope(fabs, m.fab_id) and 0 <= m.day < len(calendar):
            c = cell(_area(areas, m.fab_id, m.step_id), calendar[m.day].day)
            c.lot_moves += m.lots
            c.wafer_moves += m.wafers
    for d, lots in zip(calendar, day_starts, strict=True):
        for lot in lots:
            if is_wip(lot, fabs):
                cell(_area(areas, lot.fab_id, lot.step_id), d.day).wip_wafers += lot.wafers
    for c in cells.values():
        c.turns = round(c.wafer_moves / c.wip_wafers, 4) if c.wip_wafers else None
    return sorted(cells.values(), key=lambda c: (c.area, c.day))


# --- WIP and cycle time -------------------------------------------------------------------------


@dataclass(frozen=True)
class StepInfo:
    sequence: int
    operation: str


class StepCycle(NamedTuple):
    """The track-outs of a product's step in the range: how many, and the summed and counted
    seconds from the lot's arrival at the step (those whose arrival is known)."""

    product: str
    step_id: int
    track_outs: int
    cycle_s_sum: float
    cycle_s_count: int


@dataclass
class ProductStep:
    product: str
    sequence: int
    operation: str
    wip_lots: int = 0  # at the end of the range (or now)
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
    at_end: Iterable[Snapshot],
    cycles: Iterable[StepCycle],
    completed: Iterable[tuple[str, datetime, datetime]],
    steps: Mapping[int, StepInfo],
    fabs: frozenset[int] | None,
) -> tuple[list[ProductStep], list[ProductCycle]]:
    """Per product and step: WIP at the end, track-outs and mean cycle time at the step; per
    product: lots completed (product, started, ended) and their mean cycle time, WIP."""
    rows: dict[tuple[str, int], ProductStep] = {}

    def row(product: str, step_id: int | None) -> ProductStep | None:
        info = steps.get(step_id) if step_id is not None else None
        if info is None or step_id is None:
            return None
        if (product, step_id) not in rows:
            rows[product, step_id] = ProductStep(product, info.sequence, info.operation)
        return rows[product, step_id]

    wip: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for lot in at_end:
        if not is_wip(lot, fabs):
            continue
        if (r := row(lot.product, lot.step_id)) is not None:
            r.wip_lots += 1
            r.wip_wafers += lot.wafers
        wip[lot.product][0] += 1
        wip[lot.product][1] += lot.wafers
    for c in cycles:
        if (r := row(c.product, c.step_id)) is not None:
            r.track_outs += c.track_outs
            if c.cycle_s_count:
                r.mean_cycle_time_h = round(c.cycle_s_sum / c.cycle_s_count / 3600, 4)
    spans: dict[str, list[float]] = defaultdict(list)
    for product, started, ended in completed:
        spans[product].append((ended - started).total_seconds())
    per_product = [
        ProductCycle(
            product,
            len(spans.get(product, [])),
            round(sum(spans[product]) / len(spans[product]) / 86400, 4)
            if spans.get(product)
            else None,
            wip[product][0] if product in wip else 0,
            wip[product][1] if product in wip else 0,
        )
        for product in sorted(set(spans) | set(wip))
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
