"""The SPC chart's SVG geometry (pure): points inside the plot, higher values higher, limits
placed where their values are, abnormal points marked, degenerate inputs drawn."""

from __future__ import annotations

from mes.console import spc_svg
from mes.console.spc_svg import PointIn


def test_points_and_lines_are_placed_by_value_inside_the_plot():
    points = [PointIn(i + 1, v) for i, v in enumerate([10.0, 11.0, 9.0, 10.5])]
    points.append(PointIn(5, 14.0, violations=("nelson_1",)))
    points.append(PointIn(6, 16.0, out_of_spec=True, lot="L1"))
    d = spc_svg.draw(points, center=10.0, ucl=13.0, lcl=7.0, usl=15.0, lsl=5.0)
    x0, y0, x1, y1 = d.plot
    assert all(x0 <= m.x <= x1 and y0 <= m.y <= y1 for m in d.marks)
    assert [m.x for m in d.marks] == sorted(m.x for m in d.marks)
    by_name = {line.name: line.y for line in d.lines}
    assert by_name["USL"] < by_name["UCL"] < by_name["CL"] < by_name["LCL"] < by_name["LSL"]
    # Linear: the centre sits halfway between the control limits.
    assert abs(by_name["CL"] - (by_name["UCL"] + by_name["LCL"]) / 2) < 0.2
    assert [m.state for m in d.marks] == ["ok"] * 4 + ["violation", "oos"]
    assert d.marks[5].label == "#6 16 lot L1: out of spec"
    assert d.marks[4].label == "#5 14: nelson_1"
    assert d.marks[0].y == by_name["CL"]  # 10.0 on the centre line
    assert d.path.count(",") == 6
    assert d.ticks
    assert all(y0 <= y <= y1 for y, _label in d.ticks)


def test_no_limits_one_point_and_a_flat_series_are_drawn():
    assert spc_svg.draw([]).marks == []
    (only,) = spc_svg.draw([PointIn(1, 5.0)]).marks
    assert only.x == (spc_svg.LEFT + spc_svg.WIDTH - spc_svg.RIGHT) / 2
    flat = spc_svg.draw([PointIn(1, 0.0), PointIn(2, 0.0)])
    assert len({m.y for m in flat.marks}) == 1
    assert flat.lines == []


def test_zones_lie_one_and_two_sigma_from_the_centre_and_points_name_their_lot():
    # CL 100, UCL 106, LCL 97: sigma 2 above (6 / 3), 1 below (3 / 3).
    zones = dict((name, value) for value, name in spc_svg.zone_lines(100.0, 106.0, 97.0))
    assert zones == {"+1\u03c3": 102.0, "+2\u03c3": 104.0, "-1\u03c3": 99.0, "-2\u03c3": 98.0}
    assert spc_svg.zone_lines(100.0, None, 97.0) == []
    assert spc_svg.zone_lines(100.0, 100.0, 100.0) == []  # no spread: no zones
    drawing = spc_svg.draw([PointIn(1, 101.0, lot="L26-0001")], center=100.0, ucl=106.0, lcl=97.0)
    zone_ys = {line.name: line.y for line in drawing.lines if line.kind == "zone"}
    limits = {line.name: line.y for line in drawing.lines if line.kind != "zone"}
    # Screen y grows downwards: +2 sigma lies between UCL and +1 sigma, -2 sigma below -1 sigma.
    assert limits["UCL"] < zone_ys["+2\u03c3"] < zone_ys["+1\u03c3"] < limits["CL"]
    assert limits["CL"] < zone_ys["-1\u03c3"] < zone_ys["-2\u03c3"] < limits["LCL"]
    assert drawing.marks[0].lot == "L26-0001"
