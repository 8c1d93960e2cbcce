"""The geometry of the E10 and OEE charts of the metrics page, drawn as inline SVG on the server:
pure, no database (as ``spc_svg``).

Both are horizontal bar charts with one row per tool group on a 0 to 100 % axis: E10 time stacked
by state (the states in the E10 order, so equal colours line up down the rows), and OEE with its
availability, performance and quality factors named beside the bar. Horizontal bars keep the
group codes readable at any count; the numbers are in the table below the charts as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

WIDTH = 560  # about the width it is shown at beside its neighbour: text stays at its size
LEFT, RIGHT, TOP, BOTTOM = 110, 16, 8, 26
NONE = "\u2013"  # an en dash: no figure  # group codes left, the % axis below
ROW, GAP = 18, 8
OEE_RIGHT = 168  # a column for "41 %  A 80 · P 60 · Q 85" right of the plot


@dataclass(frozen=True)
class Segment:
    x: float
    width: float
    kind: str  # an E10 state (the stylesheet's class), or "oee"
    label: str  # the segment's <title>


@dataclass(frozen=True)
class Row:
    name: str
    y: float  # top of the bar
    segments: list[Segment]
    note: str = ""  # written right of the bar (OEE: its value and factors)
    note_x: float = 0.0


@dataclass
class BarChart:
    width: int = WIDTH
    height: int = 0
    plot: tuple[float, float, float, float] = (LEFT, TOP, WIDTH - RIGHT, TOP)
    rows: list[Row] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)  # x, "50 %"
    row_height: int = ROW


def _frame(count: int, right: float) -> BarChart:
    height = TOP + max(count, 1) * (ROW + GAP) + BOTTOM
    chart = BarChart(height=height, plot=(LEFT, TOP, WIDTH - right, height - BOTTOM))
    x0, _y0, x1, _y1 = chart.plot
    chart.x_ticks = [(round(x0 + (x1 - x0) * p / 100, 1), f"{p} %") for p in range(0, 101, 25)]
    return chart


def _pct(value: float) -> str:
    return f"{value:.0f} %" if value >= 1 or value == 0 else "<1 %"


def e10_bars(
    groups: Sequence[tuple[str, Mapping[str, float], float]], states: Sequence[str]
) -> BarChart:
    """One stacked bar per (group, percent per state, window seconds of all its tools)."""
    chart = _frame(len(groups), RIGHT)
    x0, y0, x1, _y1 = chart.plot
    span = x1 - x0
    for i, (name, share, seconds) in enumerate(groups):
        y = y0 + GAP / 2 + i * (ROW + GAP)
        x = float(x0)
        segments = []
        for state in states:
            part = max(0.0, share.get(state, 0.0))
            if part <= 0:
                continue
            width = span * min(part, 100.0) / 100
            hours = seconds * part / 100 / 3600
            label = f"{name}: {state} {_pct(part)} ({hours:.1f} h of tool time)"
            segments.append(Segment(round(x, 1), round(width, 1), state, label))
            x += width
        chart.rows.append(Row(name, round(y, 1), segments))
    return chart


def oee_bars(
    groups: Sequence[tuple[str, float | None, float | None, float | None, float | None]],
) -> BarChart:
    """One bar per (group, OEE, availability, performance, quality), fractions or None."""
    chart = _frame(len(groups), OEE_RIGHT)
    x0, y0, x1, _y1 = chart.plot
    for i, (name, oee, availability, performance, quality) in enumerate(groups):
        y = y0 + GAP / 2 + i * (ROW + GAP)
        factors = " · ".join(
            f"{letter} {NONE if v is None else f'{100 * v:.0f}'}"
            for letter, v in (("A", availability), ("P", performance), ("Q", quality))
        )
        if oee is None:
            chart.rows.append(Row(name, round(y, 1), [], f"{NONE}   {factors}", x1 + 8))
            continue
        width = (x1 - x0) * min(max(oee, 0.0), 1.0)
        label = f"{name}: OEE {_pct(100 * oee)} (percent: {factors})"
        bar = Segment(float(x0), round(width, 1), "oee", label)
        chart.rows.append(Row(name, round(y, 1), [bar], f"{_pct(100 * oee)}   {factors}", x1 + 8))
    return chart
