"""The pure OPC UA mapping: item state → E10, job events → actions, keys, alarm rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from mes.equipment.states import E10State
from mes.jobs import states as job_states
from mes.jobs.states import JobCommand, JobStatus
from mes.opcua import mapping
from mes.opcua.mapping import AlarmRule, JobAction


@pytest.mark.parametrize(
    ("item", "state", "substate", "expected"),
    [
        ("OutOfService", E10State.PRD, "PRD.REGULAR", ("UDT", "UDT.ALARM")),
        ("OutOfService", E10State.SBY, "SBY.NO_PRODUCT", ("UDT", "UDT.ALARM")),
        ("OutOfService", E10State.UDT, "UDT.NO_SIGNAL", ("UDT", "UDT.ALARM")),
        ("OutOfService", E10State.SDT, "SDT.PM", None),  # people's states stay
        ("OutOfService", E10State.UDT, "UDT.REPAIR", None),
        ("NotExecuting", E10State.UDT, "UDT.ALARM", ("SBY", "SBY.NO_PRODUCT")),
        ("Executing", E10State.UDT, "UDT.ALARM", ("PRD", "PRD.REGULAR")),
        ("NotExecuting", E10State.PRD, "PRD.REGULAR", None),  # track-out decides SBY
        ("Executing", E10State.SBY, "SBY.NO_PRODUCT", None),  # track-in decides PRD
        ("NotExecuting", E10State.UDT, "UDT.REPAIR", None),
        ("NotAvailable", E10State.UDT, "UDT.ALARM", None),
        ("Bogus", E10State.SBY, "SBY.NO_PRODUCT", None),
    ],
)
def test_item_state_to_e10(
    item: str, state: E10State, substate: str, expected: tuple[str, str] | None
) -> None:
    target = mapping.e10_transition(item, state, substate)
    assert (None if target is None else (target.state.value, target.substate)) == expected


@pytest.mark.parametrize(
    ("state", "substate", "action"),
    [
        ("AllowedToStart", "Ready", JobAction.NONE),
        ("NotAllowedToStart", "Waiting", JobAction.NONE),
        ("Running", "Processing", JobAction.CONFIRM),
        ("Interrupted", "Paused", JobAction.PAUSED),
        ("Interrupted", "Held", JobAction.PAUSED),
        ("Ended", "Completed", JobAction.COMPLETE),
        ("Ended", "Stopped", JobAction.COMPLETE),
        ("Ended", "Cancelled", JobAction.CANCELLED),
        ("Aborted", "Aborted", JobAction.ABORT),
    ],
)
def test_job_state_to_action(state: str, substate: str, action: JobAction) -> None:
    assert mapping.job_action(state, substate) is action


def test_event_key_comes_from_the_tools_ids() -> None:
    assert mapping.event_key("ET01", "L1-20-1", "Ended", 17) == "ET01:L1-20-1:Ended:17"
    assert mapping.event_key("ET01", "L1-20-1", "Ended", 17) != mapping.event_key(
        "ET01", "L1-20-1", "Ended", 18
    )
    assert len(mapping.event_key("T" * 64, "J" * 64, "Running", 1)) <= 128


def test_alarm_rules_first_match_wins() -> None:
    rules = (
        AlarmRule(pattern="RF_*", breaking=True, udt=True, hold_lot=True),
        AlarmRule(pattern="*", breaking=True, udt=True, abort_job=True),
        AlarmRule(pattern="*", min_severity=700, hold_lot=True),
    )
    rf = mapping.alarm_rule("RF_GEN", breaking=True, severity=500, rules=rules)
    assert rf is rules[0]
    assert mapping.alarm_rule("VAC", breaking=True, severity=500, rules=rules) is rules[1]
    assert mapping.alarm_rule("VAC", breaking=False, severity=800, rules=rules) is rules[2]
    assert mapping.alarm_rule("VAC", breaking=False, severity=100, rules=rules) is None
    default = mapping.alarm_rule("X", breaking=True, severity=1, rules=mapping.DEFAULT_ALARM_RULES)
    assert default is not None
    assert default.udt
    assert default.abort_job


def test_alarm_rules_parse_from_settings() -> None:
    assert mapping.parse_alarm_rules(None) == mapping.DEFAULT_ALARM_RULES
    parsed = mapping.parse_alarm_rules(json.dumps([{"pattern": "TEMP*", "hold_lot": True}]))
    assert parsed == (AlarmRule(pattern="TEMP*", hold_lot=True),)
    with pytest.raises(ValueError, match="bad alarm rule"):
        mapping.parse_alarm_rules(json.dumps([{"pattern": "*", "explode": True}]))


def test_process_values_are_selected_by_glob_patterns() -> None:
    offered = ["ChamberTemperature", "ChamberPressure", "RfForwardPower", "Sensor01", "Sensor02"]
    assert mapping.parse_patterns(" Chamber*, RfForwardPower ,") == (
        "Chamber*",
        "RfForwardPower",
    )
    assert mapping.selected_process_values(offered, ("Chamber*", "RfForwardPower")) == {
        "ChamberTemperature",
        "ChamberPressure",
        "RfForwardPower",
    }
    assert mapping.selected_process_values(offered, ("*",)) == set(offered)
    assert mapping.selected_process_values(offered, mapping.parse_patterns("")) == set()
    assert mapping.selected_process_values(offered, ("sensor*",)) == set()  # case-sensitive


def test_job_response_and_job_order_document() -> None:
    response = json.dumps(
        {
            "JobState": "Ended",
            "JobSubstate": "Completed",
            "WafersProcessed": 2,
            "Wafers": [
                {"SubstrateID": "L1-W01", "Slot": 1, "State": "Processed", "Measurements": [1.5]},
                {"SubstrateID": "L1-W02", "Slot": 2, "State": "Processed", "Chamber": "PM1"},
            ],
        }
    )
    result = mapping.parse_job_response(response)
    assert (result.state, result.substate, result.wafers_processed) == ("Ended", "Completed", 2)
    assert result.wafers[0].measurements == (1.5,)
    assert result.wafers[1].chamber == "PM1"
    doc = json.loads(
        mapping.job_order_document(
            "L1-20-1",
            "R@2",
            [
                mapping.JobOrderLot("L1", "C1", [(1, "L1-W01"), (3, "L1-W03")]),
                mapping.JobOrderLot("L2", None, [(2, "L2-W02")]),
            ],
        )
    )
    assert doc["WorkMasterID"] == "R@2"
    assert doc["Lots"] == [
        {"LotID": "L1", "CarrierID": "C1", "Slots": [1, 3], "SubstrateIDs": ["L1-W01", "L1-W03"]},
        {"LotID": "L2", "CarrierID": "", "Slots": [2], "SubstrateIDs": ["L2-W02"]},
    ]
    assert "Chambers" not in doc  # no chamber named: the tool may use any
    assert mapping.tool_recipe_id("R", 2) == "R@2"


def test_a_job_order_names_the_chambers_every_lot_was_checked_for() -> None:
    lot = mapping.JobOrderLot("L1", "C1", [(1, "L1-W01")])
    doc = json.loads(mapping.job_order_document("L1-40-1", "R@1", [lot], ("PM1",)))
    assert doc["Chambers"] == ["PM1"]
    assert mapping.job_chambers([[], []]) == ()
    assert mapping.job_chambers([["PM1", "PM2"], []]) == ("PM1", "PM2")
    assert mapping.job_chambers([["PM1", "PM2"], ["PM2", "PM3"]]) == ("PM2",)
    assert mapping.job_chambers([["PM1"], ["PM2"]]) is None  # no chamber runs both


def test_process_values_are_summarised_per_wafer_and_job() -> None:
    buffer = mapping.ProcessValueBuffer()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for wafer, value in (("W1", 1.0), ("W1", 3.0), ("W2", 5.0)):
        buffer.add(wafer, "ChamberPressure", value, at)
    assert buffer.stats[("W1", "ChamberPressure")].mean == 2.0
    job = buffer.stats[("", "ChamberPressure")]
    assert (job.samples, job.minimum, job.maximum, job.mean) == (3, 1.0, 5.0, 3.0)


def test_shards_are_stable_and_cover_every_tool() -> None:
    assert mapping.parse_shard("1/4") == (1, 4)
    with pytest.raises(ValueError, match="shard"):
        mapping.parse_shard("4/4")
    codes = [f"F1-T{i:03d}" for i in range(200)]
    shards = [mapping.shard_of(c, 4) for c in codes]
    assert set(shards) == {0, 1, 2, 3}
    assert shards == [mapping.shard_of(c, 4) for c in codes]


def test_job_life_cycle() -> None:
    assert job_states.can_move(JobStatus.REQUESTED, JobStatus.SENT)
    assert not job_states.can_move(JobStatus.COMPLETED, JobStatus.RUNNING)  # a replayed Running
    assert not job_states.can_move(JobStatus.REQUESTED, JobStatus.RUNNING)  # only after a send
    assert job_states.can_move(JobStatus.SENT, JobStatus.COMPLETED)  # reconciled after an outage
    assert job_states.command_allowed(JobStatus.RUNNING, JobCommand.PAUSE)
    assert not job_states.command_allowed(JobStatus.COMPLETED, JobCommand.ABORT)
    assert job_states.job_order_id("L26-0001", 20, 2) == "L26-0001-20-2"
