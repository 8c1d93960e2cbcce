"""SPC run rules (Western Electric and Nelson), as pure functions over one chart's points.

A chart is a sequence of ``ChartPoint`` (the plotted value and that point's limits: subgroup
sizes may differ, so limits may differ per point). ``evaluate`` names, for each enabled rule,
every point that *completes* a violating pattern: the point a fab would act on when it arrives.
The pattern's other points are listed with it so a chart can draw them.

Numbering follows Nelson (1984); the Western Electric rules are Nelson 1, 5, 6 and 2 with a run
of 8 (``WESTERN_ELECTRIC``). A point exactly on the centre line is on neither side, and equal
neighbours neither rise nor fall, so a flat line never counts as a run, trend or alternation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

from mes.quality.limits import Limits


class RunRule(StrEnum):
    BEYOND_3_SIGMA = "nelson_1"  # one point beyond 3sigma
    SAME_SIDE_RUN = "nelson_2"  # N (9, or 8 for Western Electric) in a row on one side
    TREND = "nelson_3"  # 6 in a row steadily rising or falling
    ALTERNATING = "nelson_4"  # 14 in a row alternating up and down
    TWO_OF_THREE_BEYOND_2_SIGMA = "nelson_5"  # same side
    FOUR_OF_FIVE_BEYOND_1_SIGMA = "nelson_6"  # same side
    FIFTEEN_WITHIN_1_SIGMA = "nelson_7"  # stratification: too little variation
    EIGHT_OUTSIDE_1_SIGMA = "nelson_8"  # mixture: none within 1sigma, on both sides


WESTERN_ELECTRIC = frozenset(
    {
        RunRule.BEYOND_3_SIGMA,
        RunRule.TWO_OF_THREE_BEYOND_2_SIGMA,
        RunRule.FOUR_OF_FIVE_BEYOND_1_SIGMA,
        RunRule.SAME_SIDE_RUN,
    }
)
ALL_RULES = frozenset(RunRule)


@dataclass(frozen=True)
class ChartPoint:
    value: float
    limits: Limits

    @property
    def z(self) -> float:
        return self.limits.zone(self.value)

    @property
    def side(self) -> int:
        """+1 above the centre line, -1 below, 0 on it."""
        return (self.value > self.limits.center) - (self.value < self.limits.center)


@dataclass(frozen=True)
class Violation:
    rule: RunRule
    index: int  # the point that completes the pattern
    points: tuple[int, ...]  # every point of the pattern, ``index`` last


@dataclass(frozen=True)
class RuleSettings:
    """Which rules a chart applies; ``run_length`` is 9 (Nelson) or 8 (Western Electric)."""

    enabled: frozenset[RunRule] = WESTERN_ELECTRIC
    run_length: int = 9

    def __post_init__(self) -> None:
        if self.run_length not in (8, 9):
            raise ValueError("the same-side run length is 8 or 9")


def evaluate(points: Sequence[ChartPoint], settings: RuleSettings | None = None) -> list[Violation]:
    """Every violation on the chart, ordered by point, then rule."""
    found = [v for i in range(len(points)) for v in evaluate_at(points, i, settings)]
    return sorted(found, key=lambda v: (v.index, v.rule.value))


def evaluate_at(
    points: Sequence[ChartPoint], index: int, settings: RuleSettings | None = None
) -> list[Violation]:
    """The violations the point at ``index`` completes, judged on it and the points before it
    only — what the MES checks when a new value arrives."""
    settings = settings or RuleSettings()
    checks = {
        RunRule.BEYOND_3_SIGMA: lambda: _beyond(points, index, count=1, of=1, sigmas=3),
        RunRule.SAME_SIDE_RUN: lambda: _same_side(points, index, settings.run_length),
        RunRule.TREND: lambda: _trend(points, index, length=6),
        RunRule.ALTERNATING: lambda: _alternating(points, index, length=14),
        RunRule.TWO_OF_THREE_BEYOND_2_SIGMA: lambda: _beyond(
            points, index, count=2, of=3, sigmas=2
        ),
        RunRule.FOUR_OF_FIVE_BEYOND_1_SIGMA: lambda: _beyond(
            points, index, count=4, of=5, sigmas=1
        ),
        RunRule.FIFTEEN_WITHIN_1_SIGMA: lambda: _all_window(points, index, 15, _within_1),
        RunRule.EIGHT_OUTSIDE_1_SIGMA: lambda: _mixture(points, index, length=8),
    }
    found = []
    for rule in sorted(settings.enabled, key=lambda r: r.value):
        pattern = checks[rule]()
        if pattern is not None:
            found.append(Violation(rule, index, pattern))
    return found


def _window(index: int, length: int) -> range | None:
    return range(index - length + 1, index + 1) if index + 1 >= length else None


def _beyond(
    points: Sequence[ChartPoint], index: int, *, count: int, of: int, sigmas: float
) -> tuple[int, ...] | None:
    """``count`` of the last ``of`` points beyond ``sigmas`` on one side, the newest among
    them (otherwise the pattern was already complete at an earlier point)."""
    # At the start of a chart a shorter window counts: two points beyond 2 sigma are a signal
    # even before there is a third.
    window = range(max(0, index - of + 1), index + 1)
    newest = points[index].z
    if abs(newest) <= sigmas:
        return None
    side = 1 if newest > 0 else -1
    hits = tuple(i for i in window if points[i].z * side > sigmas)
    return hits if len(hits) >= count else None


def _same_side(points: Sequence[ChartPoint], index: int, length: int) -> tuple[int, ...] | None:
    window = _window(index, length)
    if window is None:
        return None
    sides = {points[i].side for i in window}
    return tuple(window) if len(sides) == 1 and 0 not in sides else None


def _steps(points: Sequence[ChartPoint], window: range) -> list[int]:
    values = [points[i].value for i in window]
    return [(b > a) - (b < a) for a, b in pairwise(values)]


def _trend(points: Sequence[ChartPoint], index: int, length: int) -> tuple[int, ...] | None:
    window = _window(index, length)
    if window is None:
        return None
    steps = set(_steps(points, window))
    return tuple(window) if steps in ({1}, {-1}) else None


def _alternating(points: Sequence[ChartPoint], index: int, length: int) -> tuple[int, ...] | None:
    window = _window(index, length)
    if window is None:
        return None
    steps = _steps(points, window)
    flips = all(a != 0 and b == -a for a, b in pairwise(steps))
    return tuple(window) if flips else None


def _mixture(points: Sequence[ChartPoint], index: int, length: int) -> tuple[int, ...] | None:
    """None of the last ``length`` points within 1sigma, and points on both sides (all on one side
    is a shift, caught by the run rules)."""
    pattern = _all_window(points, index, length, _outside_1)
    if pattern is None or len({points[i].side for i in pattern}) < 2:
        return None
    return pattern


def _within_1(point: ChartPoint) -> bool:
    return abs(point.z) < 1


def _outside_1(point: ChartPoint) -> bool:
    return abs(point.z) > 1


def _all_window(
    points: Sequence[ChartPoint], index: int, length: int, test: Callable[[ChartPoint], bool]
) -> tuple[int, ...] | None:
    window = _window(index, length)
    if window is None or not all(test(points[i]) for i in window):
        return None
    return tuple(window)


# --- the dispersion chart (moving range, R or S) ---------------------------------------------

# Ranges and deviations are skewed (bounded below by zero), so the zone tests (2 of 3, 4 of 5,
# 15 within, 8 outside, alternation) have other false-alarm rates than on the location chart:
# a dispersion chart takes the points beyond its limits, the runs on one side of its centre and
# the trends, the rules commonly kept there. (Consecutive moving ranges share a value, so runs
# on an MR chart come sooner than on R or S: for those charts rule 1 alone is the default.)
DISPERSION_RULES = frozenset({RunRule.BEYOND_3_SIGMA, RunRule.SAME_SIDE_RUN, RunRule.TREND})
DISPERSION_PREFIX = {"individuals": "mr", "xbar_r": "r", "xbar_s": "s"}


def dispersion_code(chart_kind: str, rule: RunRule) -> str:
    """The violation code of a rule on a chart's dispersion chart: ``r_nelson_1``,
    ``s_nelson_2``, ``mr_nelson_1`` (the location chart's are the bare rule codes)."""
    return f"{DISPERSION_PREFIX[chart_kind]}_{rule.value}"


def dispersion_codes() -> frozenset[str]:
    """Every dispersion violation code (what a chart's actions may be configured for)."""
    return frozenset(
        dispersion_code(kind, rule) for kind in DISPERSION_PREFIX for rule in DISPERSION_RULES
    )


def evaluate_dispersion_at(
    points: Sequence[ChartPoint], index: int, enabled: Iterable[RunRule], run_length: int = 9
) -> list[Violation]:
    """The violations the dispersion point at ``index`` completes (``points``: the ranges or
    deviations with the dispersion chart's limits). Rules outside ``DISPERSION_RULES`` are
    refused: their false-alarm rates do not hold there."""
    chosen = frozenset(enabled)
    if not chosen <= DISPERSION_RULES:
        raise ValueError(
            f"not a dispersion chart rule: {sorted(r.value for r in chosen - DISPERSION_RULES)}"
        )
    return evaluate_at(points, index, RuleSettings(enabled=chosen, run_length=run_length))


def moving_range(previous: float | None, value: float) -> float | None:
    """The moving range a new individual value makes (None for the chart's first value)."""
    return None if previous is None else abs(value - previous)


def out_of_spec(value: float, lsl: float | None, usl: float | None) -> bool:
    """Outside the specification limits (the product's, not the chart's): the lot always holds."""
    return (lsl is not None and value < lsl) or (usl is not None and value > usl)


def points_for(values: Iterable[float], limits: Limits) -> list[ChartPoint]:
    """Points that share one set of limits (an individuals chart, equal subgroups)."""
    return [ChartPoint(value, limits) for value in values]
