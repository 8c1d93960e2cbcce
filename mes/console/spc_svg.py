"""The geometry of an SPC chart drawn as inline SVG on the server: pure, no database.

Server-side SVG needs no script library and works offline; the page's template only writes out
the coordinates computed here. Points are placed by their position along the chart (not by
time: a control chart is read point after point), values are mapped onto a y range that holds
every point, the control limits and the spec limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 900, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 96, 14, 30  # margins: y tick labels left, line names right


@dataclass(frozen=True)
class Mark:
    """One plotted point."""

    x: float
    y: float
    number: int
    value: float
    state: str  # "ok", "violation" (a run rule broken) or "oos" (a value out of spec)
    label: str  # for the point's <title>: number, value, lot, what it broke
    lot: str = ""  # the point links to its lot's page


@dataclass(frozen=True)
class Line:
    """A horizontal reference line (centre, control or spec limit)."""

    y: float
    value: float
    name: str  # "CL", "UCL", "LCL", "USL", "LSL", "Target", "+1 sigma", "-2 sigma" …
    kind: str  # "center", "control", "spec" or "zone": the stylesheet's class


@dataclass
class ChartDrawing:
    width: int = WIDTH
    height: int = HEIGHT
    marks: list[Mark] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    path: str = ""  # the polyline joining the points
    ticks: list[tuple[float, str]] = field(default_factory=list)  # y, label
    x_ticks: list[tuple[float, str]] = field(default_factory=list)  # x, point number
    plot: tuple[float, float, float, float] = (LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM)


@dataclass(frozen=True)
class PointIn:
    number: int
    value: float
    violations: Sequence[str] = ()
    out_of_spec: bool = False
    lot: str = ""


def _nice_step(span: float, count: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``count`` ticks."""
    raw = span / count
    power = 10.0 ** _floor_log10(raw)
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power  # pragma: no cover - the loop always returns


def _floor_log10(x: float) -> int:
    exponent = 0
    while x >= 10:
        x /= 10
        exponent += 1
    while x < 1:
        x *= 10
        exponent -= 1
    return exponent


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def draw(
    points: Sequence[PointIn],
    *,
    center: float | None = None,
    ucl: float | None = None,
    lcl: float | None = None,
    usl: float | None = None,
    lsl: float | None = None,
    target: float | None = None,
) -> ChartDrawing:
    """Coordinates for the points and the reference lines (limits given as None are left out)."""
    drawing = ChartDrawing()
    x0, y0, x1, y1 = drawing.plot
    references = [
        (center, "CL", "center"),
        (ucl, "UCL", "control"),
        (lcl, "LCL", "control"),
        (usl, "USL", "spec"),
        (lsl, "LSL", "spec"),
        (target, "Target", "spec"),
    ]
    values = [p.value for p in points] + [v for v, _n, _k in references if v is not None]
    if not values:
        return drawing
    low, high = min(values), max(values)
    span = high - low or abs(high) or 1.0
    low, high = low - span * 0.06, high + span * 0.06

    def y_of(v: float) -> float:
        return round(y1 - (v - low) / (high - low) * (y1 - y0), 1)

    count = len(points)

    def x_of(i: int) -> float:
        if count == 1:
            return round((x0 + x1) / 2, 1)
        return round(x0 + 8 + i * (x1 - x0 - 16) / (count - 1), 1)

    for value, name, kind in references:
        if value is not None:
            drawing.lines.append(Line(y_of(value), value, name, kind))
    # The run rules' zones: one and two sigma either side of the centre (the control limits
    # are three), drawn faintly so a reader sees "2 of 3 beyond 2 sigma" where the rule saw it.
    for value, name in zone_lines(center, ucl, lcl):
        drawing.lines.append(Line(y_of(value), value, name, "zone"))
    step = _nice_step(high - low)
    tick = (low // step + 1) * step
    while tick < high:
        drawing.ticks.append((y_of(tick), _fmt(tick)))
        tick += step
    for i, p in enumerate(points):
        state = "oos" if p.out_of_spec else "violation" if p.violations else "ok"
        broke = ", ".join(p.violations) + (" out of spec" if p.out_of_spec else "")
        label = f"#{p.number} {_fmt(p.value)}" + (f" lot {p.lot}" if p.lot else "")
        label += f": {broke.strip()}" if broke else ""
        drawing.marks.append(Mark(x_of(i), y_of(p.value), p.number, p.value, state, label, p.lot))
    drawing.path = " ".join(f"{m.x},{m.y}" for m in drawing.marks)
    every = max(1, count // 10)
    drawing.x_ticks = [(m.x, str(m.number)) for i, m in enumerate(drawing.marks) if i % every == 0]
    return drawing


def zone_lines(
    center: float | None, ucl: float | None, lcl: float | None
) -> list[tuple[float, str]]:
    """The zone boundaries at one and two sigma, sigma being a third of each limit's distance
    from the centre (asymmetric limits give each side its own); none without the three."""
    if center is None or ucl is None or lcl is None or not lcl < center < ucl:
        return []
    up, down = (ucl - center) / 3, (center - lcl) / 3
    return [
        (center + up, "+1\u03c3"),
        (center + 2 * up, "+2\u03c3"),
        (center - down, "-1\u03c3"),
        (center - 2 * down, "-2\u03c3"),
    ]
