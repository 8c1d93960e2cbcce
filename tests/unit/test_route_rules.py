from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mes.routes.rules import (
    FieldChange,
    RenumberError,
    RouteProblem,
    StepDifference,
    StepShape,
    VersionStatus,
    VersionView,
    check_effective_time,
    diff_steps,
    references_to,
    renumbered,
    renumbering,
    route_problems,
    version_in_force,
)


def shape(seq, **kw):
    return StepShape(sequence=seq, tool_group="G", recipe="R", **kw)


def test_sound_route_has_no_problems():
    steps = [
        shape(10, qtime_to_sequence=20, qtime_max_s=3600),
        shape(20, batch_min=2, batch_max=6),
        shape(30, rework_to_sequence=20, sampling_rate=0.25),
    ]
    assert route_problems(steps) == []


def test_empty_route_is_refused():
    assert [p.message for p in route_problems([])] == ["a route needs at least one step"]


def test_each_structural_fault_is_reported_at_its_step():
    steps = [
        shape(10, qtime_to_sequence=5, qtime_max_s=60),  # backwards
        shape(20, qtime_to_sequence=99, qtime_max_s=60),  # missing end
        shape(30, rework_to_sequence=40),  # forwards
        shape(40, rework_to_sequence=35),  # missing target
        shape(50, batch_min=4, batch_max=2),
        shape(60, batch_min=2),
        shape(70, qtime_to_sequence=80),  # no length
        shape(80, sampling_rate=1.5),
    ]
    found = {p.sequence for p in route_problems(steps)}
    assert found == {10, 20, 30, 40, 50, 60, 70, 80}


def test_duplicate_sequences_are_named():
    problems = route_problems([shape(10), shape(10), shape(20)])
    assert len(problems) == 1
    assert "[10]" in problems[0].message


@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30))
def test_plain_steps_are_sound_exactly_when_sequences_are_unique(sequences):
    problems = route_problems([shape(n) for n in sequences])
    assert (problems == []) == (len(set(sequences)) == len(sequences))


# --- completeness at activation ----------------------------------------------------------------


def test_a_step_without_recipe_is_a_problem_only_for_activation():
    steps = [shape(10), StepShape(sequence=20, tool_group="G", recipe=None)]
    assert route_problems(steps) == []
    assert route_problems(steps, for_activation=True) == [
        RouteProblem(20, "the step has no recipe")
    ]


def test_rework_to_its_own_step_is_sound():
    assert route_problems([shape(10), shape(20, rework_to_sequence=20)]) == []


# --- references ------------------------------------------------------------------------------


def test_references_to_name_qtime_ends_and_rework_targets():
    steps = [
        shape(10, qtime_to_sequence=30, qtime_max_s=60),
        shape(20, rework_to_sequence=10),
        shape(30, rework_to_sequence=10),
        shape(40, rework_to_sequence=40),  # reworks to itself
    ]
    assert references_to(steps, 30) == [RouteProblem(10, "step 10 ends a Q-time window there")]
    assert references_to(steps, 10) == [
        RouteProblem(20, "step 20 reworks back to it"),
        RouteProblem(30, "step 30 reworks back to it"),
    ]
    # A step that only names itself, or that nobody names, may go.
    assert references_to(steps, 40) == []
    assert references_to(steps, 20) == []


def test_a_step_referring_twice_is_named_twice():
    steps = [shape(10), shape(20, qtime_to_sequence=30, qtime_max_s=5), shape(30)]
    steps.append(shape(40, rework_to_sequence=30))
    assert [p.sequence for p in references_to(steps, 30)] == [20, 40]


# --- renumbering -----------------------------------------------------------------------------


def test_renumbering_in_the_given_order():
    assert renumbering([10, 20, 30], [30, 10, 20]) == {30: 10, 10: 20, 20: 30}
    assert renumbering([5, 7, 9], [5, 7, 9], start=100, increment=5) == {5: 100, 7: 105, 9: 110}
    assert renumbering([1], [1], start=1, increment=1) == {1: 1}


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([10, 20], "the new order must name every step once; missing [30]"),
        ([10, 20, 30, 40], "the new order must name every step once; unknown [40]"),
        ([10, 20, 20, 30], "the new order must name every step once; repeated [20]"),
        ([10, 10, 20], "the new order must name every step once; missing [30]; repeated [10]"),
        ([10, 99, 20], "the new order must name every step once; missing [30]; unknown [99]"),
        ([], "the new order must name every step once; missing [10, 20, 30]"),
    ],
)
def test_renumbering_refuses_an_order_that_is_not_a_permutation(order, message):
    with pytest.raises(RenumberError) as refused:
        renumbering([10, 20, 30], order)
    assert str(refused.value) == message


@pytest.mark.parametrize(("start", "increment"), [(0, 10), (10, 0), (-5, 10)])
def test_renumbering_needs_positive_start_and_increment(start, increment):
    with pytest.raises(RenumberError, match="positive"):
        renumbering([10, 20], [20, 10], start=start, increment=increment)


def test_references_follow_their_steps():
    mapping = {10: 30, 20: 10, 30: 20}
    step = shape(20, qtime_to_sequence=30, qtime_max_s=60, rework_to_sequence=10)
    moved = renumbered(step, mapping)
    assert (moved.sequence, moved.qtime_to_sequence, moved.rework_to_sequence) == (10, 20, 30)
    assert (moved.qtime_max_s, moved.tool_group, moved.recipe) == (60, "G", "R")
    # ... and here the rework now points forwards, which route_problems then refuses.
    assert route_problems([moved, shape(20), shape(30)]) == [
        RouteProblem(10, "rework must return to an earlier step")
    ]


@st.composite
def sound_routes(draw):
    """A sound route of 1..12 steps with forward Q-times and backward reworks."""
    count = draw(st.integers(1, 12))
    sequences = sorted(draw(st.sets(st.integers(1, 500), min_size=count, max_size=count)))
    steps = []
    for i, seq in enumerate(sequences):
        extra = {}
        if i + 1 < count and draw(st.booleans()):
            extra |= {
                "qtime_to_sequence": draw(st.sampled_from(sequences[i + 1 :])),
                "qtime_max_s": 60,
            }
        if draw(st.booleans()):
            extra["rework_to_sequence"] = draw(st.sampled_from(sequences[: i + 1]))
        steps.append(shape(seq, **extra))
    return steps


@given(sound_routes(), st.integers(1, 50), st.integers(1, 20))
def test_renumbering_in_place_keeps_a_route_sound_and_its_references_in_order(
    steps, start, increment
):
    current = [s.sequence for s in steps]
    mapping = renumbering(current, current, start=start, increment=increment)
    assert list(mapping.values()) == [start + i * increment for i in range(len(steps))]
    moved = [renumbered(s, mapping) for s in steps]
    assert route_problems(moved) == []
    # Every reference still points at the same step (by position), so the order relation
    # between a step and what it names is unchanged.
    position = {s.sequence: i for i, s in enumerate(moved)}
    for old, new in zip(steps, moved, strict=True):
        for field in ("qtime_to_sequence", "rework_to_sequence"):
            if getattr(old, field) is not None:
                assert position[getattr(new, field)] == current.index(getattr(old, field))
                assert (getattr(new, field) < new.sequence) == (getattr(old, field) < old.sequence)


@given(sound_routes(), st.randoms(use_true_random=False))
def test_any_permutation_renumbers_every_step_once(steps, rnd):
    current = [s.sequence for s in steps]
    order = current[:]
    rnd.shuffle(order)
    mapping = renumbering(current, order)
    assert sorted(mapping.values()) == [10 * (i + 1) for i in range(len(steps))]
    assert [mapping[o] for o in order] == sorted(mapping.values())


# --- which version is in force -----------------------------------------------------------------

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def view(version, status, effective_at=None):
    return VersionView(version, VersionStatus(status), effective_at)


def test_the_active_version_is_in_force():
    versions = [view(1, "obsolete", T0 - HOUR), view(2, "active", T0), view(3, "draft")]
    assert version_in_force(versions, T0 + HOUR) == versions[1]


def test_a_pending_version_whose_time_has_come_beats_the_active_one():
    active, pending = view(1, "active", T0), view(2, "pending", T0 + HOUR)
    assert version_in_force([active, pending], T0 + HOUR) == pending  # exactly due
    assert version_in_force([pending, active], T0 + 2 * HOUR) == pending


def test_a_pending_version_not_yet_due_is_ignored():
    active, pending = view(1, "active", T0), view(2, "pending", T0 + HOUR)
    assert version_in_force([active, pending], T0 + HOUR - timedelta(seconds=1)) == active


def test_no_version_in_force():
    assert version_in_force([], T0) is None
    assert version_in_force([view(1, "draft"), view(2, "obsolete", T0 - HOUR)], T0) is None
    # A first version scheduled for later: nothing runs until then.
    assert version_in_force([view(1, "pending", T0 + HOUR)], T0) is None
    assert version_in_force([view(1, "pending", T0 + HOUR)], T0 + HOUR) == view(
        1, "pending", T0 + HOUR
    )


def test_equal_effective_times_go_to_the_higher_version():
    assert version_in_force([view(2, "pending", T0), view(1, "active", T0)], T0) == view(
        2, "pending", T0
    )


def test_effective_time_may_lie_a_little_in_the_past_but_not_more():
    check_effective_time(T0 + HOUR, T0, max_past_s=300)  # future
    check_effective_time(T0 - timedelta(seconds=300), T0, max_past_s=300)  # on the tolerance
    with pytest.raises(ValueError, match="cannot be backdated"):
        check_effective_time(T0 - timedelta(seconds=301), T0, max_past_s=300)


# --- differences between versions ------------------------------------------------------------


def op(sequence, operation, **fields):
    return {
        "sequence": sequence,
        "operation": operation,
        "tool_group": "G",
        "recipe": f"R_{operation}",
        "qtime_to_sequence": None,
        "rework_to_sequence": None,
        **fields,
    }


BASE = [op(10, "CLEAN"), op(20, "OXIDE", qtime_to_sequence=30), op(30, "DEP"), op(40, "MEASURE")]


def test_renumbered_route_shows_only_sequence_changes():
    after = [
        op(100, "CLEAN"),
        op(200, "OXIDE", qtime_to_sequence=300),
        op(300, "DEP"),
        op(400, "MEASURE"),
    ]
    differences = diff_steps(BASE, after)
    assert [(d.kind, d.operation, d.before_sequence, d.after_sequence) for d in differences] == [
        ("changed", "CLEAN", 10, 100),
        ("changed", "OXIDE", 20, 200),
        ("changed", "DEP", 30, 300),
        ("changed", "MEASURE", 40, 400),
    ]
    assert differences[1].changes == (
        FieldChange("qtime_to_sequence", 30, 300),
        FieldChange("sequence", 20, 200),
    )
    assert differences[0].changes == (FieldChange("sequence", 10, 100),)


def test_added_removed_and_changed_steps():
    after = [
        op(10, "CLEAN"),
        op(20, "OXIDE", recipe="R_THICK"),
        op(35, "ANNEAL"),
        op(40, "MEASURE"),
    ]
    differences = diff_steps(BASE, after)
    assert differences == [
        StepDifference("removed", "DEP", 30, None),
        StepDifference(
            "changed",
            "OXIDE",
            20,
            20,
            (
                FieldChange("qtime_to_sequence", 30, None),
                FieldChange("recipe", "R_OXIDE", "R_THICK"),
            ),
        ),
        StepDifference("added", "ANNEAL", None, 35),
    ]


def test_a_moved_step_is_moved():
    # MEASURE goes to the front (and is renumbered); everything else keeps its place.
    after = [op(5, "MEASURE"), *BASE[:3]]
    differences = diff_steps(BASE, after)
    assert differences == [
        StepDifference("moved", "MEASURE", 40, 5, (FieldChange("sequence", 40, 5),)),
    ]


def test_a_step_moved_without_any_field_change_is_still_moved():
    before = [op(10, "A"), op(20, "B"), op(30, "C")]
    after = [op(10, "C"), op(20, "A"), op(30, "B")]
    # Sequences swap with the positions, so A, B and C each change sequence; C alone moved.
    kinds = {d.operation: d.kind for d in diff_steps(before, after)}
    assert kinds == {"A": "changed", "B": "changed", "C": "moved"}
    # The pure function reads list order, so a step can move while keeping every field.
    a, b, c = op(10, "A"), op(20, "B"), op(30, "C")
    assert diff_steps([a, b, c], [a, c, b]) == [StepDifference("moved", "C", 30, 30, ())]


def test_repeated_operations_are_matched_by_occurrence():
    before = [op(10, "CLEAN"), op(20, "OXIDE"), op(30, "CLEAN"), op(40, "MEASURE")]
    after = [op(10, "CLEAN"), op(20, "OXIDE"), op(30, "CLEAN", recipe="R_HOT"), op(40, "MEASURE")]
    assert diff_steps(before, after) == [
        StepDifference("changed", "CLEAN", 30, 30, (FieldChange("recipe", "R_CLEAN", "R_HOT"),))
    ]
    # A third clean at the end is the third occurrence: added, the other two untouched.
    longer = [*before, op(50, "CLEAN")]
    assert diff_steps(before, longer) == [StepDifference("added", "CLEAN", None, 50)]
    assert diff_steps(longer, before) == [StepDifference("removed", "CLEAN", 50, None)]


def test_diff_of_disjoint_routes_removes_all_then_adds_all():
    before, after = [op(10, "A"), op(20, "B")], [op(10, "C")]
    assert diff_steps(before, after) == [
        StepDifference("removed", "A", 10, None),
        StepDifference("removed", "B", 20, None),
        StepDifference("added", "C", None, 10),
    ]


step_lists = st.lists(
    st.builds(
        op,
        st.integers(1, 999),
        st.sampled_from(["CLEAN", "OXIDE", "DEP", "ETCH", "MEASURE"]),
        recipe=st.sampled_from(["R1", "R2"]),
    ),
    max_size=10,
)


@given(step_lists)
def test_a_version_differs_from_itself_in_nothing(steps):
    assert diff_steps(steps, steps) == []


@given(step_lists, step_lists)
def test_diff_accounts_for_every_step_exactly_once(before, after):
    differences = diff_steps(before, after)
    removed = [d for d in differences if d.kind == "removed"]
    added = [d for d in differences if d.kind == "added"]
    count_before = Counter(s["operation"] for s in before)
    count_after = Counter(s["operation"] for s in after)
    assert Counter(d.operation for d in removed) == count_before - count_after
    assert Counter(d.operation for d in added) == count_after - count_before
    for d in differences:
        if d.kind in ("changed", "moved"):
            assert d.before_sequence is not None
            assert d.after_sequence is not None
        if d.kind == "changed":
            assert d.changes
