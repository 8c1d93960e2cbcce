"""Recipe rules without a database: checksum, parameter schemas, body diffs, context resolution.

Every expected answer is worked out by hand in the test, not by calling the code under test.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mes.recipes.rules import (
    PRECEDENCE,
    Context,
    ContextRule,
    Kind,
    ParameterChange,
    ParameterSpec,
    body_checksum,
    body_problems,
    context_key,
    diff_bodies,
    matches,
    resolve,
    specificity,
)

# --- checksum ---------------------------------------------------------------------------------


def test_checksum_is_sha256_of_the_sorted_compact_utf8_json():
    body = {"parameters": [{"value": "Ü", "name": "gas"}]}
    text = '{"parameters":[{"name":"gas","value":"Ü"}]}'
    assert body_checksum(body) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_checksum_ignores_key_order_but_not_values_or_parameter_order():
    a = {"parameters": [{"name": "p", "value": 1}, {"name": "q", "value": 2}]}
    b = {"parameters": [{"value": 1, "name": "p"}, {"value": 2, "name": "q"}]}
    assert body_checksum(a) == body_checksum(b)
    assert body_checksum(a) != body_checksum({"parameters": [{"name": "p", "value": 2}]})
    # The list order of parameters is content: a tool may apply them in order.
    assert body_checksum(a) != body_checksum({"parameters": list(reversed(a["parameters"]))})


def test_checksum_refuses_non_finite_numbers():
    with pytest.raises(ValueError, match="JSON compliant"):
        body_checksum({"parameters": [{"name": "p", "value": float("nan")}]})


# --- parameter schemas ------------------------------------------------------------------------

SPECS = {
    "rf_power": ParameterSpec("rf_power", Kind.NUMBER, unit="W", lower=50, upper=600),
    "gas": ParameterSpec("gas", Kind.TEXT, required=True),
    "endpoint": ParameterSpec("endpoint", Kind.FLAG),
}


def test_a_body_that_fits_its_schema_has_no_problems():
    body = [
        {"name": "rf_power", "value": 350, "unit": "W", "min": 50, "max": 600},
        {"name": "gas", "value": "CF4", "unit": None},
        {"name": "endpoint", "value": False},
    ]
    assert body_problems(body, SPECS) == []


def test_unknown_parameter():
    body = [{"name": "gas", "value": "CF4"}, {"name": "bias", "value": 3}]
    assert body_problems(body, SPECS) == ["bias: not a parameter of this tool group"]


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        (
            {"name": "rf_power", "value": "high", "unit": "W"},
            "rf_power: must be a number, got a text",
        ),
        (
            {"name": "rf_power", "value": True, "unit": "W"},
            "rf_power: must be a number, got a flag",
        ),
        ({"name": "endpoint", "value": 1}, "endpoint: must be a flag, got a number"),
        ({"name": "endpoint", "value": "yes"}, "endpoint: must be a flag, got a text"),
    ],
)
def test_wrong_kind_is_reported_once(parameter, message):
    # A wrong kind says nothing about unit or limits: one message, not a cascade.
    assert body_problems([{"name": "gas", "value": "Ar"}, parameter], SPECS) == [message]


def test_integer_and_float_values_are_both_numbers():
    for value in (100, 100.5):
        body = [{"name": "gas", "value": "Ar"}, {"name": "rf_power", "value": value, "unit": "W"}]
        assert body_problems(body, SPECS) == []


def test_wrong_or_missing_unit():
    gas = {"name": "gas", "value": "Ar"}
    assert body_problems([gas, {"name": "rf_power", "value": 100, "unit": "kW"}], SPECS) == [
        "rf_power: unit must be 'W', got 'kW'"
    ]
    assert body_problems([gas, {"name": "rf_power", "value": 100}], SPECS) == [
        "rf_power: unit must be 'W', got None"
    ]
    # A parameter without a unit in the schema must not bring one.
    assert body_problems([{"name": "gas", "value": "Ar", "unit": "sccm"}], SPECS) == [
        "gas: unit must be None, got 'sccm'"
    ]
    # An empty unit is no unit.
    assert body_problems([{"name": "gas", "value": "Ar", "unit": ""}], SPECS) == []


def test_value_and_own_limits_must_lie_inside_the_tool_limits():
    gas = {"name": "gas", "value": "Ar"}
    low = {"name": "rf_power", "value": 40, "unit": "W"}
    assert body_problems([gas, low], SPECS) == ["rf_power: value 40 is below the tool limit 50"]
    high = {"name": "rf_power", "value": 601, "unit": "W"}
    assert body_problems([gas, high], SPECS) == ["rf_power: value 601 is above the tool limit 600"]
    # Value inside, but the recipe's own window reaches outside the tool's on both sides.
    wide = {"name": "rf_power", "value": 300, "unit": "W", "min": 10, "max": 700}
    assert body_problems([gas, wide], SPECS) == [
        "rf_power: min 10 is below the tool limit 50",
        "rf_power: max 700 is above the tool limit 600",
    ]
    # On the limits is inside.
    edge = {"name": "rf_power", "value": 50, "unit": "W", "min": 50, "max": 600}
    assert body_problems([gas, edge], SPECS) == []


def test_one_sided_tool_limits():
    specs = {"t": ParameterSpec("t", Kind.NUMBER, lower=0)}
    assert body_problems([{"name": "t", "value": 1e9}], specs) == []
    assert body_problems([{"name": "t", "value": -1}], specs) == [
        "t: value -1 is below the tool limit 0"
    ]


def test_required_parameter_missing():
    assert body_problems([{"name": "endpoint", "value": True}], SPECS) == [
        "gas: required by this tool group"
    ]


def test_every_problem_is_reported_at_once():
    body = [
        {"name": "rf_power", "value": 900, "unit": "mW"},
        {"name": "bias", "value": 1},
    ]
    assert body_problems(body, SPECS) == [
        "rf_power: unit must be 'W', got 'mW'",
        "rf_power: value 900 is above the tool limit 600",
        "bias: not a parameter of this tool group",
        "gas: required by this tool group",
    ]


def test_a_tool_group_without_a_schema_accepts_anything():
    body = [{"name": "anything", "value": "at all", "unit": "furlong"}, {"name": "x", "value": 1}]
    assert body_problems(body, {}) == []


# --- body differences ------------------------------------------------------------------------


def test_diff_bodies_in_name_order_with_the_fields_that_changed():
    before = [
        {"name": "rf_power", "value": 350, "unit": "W", "min": 100, "max": 500},
        {"name": "gas", "value": "CF4"},
        {"name": "time_s", "value": 60},
    ]
    after = [
        {"name": "time_s", "value": 60},  # unchanged, and moved in the list
        {"name": "rf_power", "value": 400, "unit": "W", "min": 100, "max": 550},
        {"name": "endpoint", "value": True},
    ]
    assert diff_bodies(before, after) == [
        ParameterChange("added", "endpoint", None, {"name": "endpoint", "value": True}),
        ParameterChange("removed", "gas", {"name": "gas", "value": "CF4"}, None),
        ParameterChange("changed", "rf_power", before[0], after[1], ("max", "value")),
    ]


def test_diff_bodies_sees_a_field_that_appears():
    before = [{"name": "p", "value": 1}]
    after = [{"name": "p", "value": 1, "unit": "s"}]
    assert diff_bodies(before, after) == [
        ParameterChange("changed", "p", before[0], after[0], ("unit",))
    ]


parameters = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["a", "b", "c", "d", "e"]),
            "value": st.one_of(st.integers(-5, 5), st.booleans(), st.sampled_from(["x", "y"])),
        },
        optional={"unit": st.sampled_from(["W", "s"])},
    ),
    max_size=5,
    unique_by=lambda p: p["name"],
)


@given(parameters)
def test_a_body_differs_from_itself_in_nothing(body):
    assert diff_bodies(body, body) == []
    assert diff_bodies(body, list(reversed(body))) == []


@given(parameters, parameters)
def test_diff_bodies_names_exactly_the_parameters_that_differ(before, after):
    old = {p["name"]: p for p in before}
    new = {p["name"]: p for p in after}
    changes = diff_bodies(before, after)
    assert [c.name for c in changes] == sorted(
        n for n in old.keys() | new.keys() if old.get(n) != new.get(n)
    )
    reverse = {"added": "removed", "removed": "added", "changed": "changed"}
    assert [(reverse[c.kind], c.name) for c in changes] == [
        (c.kind, c.name) for c in diff_bodies(after, before)
    ]


# --- context resolution ----------------------------------------------------------------------

CTX = Context(product="LOGIC28", step="GATE_ETCH", tool_group="ETCH_POLY", tool="F1-ETPO01")


def rule(rule_id: int, recipe: str, group: str = "ETCH_POLY", **named: str) -> ContextRule:
    return ContextRule(rule_id, "ETPO_GATE", recipe, group, **named)


def test_precedence_is_chamber_tool_step_product_tool_group():
    assert PRECEDENCE == ("chamber", "tool", "step", "product", "tool_group")


def test_specificity_flags_the_named_dimensions_in_precedence_order():
    r = rule(1, "X", product="LOGIC28", tool="F1-ETPO01")
    assert specificity(r) == (False, True, False, True, False)
    assert r.named() == {"tool": "F1-ETPO01", "product": "LOGIC28"}
    assert specificity(rule(2, "X")) == (False,) * 5


def test_no_rule_means_the_logical_name_itself():
    result = resolve("ETPO_GATE", [], CTX)
    assert (result.recipe, result.rule, result.matched) == ("ETPO_GATE", None, ())


def test_rules_for_another_logical_recipe_or_context_do_not_match():
    other_name = ContextRule(1, "ETPO_STI", "X", "ETCH_POLY")
    other_product = rule(2, "Y", product="ANALOG180")
    other_tool = rule(3, "Z", tool="F1-ETPO02")
    other_step = rule(4, "W", step="STI_ETCH")
    result = resolve("ETPO_GATE", [other_name, other_product, other_tool, other_step], CTX)
    assert (result.recipe, result.rule, result.matched) == ("ETPO_GATE", None, ())


def test_tool_beats_product_and_step():
    by_product_step = rule(1, "PS", product="LOGIC28", step="GATE_ETCH")
    by_tool = rule(2, "T", tool="F1-ETPO01")
    for rules in ([by_product_step, by_tool], [by_tool, by_product_step]):
        result = resolve("ETPO_GATE", rules, CTX)
        assert result.recipe == "T"
        assert result.rule == by_tool
        assert result.matched == (by_tool, by_product_step)


def test_product_and_step_beat_product_alone_and_step_alone():
    by_product = rule(1, "P", product="LOGIC28")
    by_step = rule(2, "S", step="GATE_ETCH")
    by_both = rule(3, "PS", product="LOGIC28", step="GATE_ETCH")
    by_group = rule(4, "G", tool_group="ETCH_POLY")
    result = resolve("ETPO_GATE", [by_group, by_product, by_both, by_step], CTX)
    assert result.recipe == "PS"
    # Most specific first: step outranks product, and anything outranks the tool group alone.
    assert result.matched == (by_both, by_step, by_product, by_group)
    # Without the combined rule, step alone beats product alone.
    assert resolve("ETPO_GATE", [by_product, by_step], CTX).recipe == "S"


def test_chamber_beats_tool_but_only_in_that_chamber():
    by_tool = rule(1, "T", tool="F1-ETPO01")
    by_chamber = rule(2, "C", tool="F1-ETPO01", chamber="PM2")
    in_pm2 = Context("LOGIC28", "GATE_ETCH", "ETCH_POLY", "F1-ETPO01", chamber="PM2")
    in_pm1 = Context("LOGIC28", "GATE_ETCH", "ETCH_POLY", "F1-ETPO01", chamber="PM1")
    assert resolve("ETPO_GATE", [by_tool, by_chamber], in_pm2).matched == (by_chamber, by_tool)
    assert resolve("ETPO_GATE", [by_tool, by_chamber], in_pm1).recipe == "T"
    # No chamber in the context (a whole-tool track-in): chamber rules do not apply.
    assert resolve("ETPO_GATE", [by_tool, by_chamber], CTX).recipe == "T"


def test_a_rule_for_a_recipe_of_another_tool_group_never_matches():
    # Even a rule naming only the product (which does match) cannot send an ETCH_POLY step to
    # an ETCH_OXIDE recipe.
    foreign = rule(1, "ETOX_CONTACT", group="ETCH_OXIDE", product="LOGIC28")
    assert not matches(foreign, CTX)
    assert resolve("ETPO_GATE", [foreign], CTX).recipe == "ETPO_GATE"
    own = rule(2, "ETPO_ALT", product="LOGIC28")
    assert matches(own, CTX)
    assert resolve("ETPO_GATE", [foreign, own], CTX).matched == (own,)


def test_a_rule_naming_nothing_matches_every_context_of_its_group():
    anywhere = rule(1, "ANY")
    assert matches(anywhere, CTX)
    assert matches(anywhere, Context("X", "Y", "ETCH_POLY", "Z", "PM1"))
    assert not matches(anywhere, Context("X", "Y", "ETCH_OXIDE", "Z"))


def test_context_key_lists_the_named_dimensions_in_precedence_order():
    named = {"product": "LOGIC28", "tool": "F1-ETPO01", "step": None, "chamber": "PM1"}
    assert context_key("ETPO_GATE", named) == (
        '["ETPO_GATE",[["chamber","PM1"],["tool","F1-ETPO01"],["product","LOGIC28"]]]'
    )
    assert context_key("ETPO_GATE", {}) == '["ETPO_GATE",[]]'
    assert context_key("ETPO_GATE", {"step": None}) == '["ETPO_GATE",[]]'
    # Key order of the mapping does not matter.
    assert context_key("L", {"tool_group": "G", "step": "S"}) == context_key(
        "L", {"step": "S", "tool_group": "G"}
    )


def test_context_key_tells_different_contexts_apart():
    assert context_key("L", {"step": "OX|product=P"}) != context_key(
        "L", {"step": "OX", "product": "P"}
    )


DIMENSIONS = {
    "product": ["LOGIC28", "ANALOG180"],
    "step": ["GATE_ETCH", "STI_ETCH"],
    "tool_group": ["ETCH_POLY"],
    "tool": ["F1-ETPO01", "F1-ETPO02"],
    "chamber": ["PM1", "PM2"],
}


@st.composite
def rule_sets(draw):
    """Rules with distinct contexts (as the unique context key guarantees)."""
    found, seen = [], set()
    for i in range(draw(st.integers(0, 8))):
        named = {
            d: draw(st.sampled_from(values))
            for d, values in DIMENSIONS.items()
            if draw(st.booleans())
        }
        if "chamber" in named and "tool" not in named:
            del named["chamber"]
        key = tuple(sorted(named.items()))
        if key not in seen:
            seen.add(key)
            found.append(rule(i + 1, f"R{i + 1}", **named))
    return found


contexts = st.builds(
    Context,
    product=st.sampled_from(DIMENSIONS["product"]),
    step=st.sampled_from(DIMENSIONS["step"]),
    tool_group=st.just("ETCH_POLY"),
    tool=st.sampled_from(DIMENSIONS["tool"]),
    chamber=st.one_of(st.none(), st.sampled_from(DIMENSIONS["chamber"])),
)


@given(rule_sets(), contexts)
def test_the_winner_names_every_dimension_that_outranks_anything_a_loser_names(rules, context):
    result = resolve("ETPO_GATE", rules, context)
    by_hand = [r for r in rules if all(getattr(context, d) == v for d, v in r.named().items())]
    assert set(result.matched) == set(by_hand)
    if not by_hand:
        assert result.recipe == "ETPO_GATE"
        return
    winner = result.rule
    assert winner is not None
    assert result.recipe == winner.recipe
    for loser in by_hand:
        if loser == winner:
            continue
        # The first dimension (in precedence order) where they differ is named by the winner.
        first = next(
            d for d in PRECEDENCE if (getattr(winner, d) is None) != (getattr(loser, d) is None)
        )
        assert getattr(winner, first) is not None
    # The answer does not depend on the order the rules come in.
    assert resolve("ETPO_GATE", list(reversed(rules)), context) == result
