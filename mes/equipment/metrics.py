"""SEMI E10 reliability/availability/utilisation metrics and SEMI E79 OEE, from a state history.

Pure functions on plain data: a tool's (or chamber's) history is a list of ``Interval`` (state
and substate between two instants), built from its state events, overlaid with the corrections
technicians recorded (``apply_corrections``), and cut at the window edges (``clip``). Every
figure is computed over the window ``[start, end)`` only, so a state that began before the
window counts from ``start`` and one still running at ``end`` counts up to ``end``.

Time tree (E10): total time = operations time + NST; operations time = uptime + downtime;
uptime = PRD + SBY + ENG; downtime = SDT + UDT. Total time is the part of the window the
history covers (before a tool was installed there is no time to account for).

E10 metrics (``None`` when the denominator is zero):

- total uptime            = uptime / total time
- operational uptime      = uptime / operations time
- failures                = equipment-dependent UDT episodes that begin inside the window (a
                            run of consecutive UDT intervals is one episode, whatever its
                            substates; it is equipment-dependent unless every substate in it is
                            one E10 does not charge to the equipment: ``NOT_EQUIPMENT_DEPENDENT``,
                            facilities, out-of-spec input, and NO_SIGNAL time nobody qualified)
- MTBF(p)                 = productive (PRD) time / failures
- MTTR                    = equipment-dependent UDT time / such episodes overlapping the window
- other failures          = the other UDT episodes, reported apart with their time
- MTPM                    = PM time (substates ``SDT.PM*``) / PM episodes overlapping the window
- operational utilisation = PRD time / operations time
- total utilisation       = PRD time / total time

E79 OEE = AE x PE x QE with PE = OE x RE:

- AE (availability efficiency) = uptime / total time
- OE (operational efficiency)  = PRD time / uptime
- RE (rate efficiency)         = theoretical production time for the units processed / PRD time
- QE (quality efficiency)      = theoretical time for the good units / theoretical time for the
                                 units processed
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mes.equipment.states import DOWN_STATES, UP_STATES, E10State


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime
    state: E10State
    substate: str

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class Correction:
    """A re-qualified past interval: the time from ``start`` to ``end`` was really ``state``."""

    start: datetime
    end: datetime
    state: E10State
    substate: str


def intervals_from_events(
    events: Iterable[tuple[datetime, E10State, str]], until: datetime
) -> list[Interval]:
    """Turn (occurred_at, state, substate) changes into back-to-back intervals up to ``until``.

    Events are sorted by time (stable, so of two at the same instant the later one recorded
    wins); the last state lasts until ``until``. Zero-length intervals are dropped.
    """
    ordered = sorted(events, key=lambda e: e[0])
    result: list[Interval] = []
    if not ordered:  # a window before the tool's first state: no history, not an error
        return result
    for (at, state, substate), following in zip(
        ordered, [*(e[0] for e in ordered[1:]), until], strict=True
    ):
        end = min(following, until)
        if end > at:
            result.append(Interval(at, end, state, substate))
    return result


def apply_corrections(
    intervals: Sequence[Interval], corrections: Iterable[Correction]
) -> list[Interval]:
    """Overlay corrections in the order given (later ones win) on a history.

    A correction only re-qualifies time the history covers; the parts of intervals it does not
    cover keep their state.
    """
    current = list(intervals)
    for fix in corrections:
        if fix.end <= fix.start:
            continue
        replaced: list[Interval] = []
        inserted = False
        for iv in current:
            if iv.end <= fix.start or iv.start >= fix.end:
                replaced.append(iv)
                continue
            if iv.start < fix.start:
                replaced.append(Interval(iv.start, fix.start, iv.state, iv.substate))
            if not inserted:
                covered_start = max(fix.start, iv.start)
                replaced.append(Interval(covered_start, fix.end, fix.state, fix.substate))
                inserted = True
            if iv.end > fix.end:
                replaced.append(Interval(fix.end, iv.end, iv.state, iv.substate))
        # A correction reaching past the history's end is cut at that end.
        history_end = current[-1].end if current else fix.start
        current = [
            Interval(iv.start, min(iv.end, history_end), iv.state, iv.substate)
            for iv in replaced
            if iv.start < history_end
        ]
    return current


def clip(intervals: Iterable[Interval], start: datetime, end: datetime) -> list[Interval]:
    """The parts of ``intervals`` inside ``[start, end)``."""
    clipped = []
    for iv in intervals:
        s, e = max(iv.start, start), min(iv.end, end)
        if e > s:
            clipped.append(Interval(s, e, iv.state, iv.substate))
    return clipped


def episodes(
    intervals: Sequence[Interval], predicate: Callable[[Interval], bool]
) -> list[tuple[datetime, datetime]]:
    """Maximal runs of back-to-back intervals that satisfy ``predicate``, as (start, end)."""
    runs: list[tuple[datetime, datetime]] = []
    for iv in intervals:
        if not predicate(iv):
            continue
        if runs and runs[-1][1] == iv.start:
            runs[-1] = (runs[-1][0], iv.end)
        else:
            runs.append((iv.start, iv.end))
    return runs


# E10 charges failures to the equipment only when the equipment caused them.
NOT_EQUIPMENT_DEPENDENT = frozenset({"UDT.FACILITIES", "UDT.OUT_OF_SPEC_INPUT", "UDT.NO_SIGNAL"})


def _is_udt(iv: Interval) -> bool:
    return iv.state == E10State.UDT


def _udt_episodes(
    intervals: Sequence[Interval],
) -> tuple[list[tuple[datetime, datetime]], list[tuple[datetime, datetime]]]:
    """UDT episodes split into (equipment-dependent, other)."""
    runs = episodes(intervals, _is_udt)
    own, other = [], []
    for start, end in runs:
        inside = [iv for iv in intervals if _is_udt(iv) and start <= iv.start < end]
        if all(iv.substate in NOT_EQUIPMENT_DEPENDENT for iv in inside):
            other.append((start, end))
        else:
            own.append((start, end))
    return own, other


def is_pm(iv: Interval) -> bool:
    return iv.state == E10State.SDT and iv.substate.startswith("SDT.PM")


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


@dataclass(frozen=True)
class StateTimes:
    """Seconds in each E10 state inside the window, and the E10 sums."""

    seconds: dict[E10State, float] = field(default_factory=dict)

    def __getitem__(self, state: E10State) -> float:
        return self.seconds.get(state, 0.0)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @property
    def uptime(self) -> float:
        return sum(self[s] for s in UP_STATES)

    @property
    def downtime(self) -> float:
        return sum(self[s] for s in DOWN_STATES)

    @property
    def operations(self) -> float:
        return self.total - self[E10State.NST]


def state_times(clipped: Iterable[Interval]) -> StateTimes:
    seconds = dict.fromkeys(E10State, 0.0)
    for iv in clipped:
        seconds[iv.state] += iv.seconds
    return StateTimes(seconds)


@dataclass(frozen=True)
class E10Metrics:
    times: StateTimes
    failures: int
    repairs: int
    # UDT not charged to the equipment (facilities, input, unqualified silence), apart.
    other_failures: int
    other_udt_s: float
    pm_count: int
    pm_seconds: float
    total_uptime: float | None
    operational_uptime: float | None
    mtbf_p_s: float | None
    mttr_s: float | None
    mtpm_s: float | None
    operational_utilisation: float | None
    total_utilisation: float | None


def e10_metrics(history: Sequence[Interval], start: datetime, end: datetime) -> E10Metrics:
    """The E10 metrics of ``history`` (unclipped, corrections applied) over ``[start, end)``.

    The history should reach back before ``start`` when it can, so that an episode in progress
    at ``start`` is known not to begin inside the window.
    """
    window = clip(history, start, end)
    udt_runs, other_runs = _udt_episodes(history)
    pm_runs = episodes(history, is_pm)

    def overlap(s: datetime, e: datetime) -> float:
        return max(0.0, (min(e, end) - max(s, start)).total_seconds())

    return _metrics(
        state_times(window),
        failures=sum(1 for s, _e in udt_runs if start <= s < end),
        repairs=sum(1 for s, e in udt_runs if s < end and e > start),
        other_failures=sum(1 for s, _e in other_runs if start <= s < end),
        other_udt_s=sum(overlap(s, e) for s, e in other_runs),
        pm_count=sum(1 for s, e in pm_runs if s < end and e > start),
        pm_seconds=sum(iv.seconds for iv in window if is_pm(iv)),
    )


def add_up(parts: Iterable[E10Metrics]) -> E10Metrics:
    """The metrics of several tools together (a tool group, area or fab).

    Times and counts add up across the tools, so the ratios are time-weighted averages and
    MTBF is the group's productive time per failure.
    """
    parts = list(parts)
    seconds = {s: sum(p.times[s] for p in parts) for s in E10State}
    return _metrics(
        StateTimes(seconds),
        failures=sum(p.failures for p in parts),
        repairs=sum(p.repairs for p in parts),
        other_failures=sum(p.other_failures for p in parts),
        other_udt_s=sum(p.other_udt_s for p in parts),
        pm_count=sum(p.pm_count for p in parts),
        pm_seconds=sum(p.pm_seconds for p in parts),
    )


def _metrics(
    times: StateTimes,
    *,
    failures: int,
    repairs: int,
    other_failures: int,
    other_udt_s: float,
    pm_count: int,
    pm_seconds: float,
) -> E10Metrics:
    prd = times[E10State.PRD]
    return E10Metrics(
        times=times,
        failures=failures,
        repairs=repairs,
        other_failures=other_failures,
        other_udt_s=other_udt_s,
        pm_count=pm_count,
        pm_seconds=pm_seconds,
        total_uptime=_ratio(times.uptime, times.total),
        operational_uptime=_ratio(times.uptime, times.operations),
        mtbf_p_s=_ratio(prd, failures),
        mttr_s=_ratio(times[E10State.UDT] - other_udt_s, repairs),
        mtpm_s=_ratio(pm_seconds, pm_count),
        operational_utilisation=_ratio(prd, times.operations),
        total_utilisation=_ratio(prd, times.total),
    )


@dataclass(frozen=True)
class Run:
    """One lot's run on the tool: its theoretical time per wafer and wafers in/good."""

    theoretical_s_per_unit: float
    units: int
    good_units: int


@dataclass(frozen=True)
class Oee:
    total_s: float
    uptime_s: float
    productive_s: float
    units: int
    good_units: int
    theoretical_s: float
    theoretical_good_s: float
    availability: float | None
    operational_efficiency: float | None
    rate_efficiency: float | None
    performance: float | None
    quality: float | None
    oee: float | None


def _product(*factors: float | None) -> float | None:
    result = 1.0
    for f in factors:
        if f is None:
            return None
        result *= f
    return result


def oee(times: StateTimes, runs: Iterable[Run]) -> Oee:
    """E79 OEE from the window's state times and the runs tracked out in it."""
    runs = list(runs)
    theoretical = sum(r.theoretical_s_per_unit * r.units for r in runs)
    theoretical_good = sum(r.theoretical_s_per_unit * r.good_units for r in runs)
    prd = times[E10State.PRD]
    ae = _ratio(times.uptime, times.total)
    oe = _ratio(prd, times.uptime)
    re = _ratio(theoretical, prd)
    pe = _product(oe, re)
    qe = _ratio(theoretical_good, theoretical)
    return Oee(
        total_s=times.total,
        uptime_s=times.uptime,
        productive_s=prd,
        units=sum(r.units for r in runs),
        good_units=sum(r.good_units for r in runs),
        theoretical_s=theoretical,
        theoretical_good_s=theoretical_good,
        availability=ae,
        operational_efficiency=oe,
        rate_efficiency=re,
        performance=pe,
        quality=qe,
        oee=_product(ae, pe, qe),
    )
