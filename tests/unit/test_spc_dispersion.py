"""Run rules on the dispersion charts (moving range, R and S): limits worked out here from the
published constants (d2, d3, c4), each rule's first violating point and nothing before it, and
properties that hold for any series."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mes.quality.limits import ChartKind, ChartLimits, individuals_limits
from mes.quality.rules import (
    DISPERSION_RULES,
    ChartPoint,
    RunRule,
    dispersion_code,
    dispersion_codes,
    evaluate_dispersion_at,
    moving_range,
)

# sigma within = 1 at subgroup size 5 (X̄-R and X̄-S) and for single values (I-MR).
R5 = ChartLimits(ChartKind.XBAR_R, 10.0, 1.0, 2.326, 5).dispersion(5)
S5 = ChartLimits(ChartKind.XBAR_S, 10.0, 1.0, 0.940, 5).dispersion(5)
MR = ChartLimits(ChartKind.INDIVIDUALS, 10.0, 1.0, 1.128, 1).dispersion()


def fired(values: list[float], limits: object, *rules: RunRule) -> list[tuple[str, int]]:
    points = [ChartPoint(v, limits) for v in values]  # type: ignore[arg-type]
    return [
        (v.rule.value, i)
        for i in range(len(points))
        for v in evaluate_dispersion_at(points, i, rules)
    ]


def test_the_dispersion_limits_follow_the_textbook_constants() -> None:
    # R chart, n = 5: centre d2·sigma = 2.326, UCL = (d2 + 3·d3)·sigma = 2.326 + 3·0.864 = 4.918,
    # LCL = max(0, 2.326 - 2.592) = 0 (D3 = 0 for n < 7).
    assert R5.center == pytest.approx(2.326, abs=1e-3)
    assert R5.ucl == pytest.approx(4.918, abs=2e-3)
    assert R5.lcl == 0.0
    # S chart, n = 5: centre c4·sigma = 0.9400, UCL = (c4 + 3·sqrt(1 - c4²))·sigma = 1.964 (B6).
    assert S5.center == pytest.approx(0.9400, abs=1e-4)
    assert S5.ucl == pytest.approx(1.964, abs=1e-3)
    assert S5.lcl == 0.0
    # Moving range of 2: centre d2(2)·sigma = 1.128, UCL = D4·MR̄ = 3.267·1.128 = 3.686.
    assert MR.center == pytest.approx(1.128, abs=1e-3)
    assert MR.ucl == pytest.approx(3.686, abs=2e-3)
    assert MR.lcl == 0.0


def test_a_range_beyond_its_upper_limit_fires_rule_1_there_and_nowhere_before() -> None:
    ranges = [2.0, 2.5, 1.8, 4.9, 3.0, 4.95, 2.2]
    assert fired(ranges, R5, RunRule.BEYOND_3_SIGMA) == [("nelson_1", 5)]  # 4.9 < 4.918 < 4.95
    deviations = [0.9, 1.1, 1.95, 0.7, 2.0]
    assert fired(deviations, S5, RunRule.BEYOND_3_SIGMA) == [("nelson_1", 4)]


def test_a_range_of_zero_never_fires_below_a_lower_limit_cut_at_zero() -> None:
    assert fired([0.0] * 10, R5, RunRule.BEYOND_3_SIGMA) == []


def test_more_variation_for_a_while_fires_the_run_rule_at_its_ninth_point() -> None:
    # Every range above the centre 2.326 but below the UCL: the ninth in a row completes it.
    ranges = [1.0, 2.0, *[3.0] * 9, 1.0]
    assert fired(ranges, R5, RunRule.SAME_SIDE_RUN) == [("nelson_2", 10)]


def test_a_trend_in_the_standard_deviation_fires_at_its_sixth_point() -> None:
    deviations = [0.9, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.6]
    assert fired(deviations, S5, RunRule.TREND) == [("nelson_3", 6)]


def test_moving_ranges_are_the_distance_to_the_previous_value() -> None:
    assert moving_range(None, 5.0) is None
    assert moving_range(5.0, 3.5) == 1.5
    assert moving_range(3.5, 5.0) == 1.5
    # An individuals baseline: MR̄ = mean(|1|, |2|, |1|) = 4/3, sigma = MR̄ / d2(2).
    limits = individuals_limits([10.0, 11.0, 9.0, 10.0])
    assert limits.dispersion_center == pytest.approx(4 / 3)
    assert limits.dispersion().center == pytest.approx(4 / 3, rel=1e-3)


def test_zone_rules_are_refused_on_a_dispersion_chart() -> None:
    points = [ChartPoint(1.0, R5)]
    with pytest.raises(ValueError, match="nelson_5"):
        evaluate_dispersion_at(points, 0, {RunRule.TWO_OF_THREE_BEYOND_2_SIGMA})


def test_dispersion_violations_are_coded_by_chart() -> None:
    assert dispersion_code("individuals", RunRule.BEYOND_3_SIGMA) == "mr_nelson_1"
    assert dispersion_code("xbar_r", RunRule.SAME_SIDE_RUN) == "r_nelson_2"
    assert dispersion_code("xbar_s", RunRule.TREND) == "s_nelson_3"
    assert len(dispersion_codes()) == 3 * len(DISPERSION_RULES)
    assert all(len(code) <= 16 for code in dispersion_codes())  # the violation's rule column


@given(
    st.floats(min_value=0.5, max_value=4.0),
    st.integers(min_value=1, max_value=40),
)
def test_a_constant_in_control_spread_never_fires(value: float, count: int) -> None:
    # Constant: no trend (equal neighbours neither rise nor fall); inside the limits: no rule 1.
    if math.isclose(value, R5.center):
        value += 0.01
    found = fired([value] * count, R5, RunRule.BEYOND_3_SIGMA, RunRule.TREND)
    assert found == []


@given(st.lists(st.floats(min_value=0.0, max_value=4.9), min_size=1, max_size=30))
def test_ranges_within_the_limits_never_fire_rule_1(ranges: list[float]) -> None:
    assert fired(ranges, R5, RunRule.BEYOND_3_SIGMA) == []


@given(
    st.lists(st.floats(min_value=0.0, max_value=4.9), min_size=1, max_size=20),
    st.floats(min_value=5.0, max_value=100.0),
)
def test_one_range_beyond_the_limit_fires_rule_1_exactly_there(
    ranges: list[float], wild: float
) -> None:
    at = len(ranges)
    assert fired([*ranges, wild], R5, RunRule.BEYOND_3_SIGMA) == [("nelson_1", at)]
