"""The metrics page's bar charts: each E10 bar spans its states in order and fills the axis when
the shares add up to 100 %, and each OEE bar is as long as its OEE, with its factors named."""

from __future__ import annotations

import pytest

from mes.console import metrics_svg

STATES = ["PRD", "SBY", "ENG", "SDT", "UDT", "NST"]


def test_e10_bars_stack_the_states_in_order_across_the_axis() -> None:
    chart = metrics_svg.e10_bars(
        [("ETCH", {"PRD": 50.0, "UDT": 25.0, "SBY": 25.0}, 7200.0), ("IDLE", {}, 0.0)], STATES
    )
    x0, _y0, x1, _y1 = chart.plot
    etch, idle = chart.rows
    assert [s.kind for s in etch.segments] == ["PRD", "SBY", "UDT"]  # the E10 order, not the dict's
    assert etch.segments[0].x == x0
    assert etch.segments[0].width == pytest.approx((x1 - x0) / 2, abs=0.1)
    end = etch.segments[-1].x + etch.segments[-1].width
    assert end == pytest.approx(x1, abs=0.2)
    assert etch.segments[2].label == "ETCH: UDT 25 % (0.5 h of tool time)"
    assert idle.segments == []
    assert idle.y > etch.y
    assert [label for _x, label in chart.x_ticks] == ["0 %", "25 %", "50 %", "75 %", "100 %"]
    assert chart.height > idle.y + chart.row_height


def test_oee_bars_are_as_long_as_the_oee_and_name_the_factors() -> None:
    chart = metrics_svg.oee_bars(
        [("LITHO", 0.4, 0.8, 0.5, 1.0), ("WET", None, 0.9, None, None), ("OVER", 1.3, 1, 1, 1)]
    )
    x0, _y0, x1, _y1 = chart.plot
    litho, wet, over = chart.rows
    (bar,) = litho.segments
    assert bar.width == pytest.approx(0.4 * (x1 - x0), abs=0.1)
    assert litho.note == "40 %   A 80 · P 50 · Q 100"
    assert litho.note_x > x1  # a column of its own, right of the plot
    assert wet.segments == []
    dash = metrics_svg.NONE
    assert wet.note == f"{dash}   A 90 · P {dash} · Q {dash}"
    assert over.segments[0].width == pytest.approx(x1 - x0, abs=0.1)  # clipped to the axis
