"""SPC control limits, capability and run rules: worked examples whose answers are computed here
by hand, and properties that must hold for any chart."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mes.quality.limits import (
    ChartKind,
    Limits,
    LimitsError,
    c4,
    capability,
    d2,
    individuals_limits,
    subgroup_limits,
)
from mes.quality.rules import (
    ALL_RULES,
    WESTERN_ELECTRIC,
    ChartPoint,
    RuleSettings,
    RunRule,
    evaluate,
    evaluate_at,
    out_of_spec,
    points_for,
)

UNIT = Limits(center=0.0, sigma=1.0)


def fired(values: list[float], *rules: RunRule, run_length: int = 9) -> list[tuple[str, int]]:
    settings = RuleSettings(frozenset(rules), run_length)
    return [(v.rule.value, v.index) for v in evaluate(points_for(values, UNIT), settings)]


# --- bias constants and limits ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected_d2", "expected_c4"),
    [(2, 1.128, 0.7979), (3, 1.693, 0.8862), (5, 2.326, 0.9400), (10, 3.078, 0.9727)],
)
def test_bias_constants_match_the_published_tables(
    n: int, expected_d2: float, expected_c4: float
) -> None:
    assert d2(n) == pytest.approx(expected_d2, abs=5e-4)
    assert c4(n) == pytest.approx(expected_c4, abs=5e-5)


def test_individuals_limits_from_the_mean_moving_range() -> None:
    limits = individuals_limits([10, 12, 11, 13, 9])
    # moving ranges 2, 1, 2, 4: MR-bar 2.25; sigma = 2.25 / d2(2)
    assert limits.center == pytest.approx(11.0)
    assert limits.sigma_within == pytest.approx(2.25 / 1.1284, rel=1e-3)
    assert limits.location().ucl == pytest.approx(11 + 3 * 2.25 / 1.1284, rel=1e-3)
    # the MR chart's upper limit is D4(2) * MR-bar = 3.267 * 2.25
    assert limits.dispersion().ucl == pytest.approx(3.267 * 2.25, rel=1e-3)
    assert limits.dispersion().lcl == 0.0


def test_xbar_r_limits_use_the_mean_range_and_shrink_with_subgroup_size() -> None:
    limits = subgroup_limits([[1, 2, 3], [2, 3, 4], [3, 4, 5]], ChartKind.XBAR_R)
    sigma = 2 / 1.6926  # every range is 2; d2(3)
    assert limits.center == pytest.approx(3.0)
    assert limits.sigma_within == pytest.approx(sigma, rel=1e-3)
    # A2(3) = 3 / (d2 sqrt 3) = 1.023: the X-bar limits are 3 +- 1.023 * R-bar
    assert limits.location().ucl == pytest.approx(3 + 1.023 * 2, rel=1e-3)
    assert limits.location(n=2).ucl > limits.location(n=3).ucl
    # D4(3) = 2.574
    assert limits.dispersion().ucl == pytest.approx(2.574 * 2, rel=2e-3)


def test_xbar_s_limits_use_c4() -> None:
    groups = [[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 5.0]]
    limits = subgroup_limits(groups, ChartKind.XBAR_S)
    s_values = [math.sqrt(5 / 3), math.sqrt(6 / 3)]
    assert limits.sigma_within == pytest.approx(sum(s / 0.9213 for s in s_values) / 2, rel=1e-3)
    assert limits.center == pytest.approx(22 / 8)
    # B4(4) = 2.266
    assert limits.dispersion().ucl == pytest.approx(2.266 * sum(s_values) / 2, rel=2e-3)


def test_the_grand_mean_weights_every_value_alike() -> None:
    limits = subgroup_limits([[0.0, 2.0], [10.0, 11.0, 12.0, 13.0]], ChartKind.XBAR_R)
    assert limits.center == pytest.approx(48 / 6)


@pytest.mark.parametrize(
    "build",
    [
        lambda: individuals_limits([5.0]),
        lambda: individuals_limits([5.0, 5.0, 5.0]),
        lambda: subgroup_limits([], ChartKind.XBAR_R),
        lambda: subgroup_limits([[1.0]], ChartKind.XBAR_R),
        lambda: subgroup_limits([[float(i) for i in range(26)]], ChartKind.XBAR_S),
        lambda: subgroup_limits([[1.0, 2.0]], ChartKind.INDIVIDUALS),
        lambda: Limits(0.0, 0.0),
        lambda: Limits(math.nan, 1.0),
    ],
)
def test_limits_that_cannot_be_computed_are_refused(build: object) -> None:
    with pytest.raises(LimitsError):
        build()  # type: ignore[operator]


def test_capability_from_within_and_overall_sigma() -> None:
    values = [-1.0, 0.0, 1.0, 0.0]
    result = capability(values, sigma_within=0.5, lsl=-3.0, usl=3.0)
    assert result.cp == pytest.approx(6 / 3)
    assert result.cpk == pytest.approx(3 / 1.5)
    overall = math.sqrt(2 / 3)
    assert result.pp == pytest.approx(6 / (6 * overall))
    assert result.ppk == pytest.approx(3 / (3 * overall))


def test_an_off_centre_process_has_cpk_below_cp_and_one_sided_specs_have_no_cp() -> None:
    values = [1.0, 2.0, 3.0]
    both = capability(values, sigma_within=1.0, lsl=-4.0, usl=5.0)
    assert both.cp == pytest.approx(1.5)
    assert both.cpk == pytest.approx(1.0)  # (5 - 2) / 3
    upper_only = capability(values, sigma_within=1.0, lsl=None, usl=5.0)
    assert upper_only.cp is None
    assert upper_only.cpk == pytest.approx(1.0)
    with pytest.raises(LimitsError):
        capability(values, sigma_within=1.0, lsl=None, usl=None)
    with pytest.raises(LimitsError):
        capability(values, sigma_within=1.0, lsl=5.0, usl=5.0)


def test_out_of_spec_is_strictly_outside_the_specification() -> None:
    assert out_of_spec(10.1, 9.0, 10.0)
    assert out_of_spec(8.9, 9.0, 10.0)
    assert not out_of_spec(10.0, 9.0, 10.0)
    assert not out_of_spec(9.0, 9.0, None)


# --- each rule's first violating point and nothing before it ---------------------------------


def test_rule_1_one_point_beyond_3_sigma() -> None:
    assert fired([0.0, 2.9, -3.0, 3.01, -4.0], RunRule.BEYOND_3_SIGMA) == [
        ("nelson_1", 3),
        ("nelson_1", 4),
    ]


def test_rule_2_nine_in_a_row_on_one_side_and_eight_for_western_electric() -> None:
    values = [-0.5] + [0.2] * 9
    assert fired(values, RunRule.SAME_SIDE_RUN) == [("nelson_2", 9)]
    assert fired(values, RunRule.SAME_SIDE_RUN, run_length=8) == [
        ("nelson_2", 8),
        ("nelson_2", 9),
    ]
    # a point on the centre line breaks the run
    assert fired([0.2] * 4 + [0.0] + [0.2] * 8, RunRule.SAME_SIDE_RUN) == []


def test_rule_3_six_in_a_row_rising_or_falling() -> None:
    assert fired([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], RunRule.TREND) == [("nelson_3", 5)]
    assert fired([0.5, 0.4, 0.3, 0.3, 0.2, 0.1, 0.0], RunRule.TREND) == []  # a tie breaks it
    assert fired([0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1], RunRule.TREND) == [
        ("nelson_3", 5),
        ("nelson_3", 6),
    ]


def test_rule_4_fourteen_alternating() -> None:
    values = [0.1, -0.1] * 7
    assert fired(values, RunRule.ALTERNATING) == [("nelson_4", 13)]
    assert fired(values[:13], RunRule.ALTERNATING) == []


def test_rule_5_two_of_three_beyond_2_sigma_on_one_side() -> None:
    assert fired([2.5, 0.0, 2.1], RunRule.TWO_OF_THREE_BEYOND_2_SIGMA) == [("nelson_5", 2)]
    assert fired([2.5, 2.1], RunRule.TWO_OF_THREE_BEYOND_2_SIGMA) == [("nelson_5", 1)]
    assert fired([2.5, 0.0, -2.5], RunRule.TWO_OF_THREE_BEYOND_2_SIGMA) == []
    assert fired([2.5, 0.0, 0.0, 2.5], RunRule.TWO_OF_THREE_BEYOND_2_SIGMA) == []
    [violation] = evaluate(
        points_for([2.5, 0.0, 2.1], UNIT),
        RuleSettings(frozenset({RunRule.TWO_OF_THREE_BEYOND_2_SIGMA})),
    )
    assert violation.points == (0, 2)


def test_rule_6_four_of_five_beyond_1_sigma_on_one_side() -> None:
    rule = RunRule.FOUR_OF_FIVE_BEYOND_1_SIGMA
    assert fired([-1.5, -1.5, 0.0, -1.5, -1.2], rule) == [("nelson_6", 4)]
    assert fired([-1.5, -1.5, 0.0, 1.5, -1.2], rule) == []


def test_rule_7_fifteen_within_1_sigma() -> None:
    values = [0.5, -0.5] * 8
    assert fired(values, RunRule.FIFTEEN_WITHIN_1_SIGMA) == [("nelson_7", 14), ("nelson_7", 15)]


def test_rule_8_eight_outside_1_sigma_on_both_sides() -> None:
    assert fired([1.5, -1.5] * 4, RunRule.EIGHT_OUTSIDE_1_SIGMA) == [("nelson_8", 7)]
    assert fired([1.5] * 8, RunRule.EIGHT_OUTSIDE_1_SIGMA) == []  # a shift, not a mixture


def test_western_electric_is_rules_1_5_6_and_the_run() -> None:
    assert {rule.value for rule in WESTERN_ELECTRIC} == {
        "nelson_1",
        "nelson_2",
        "nelson_5",
        "nelson_6",
    }
    with pytest.raises(ValueError, match="8 or 9"):
        RuleSettings(run_length=7)


def test_points_with_their_own_limits_are_judged_on_their_own_sigma() -> None:
    wide, narrow = Limits(0.0, 2.0), Limits(0.0, 1.0)
    points = [ChartPoint(4.0, wide), ChartPoint(4.0, narrow)]
    assert [
        v.index for v in evaluate(points, RuleSettings(frozenset({RunRule.BEYOND_3_SIGMA})))
    ] == [1]


# --- properties -----------------------------------------------------------------------------

values_in_sigma = st.lists(
    st.floats(min_value=-5, max_value=5, allow_nan=False, allow_subnormal=False),
    min_size=1,
    max_size=40,
)
all_rules = RuleSettings(ALL_RULES, 9)


def _signature(points: list[ChartPoint]) -> list[tuple[str, int, tuple[int, ...]]]:
    return [(v.rule.value, v.index, v.points) for v in evaluate(points, all_rules)]


@given(st.integers(min_value=1, max_value=60), st.floats(min_value=-100, max_value=100))
def test_a_constant_series_on_the_centre_line_breaks_no_western_electric_rule(
    length: int, center: float
) -> None:
    limits = Limits(center, 1.0)
    points = points_for([center] * length, limits)
    assert evaluate(points, RuleSettings(WESTERN_ELECTRIC, 8)) == []
    # ...but it is the textbook stratification: rule 7 fires from the 15th point on.
    only_7 = evaluate(points, RuleSettings(frozenset({RunRule.FIFTEEN_WITHIN_1_SIGMA})))
    assert [v.index for v in only_7] == list(range(14, length))


@given(
    st.integers(min_value=0, max_value=30),
    st.integers(min_value=31, max_value=40),
    st.floats(min_value=3.001, max_value=50),
    st.sampled_from([1, -1]),
)
def test_one_shifted_point_fires_rule_1_exactly_there(
    at: int, length: int, k: float, side: int
) -> None:
    values = [0.0] * length
    values[at] = side * k
    assert fired(values, RunRule.BEYOND_3_SIGMA) == [("nelson_1", at)]


@given(st.integers(min_value=0, max_value=20), st.floats(min_value=1.01, max_value=2.9))
def test_a_sustained_shift_fires_the_run_rule_nine_points_after_it_starts(
    start: int, k: float
) -> None:
    values = [0.0] * start + [k] * 12
    assert fired(values, RunRule.SAME_SIDE_RUN)[0] == ("nelson_2", start + 8)
    assert fired(values, RunRule.FOUR_OF_FIVE_BEYOND_1_SIGMA)[0] == ("nelson_6", start + 3)


@given(values_in_sigma)
def test_rules_never_look_ahead(values: list[float]) -> None:
    points = points_for(values, UNIT)
    for index in range(len(points)):
        assert evaluate_at(points[: index + 1], index, all_rules) == evaluate_at(
            points, index, all_rules
        )


@given(
    values_in_sigma,
    st.floats(min_value=0.01, max_value=1000),
    st.floats(min_value=-1000, max_value=1000),
)
def test_rules_do_not_depend_on_units_or_offset(
    values: list[float], scale: float, offset: float
) -> None:
    # Values on exact zone boundaries may round either way after scaling: keep them off.
    values = [v + 1e-6 if abs(abs(v) - round(abs(v))) < 1e-6 else v for v in values]
    moved = Limits(offset, scale)
    original = _signature(points_for(values, UNIT))
    transformed = _signature(points_for([offset + scale * v for v in values], moved))
    assert original == transformed


@given(values_in_sigma)
def test_rules_are_symmetric_about_the_centre_line(values: list[float]) -> None:
    mirrored = [-v for v in values]
    assert _signature(points_for(values, UNIT)) == _signature(points_for(mirrored, UNIT))


@given(
    # Measurements to a thousandth: variation far below an offset's precision is not data.
    st.lists(st.integers(-(10**6), 10**6).map(lambda i: i / 1000), min_size=2, max_size=30),
    st.floats(min_value=-1e3, max_value=1e3),
    st.floats(min_value=0.1, max_value=10),
)
def test_individuals_limits_follow_the_data_scale_and_offset(
    values: list[float], offset: float, scale: float
) -> None:
    try:
        base = individuals_limits(values)
    except LimitsError:
        assert len(set(values)) == 1  # only a flat baseline is refused
        return
    moved = individuals_limits([offset + scale * v for v in values])
    assert moved.center == pytest.approx(offset + scale * base.center, abs=1e-6)
    assert moved.sigma_within == pytest.approx(scale * base.sigma_within, rel=1e-9, abs=1e-9)
