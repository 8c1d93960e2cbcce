from hypothesis import given
from hypothesis import strategies as st

from mes.routes.rules import StepShape, route_problems


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
