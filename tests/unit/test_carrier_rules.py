"""The carrier rules alone: E87 load-port transitions, slot maps, the free-carrier choice, and
how a tool's load-port report is read and compared (no database, no network)."""

from __future__ import annotations

import json

import pytest

from mes.carriers import rules
from mes.carriers.rules import PortAction as A
from mes.carriers.rules import PortState as P
from mes.durables.rules import CarrierLocation, CarrierView, choose_free
from mes.errors import RuleViolation
from mes.opcua import mapping


@pytest.mark.parametrize(
    ("state", "action", "occupied", "to"),
    [
        (P.READY_TO_LOAD, A.LOAD, False, P.TRANSFER_BLOCKED),
        (P.TRANSFER_BLOCKED, A.READY_TO_UNLOAD, True, P.READY_TO_UNLOAD),
        (P.READY_TO_UNLOAD, A.UNLOAD, True, P.READY_TO_LOAD),
        (P.READY_TO_LOAD, A.OUT_OF_SERVICE, False, P.OUT_OF_SERVICE),
        (P.OUT_OF_SERVICE, A.IN_SERVICE, False, P.READY_TO_LOAD),
    ],
)
def test_port_transitions(state, action, occupied, to):
    assert rules.port_transition(state, action, occupied=occupied) == to


@pytest.mark.parametrize(
    ("state", "action", "occupied", "code"),
    [
        (P.TRANSFER_BLOCKED, A.LOAD, True, "load_port.invalid_transition"),
        (P.OUT_OF_SERVICE, A.LOAD, False, "load_port.invalid_transition"),
        (P.TRANSFER_BLOCKED, A.UNLOAD, True, "load_port.invalid_transition"),
        (P.READY_TO_LOAD, A.IN_SERVICE, False, "load_port.invalid_transition"),
        (P.TRANSFER_BLOCKED, A.OUT_OF_SERVICE, True, "load_port.occupied"),
        (P.READY_TO_LOAD, A.READY_TO_UNLOAD, False, "load_port.empty"),
    ],
)
def test_port_refusals(state, action, occupied, code):
    with pytest.raises(RuleViolation) as refused:
        rules.port_transition(state, action, occupied=occupied)
    assert refused.value.code == code


def test_slot_map_places_every_wafer_once():
    assert rules.check_slot_map({"B": 2, "A": 25}, ["A", "B"], 25) == {2: "B", 25: "A"}
    for requested, capacity in (
        ({"A": 1}, 25),  # B left out
        ({"A": 1, "B": 1}, 25),  # one slot, two wafers
        ({"A": 1, "B": 14}, 13),  # past a 13-slot carrier
        ({"A": 1, "B": 2, "C": 3}, 25),  # C is not in the lot
    ):
        with pytest.raises(RuleViolation) as refused:
            rules.check_slot_map(requested, ["A", "B"], capacity)
        assert (refused.value.code, refused.value.status) == ("carrier.invalid_slot_map", 422)


def test_slot_moves_and_comparison():
    assert rules.slot_moves({"A": 1, "B": 2}, {"A": 1, "B": 7}) == [["B", 2, 7]]
    assert rules.compare_slot_maps("C1", frozenset({1, 2}), frozenset({1, 2})) is None
    mismatch = rules.compare_slot_maps("C1", frozenset({1, 2, 4}), frozenset({1, 2, 6}))
    assert mismatch is not None
    assert (mismatch.missing, mismatch.unexpected) == ((4,), (6,))
    assert str(mismatch) == (
        "carrier C1: slots [4] empty on the tool but hold wafers; "
        "slots [6] occupied on the tool but empty"
    )


def _carrier(code, *, available=True, location=CarrierLocation.STOCKER, capacity=25, fab=1):
    return CarrierView(code, fab, capacity, available, location)


def test_free_carrier_is_the_lowest_empty_one_in_a_stocker():
    candidates = [
        _carrier("C5"),
        _carrier("C1", available=False),
        _carrier("C2", location=CarrierLocation.LOAD_PORT),
        _carrier("C3", capacity=4),
        _carrier("C4", fab=2),
        _carrier("C6"),
    ]
    assert choose_free(candidates, 1, 5).code == "C5"
    with pytest.raises(RuleViolation) as refused:
        choose_free(candidates[1:5], 1, 5)
    assert refused.value.code == "carrier.none_free"


def test_load_port_report_is_read_and_compared():
    report = json.dumps(
        [
            {"PortID": 1, "CarrierID": "C1", "SlotMap": ["Occupied", "", "Occupied"]},
            {"PortID": 2, "CarrierID": "", "SlotMap": []},
        ]
    )
    on_ports = mapping.carriers_on_ports(report)
    assert on_ports == {"C1": frozenset({1, 3})}
    # C2 is not on a port (not read by the tool): not compared.
    expected = {"C1": frozenset({1, 2}), "C2": frozenset({5})}
    found = mapping.slot_map_mismatches(expected, on_ports)
    assert [(m.carrier, m.missing, m.unexpected) for m in found] == [("C1", (2,), (3,))]
    assert mapping.slot_map_mismatches({"C1": frozenset({1, 3})}, on_ports) == []
    for broken in ("not json", "[{}]", '[{"CarrierID": "C1"}]', "7"):
        with pytest.raises(ValueError, match="unreadable"):
            mapping.carriers_on_ports(broken)
