import pytest
from hypothesis import given
from hypothesis import strategies as st

from mes.equipment.states import (
    DEFAULT_SUBSTATE,
    DOWN_STATES,
    UP_STATES,
    E10State,
    InvalidSubstate,
    allows_production,
    validate_substate,
)


def test_six_states_partition_the_time_tree():
    assert set(E10State) == UP_STATES | DOWN_STATES | {E10State.NST}
    assert not UP_STATES & DOWN_STATES


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        (E10State.PRD, True),
        (E10State.SBY, True),
        (E10State.ENG, False),
        (E10State.SDT, False),
        (E10State.UDT, False),
        (E10State.NST, False),
    ],
)
def test_only_standby_and_productive_allow_production(state, allowed):
    assert allows_production(state) is allowed


def test_default_substate_belongs_to_its_state():
    for state in E10State:
        assert validate_substate(state, None) == DEFAULT_SUBSTATE[state]
        assert DEFAULT_SUBSTATE[state].startswith(state.value + ".")


def test_substate_must_name_its_own_state():
    assert validate_substate(E10State.SDT, "SDT.PM") == "SDT.PM"
    with pytest.raises(InvalidSubstate, match="does not belong"):
        validate_substate(E10State.PRD, "SDT.PM")


@given(st.text(max_size=60))
def test_arbitrary_text_is_either_wellformed_or_refused(text):
    try:
        result = validate_substate(E10State.UDT, text)
    except InvalidSubstate:
        return
    assert result == text
    assert result.startswith("UDT.")
