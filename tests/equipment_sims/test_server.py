"""The simulators over real OPC UA on loopback, driven by an asyncua client like the MES."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState

from equipment_sims.__main__ import _fault_parser, inject
from mes.opcua import model as m
from mes.opcua.mapping import parse_job_response

from .conftest import (
    ETCH_BODY,
    FURNACE_BODY,
    LITHO_BODY,
    METRO_BODY,
    TIMEOUT,
    ClientFactory,
    SimFactory,
    etch,
    furnace,
    job_order,
    litho,
    metrology,
    wait_until,
)


async def test_address_space_follows_machinery_and_the_fab_namespace(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(etch())
    tc = await connect(sim)
    assert sim.endpoint.endswith(f"/{sim.spec.tool_id}")
    ident = await tc.child(m.IDENTIFICATION)
    props = {
        (await p.read_browse_name()).Name: await p.read_value()
        for p in await ident.get_properties()
    }
    assert set(m.IDENTIFICATION_PROPERTIES) <= set(props)
    assert props["DeviceClass"] == "etch/cluster"
    assert await tc.read(m.BUILDING_BLOCKS, m.ITEM_STATE, m.CURRENT_STATE) == "NotExecuting"
    assert await tc.read(m.BUILDING_BLOCKS, m.OPERATION_MODE, m.CURRENT_STATE) == "None"
    assert await tc.read(m.CONTROL, m.CONTROL_STATE) == "OnlineRemote"
    assert await tc.read(m.COUNTERS, m.SLOT_MAP) == [""] * 25
    methods = {(await n.read_browse_name()).Name for n in await tc.job_control.get_methods()}
    assert methods == set(m.JOB_METHODS)
    assert await tc.read(m.CHAMBERS, "PM2", m.CHAMBER_STATE) == "Idle"
    pressure = await tc.child(m.PROCESS_DATA, (m.NS_FAB, "ChamberPressure"))
    eu = await (await pressure.get_child("0:EngineeringUnits")).read_value()
    assert eu.DisplayName.Text == "Pa"
    assert eu.UnitId == int.from_bytes(b"PAL", "big")
    assert isinstance(await pressure.read_value(), float)


async def test_recipe_download_select_and_checksum(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho())
    tc = await connect(sim)
    await tc.download("LI_GATE", LITHO_BODY)
    await tc.call(m.RECIPES, m.SELECT_RECIPE, "LI_GATE")
    assert await tc.read(m.RECIPES, m.RECIPE_LIST) == ["LI_GATE"]
    assert await tc.read(m.RECIPES, m.SELECTED_RECIPE) == "LI_GATE"
    checksum = await tc.call(m.RECIPES, m.GET_RECIPE_CHECKSUM, "LI_GATE")
    assert checksum == m.recipe_checksum(LITHO_BODY)
    with pytest.raises(ua.UaStatusCodeError) as bad:
        await tc.call(m.RECIPES, m.DOWNLOAD_RECIPE, "X", json.dumps(LITHO_BODY), "0" * 64)
    assert bad.value.code == ua.StatusCodes.BadInvalidArgument
    with pytest.raises(ua.UaStatusCodeError) as unknown:
        await tc.call(m.RECIPES, m.SELECT_RECIPE, "NOPE")
    assert unknown.value.code == ua.StatusCodes.BadNotFound

    await sim.corrupt_checksums()  # fault: the tool reports a wrong checksum
    assert await tc.call(m.RECIPES, m.GET_RECIPE_CHECKSUM, "LI_GATE") != checksum
    reported = json.loads(await tc.read(m.RECIPES, m.RECIPE_CHECKSUMS))
    assert reported["LI_GATE"] != checksum


async def test_start_is_refused_unless_online_remote(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho())
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await tc.call(m.CONTROL, m.GO_ONLINE_LOCAL)
    assert await tc.read(m.CONTROL, m.CONTROL_STATE) == "OnlineLocal"
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", [1])), "")
    assert refused.value.code == ua.StatusCodes.BadInvalidState
    assert sim.tool.jobs == {}
    await tc.call(m.CONTROL, m.GO_ONLINE_REMOTE)
    assert await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", [1])), "") == 0


async def test_job_runs_to_completed_with_per_wafer_events(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho(), speed=3000)
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await tc.job("Store", job_order("J1", "R1", ("L1", [1, 2, 3, 5])), "")
    await tc.job("Start", "J1", "")
    ended = await tc.wait_job("J1", "Ended", "Aborted")
    assert (ended.JobState, ended.JobSubstate) == ("Ended", "Completed")
    response = json.loads(ended.JobResponse)
    assert response["WafersProcessed"] == 4
    started = datetime.fromisoformat(response["StartTime"])
    duration = datetime.fromisoformat(response["EndTime"]) - started
    assert duration.total_seconds() == pytest.approx(4 * 73)
    assert [e.JobState for e in tc.job_events("J1")] == ["AllowedToStart", "Running", "Ended"]
    progress = [(e.SubstrateID, e.Slot, e.SubstrateState) for e in tc.substrate_events()]
    expected = []
    for slot in (1, 2, 3, 5):
        expected += [(f"L1.{slot:02d}", slot, "InProcess"), (f"L1.{slot:02d}", slot, "Processed")]
    assert progress == expected
    seqs = [e.Sequence for e in tc.events if e.EventType != tc.alarm_type]
    assert seqs == sorted(set(seqs))
    times = [e.Time for e in tc.substrate_events()]
    per_wafer = (times[-1] - times[0]).total_seconds() / 4  # simulated time, 4 wafers
    assert per_wafer == pytest.approx(73, rel=0.05)
    assert await tc.read(m.COUNTERS, m.WAFERS_PROCESSED_TOTAL) == 4
    result, state = await tc.job_results.call_method(
        f"{tc.ns[m.NS_ISA95_JOBS]}:{m.REQUEST_JOB_RESPONSE}", "J1"
    )
    assert state == "Ended"
    assert json.loads(result)["Wafers"][3]["State"] == "Processed"
    assert await tc.job("Clear", "J1", "") == 0
    jobs = await tc.read(
        m.BUILDING_BLOCKS,
        m.JOB_MANAGEMENT,
        m.JOB_ORDER_CONTROL,
        (m.NS_ISA95_JOBS, m.JOB_ORDER_LIST),
    )
    assert json.loads(jobs) == []


async def test_abort_mid_run(make_sim: SimFactory, connect: ClientFactory) -> None:
    sim = await make_sim(litho(), speed=600)
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", list(range(1, 26)))), "")
    await wait_until(
        lambda: any(e.SubstrateState == "Processed" for e in tc.substrate_events()),
        "a first processed wafer",
    )
    assert await tc.read(m.BUILDING_BLOCKS, m.ITEM_STATE, m.CURRENT_STATE) == "Executing"
    slot_map = await tc.read(m.COUNTERS, m.SLOT_MAP)
    assert slot_map[0] == "Processed"
    assert slot_map[24] == "NeedsProcessing"
    await tc.job("Abort", "J1", "")
    aborted = await tc.wait_job("J1", "Aborted")
    wafers = json.loads(aborted.JobResponse)["Wafers"]
    states = [w["State"] for w in wafers]
    assert states.count("Aborted") == 1
    assert {"Processed", "Skipped"} < set(states)
    assert states.index("Aborted") == states.count("Processed")
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await tc.job("Resume", "J1", "")
    assert refused.value.code == ua.StatusCodes.BadInvalidState


async def test_pause_resume_and_stop(make_sim: SimFactory, connect: ClientFactory) -> None:
    sim = await make_sim(litho(), speed=300)  # 25 wafers: 6 s
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", list(range(1, 26)))), "")
    await tc.job("Pause", "J1", "")
    paused = await tc.wait_job("J1", "Interrupted")
    assert paused.JobSubstate == "Paused"
    await tc.job("Resume", "J1", "")
    await wait_until(lambda: len(tc.job_events("J1")) == 4, "running again")
    assert tc.job_events("J1")[-1].JobState == "Running"
    await tc.job("Stop", "J1", "")
    stopped = await tc.wait_job("J1", "Ended")
    assert stopped.JobSubstate == "Stopped"
    states = [w["State"] for w in json.loads(stopped.JobResponse)["Wafers"]]
    assert states.count("Processed") >= 1
    assert "Skipped" in states
    assert set(states) == {"Processed", "Skipped"}  # the wafer in process was finished
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await tc.job("Cancel", "J1", "")
    assert refused.value.code == ua.StatusCodes.BadInvalidState


async def test_tool_aborts_a_job_by_itself(make_sim: SimFactory, connect: ClientFactory) -> None:
    sim = await make_sim(litho(), speed=600)
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await tc.call(m.CONTROL, m.GO_ONLINE_REMOTE)
    await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", list(range(1, 26)))), "")
    await sim.set_control_state("OnlineLocal")  # the fault works whatever the control state
    await sim.abort_job()
    assert (await tc.wait_job("J1", "Aborted")).JobSubstate == "Aborted"


async def test_cluster_keeps_running_on_the_remaining_chambers(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(etch(chambers=("PM1", "PM2", "PM3")), speed=100)  # ~1 s per round
    tc = await connect(sim)
    await tc.download("R1", ETCH_BODY)
    await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", list(range(1, 10)))), "")
    await wait_until(lambda: len(tc.substrate_events()) >= 3, "three wafers in process")
    assert {e.Chamber for e in tc.substrate_events()[:3]} == {"PM1", "PM2", "PM3"}
    for fault, args in (("no_such_fault", {}), ("chamber_down", {"room": "PM2"})):
        with pytest.raises(ua.UaStatusCodeError) as bad:
            await tc.call(m.SIMULATION, m.INJECT_FAULT, fault, json.dumps(args))
        assert bad.value.code == ua.StatusCodes.BadInvalidArgument
    await tc.call(m.SIMULATION, m.INJECT_FAULT, "chamber_down", json.dumps({"chamber": "PM2"}))

    def aborted() -> list[int]:
        events = tc.substrate_events()
        return [i for i, e in enumerate(events) if e.SubstrateState == "Aborted"]

    # The wafer in PM2 is aborted; events arrive in order, so later ones came after the outage.
    await wait_until(lambda: bool(aborted()), "the wafer in PM2 aborted")
    seen = aborted()[0]
    sim.clock.speed = 5000
    ended = await tc.wait_job("J1", "Ended")
    assert ended.JobSubstate == "Completed"
    later = [e for e in tc.substrate_events()[seen:] if e.SubstrateState == "InProcess"]
    assert later, "wafers started after the chamber went down"
    assert {e.Chamber for e in later} <= {"PM1", "PM3"}
    assert await tc.read(m.CHAMBERS, "PM2", m.CHAMBER_STATE) == "Down"
    wafers = json.loads(ended.JobResponse)["Wafers"]
    assert sum(w["State"] == "Processed" for w in wafers) >= 8


async def test_furnace_batch_min_max(make_sim: SimFactory, connect: ClientFactory) -> None:
    sim = await make_sim(furnace(), speed=20_000)
    tc = await connect(sim)
    await tc.download("OX", FURNACE_BODY)
    for lots in ([("L1", [1])], [(f"L{i}", [1]) for i in range(4)]):
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await tc.job("StoreAndStart", job_order("J1", "OX", *lots), "")
        assert refused.value.code == ua.StatusCodes.BadInvalidArgument
    await tc.job("StoreAndStart", job_order("J1", "OX", ("L1", [1, 2]), ("L2", [1, 2, 3])), "")
    ended = await tc.wait_job("J1", "Ended")
    assert ended.JobSubstate == "Completed"
    events = tc.substrate_events()
    assert [e.SubstrateState for e in events] == ["InProcess"] * 5 + ["Processed"] * 5
    assert len({e.Time for e in events[:5]}) == len({e.Time for e in events[5:]}) == 1
    assert {e.LotID for e in events} == {"L1", "L2"}


async def test_metrology_measurements_are_seeded(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    async def measure(seed: int) -> list[list[float]]:
        sim = await make_sim(metrology(f"MC{seed}"), speed=5000, seed=seed)
        tc = await connect(sim)
        await tc.download("CD", METRO_BODY)
        await tc.job("StoreAndStart", job_order("J1", "CD", ("L1", [1, 2, 3])), "")
        await tc.wait_job("J1", "Ended")
        last = await tc.read(m.PROCESS_DATA, m.LAST_MEASUREMENT)
        values = [
            list(e.Measurements) for e in tc.substrate_events() if e.SubstrateState == "Processed"
        ]
        assert values[-1] == last
        return values

    first, again = await measure(11), await measure(11)
    assert first == again
    assert [len(v) for v in first] == [5, 5, 5]
    assert all(40 < x < 50 for v in first for x in v)
    assert first[0] != first[1]


async def test_alarms_with_acknowledge(make_sim: SimFactory, connect: ClientFactory) -> None:
    sim = await make_sim(litho(), speed=300)  # 25 wafers: 6 s, so the alarm comes mid-job
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", list(range(1, 26)))), "")
    await sim.raise_alarm("STAGE_INTERLOCK", "Wafer stage interlock", severity=800, breaking=True)
    held = await tc.wait_job("J1", "Interrupted")
    assert held.JobSubstate == "Held"
    await wait_until(lambda: len(tc.alarm_events()) == 1, "alarm event")
    alarm = tc.alarm_events()[0]
    assert alarm.ConditionName == "STAGE_INTERLOCK"
    assert (alarm.Severity, alarm.Breaking, alarm.Retain) == (800, True, True)
    assert getattr(alarm, "ActiveState/Id") is True
    assert getattr(alarm, "AckedState/Id") is False
    assert alarm.Message.Text == "Wafer stage interlock"
    assert await tc.read(m.BUILDING_BLOCKS, m.ITEM_STATE, m.CURRENT_STATE) == "OutOfService"
    with pytest.raises(ua.UaStatusCodeError):
        await tc.job("Resume", "J1", "")

    condition = tc.client.get_node(alarm.NodeId)
    ack = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)
    with pytest.raises(ua.UaStatusCodeError) as stale:
        await condition.call_method(ack, b"not-the-event-id", ua.LocalizedText("seen"))
    assert stale.value.code == ua.StatusCodes.BadEventIdUnknown
    await condition.call_method(ack, alarm.EventId, ua.LocalizedText("seen"))
    await wait_until(lambda: len(tc.alarm_events()) == 2, "acknowledged event")
    acked = tc.alarm_events()[1]
    assert getattr(acked, "AckedState/Id") is True
    assert acked.Retain is True  # still active

    await sim.clear_alarm("STAGE_INTERLOCK")
    await wait_until(lambda: len(tc.alarm_events()) == 3, "cleared event")
    cleared = tc.alarm_events()[2]
    assert getattr(cleared, "ActiveState/Id") is False
    assert cleared.Retain is False
    await tc.job("Resume", "J1", "")
    sim.clock.speed = 100_000
    assert (await tc.wait_job("J1", "Ended")).JobSubstate == "Completed"


async def test_condition_refresh_replays_retained_alarms(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho())
    await sim.raise_alarm("FILTER", "Filter life low", severity=200, breaking=False)
    await sim.raise_alarm("GONE", "Transient")
    await sim.clear_alarm("GONE")
    tc = await connect(sim)  # subscribes after the alarms were raised
    await tc.client.nodes.server.call_method(
        ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
        ua.Variant(tc.subscription.subscription_id, ua.VariantType.UInt32),
    )
    await wait_until(lambda: len(tc.alarm_events()) >= 2, "refreshed alarms")
    names = {e.ConditionName for e in tc.alarm_events()}
    assert names == {"FILTER", "GONE"}  # GONE is inactive but not yet acknowledged
    assert all(e.Breaking is False for e in tc.alarm_events())


async def test_duplicate_and_replayed_job_events(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho(), speed=3000)
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", [1])), "")
    await tc.wait_job("J1", "Ended")
    original = [(e.Sequence, e.JobState) for e in tc.job_events()]
    await sim.duplicate_job_event()
    await sim.replay_job_event(back=3)
    await wait_until(lambda: len(tc.job_events()) == len(original) + 2, "two more job events")
    again = [(e.Sequence, e.JobState) for e in tc.job_events()[-2:]]
    assert again == [original[-1], original[-3]]


async def test_silent_tool_stays_connected_but_stops_updating(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho(), speed=600)
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await sim.go_silent()
    await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", [1, 2])), "")
    await wait_until(lambda: sim.tool.wafers_processed_total == 2, "the job to finish inside")
    assert await tc.read(m.COUNTERS, m.WAFERS_PROCESSED_TOTAL) == 0
    assert tc.job_events() == []
    assert await tc.read(m.CONTROL, m.CONTROL_STATE) == "OnlineRemote"  # still answers
    await sim.resume_updates()
    assert (await tc.wait_job("J1", "Ended")).JobSubstate == "Completed"
    await wait_until(lambda: sim._published["Counters/Wafers"] == 2, "counter published")
    assert await tc.read(m.COUNTERS, m.WAFERS_PROCESSED_TOTAL) == 2


async def test_connection_drop_and_restart(make_sim: SimFactory, connect: ClientFactory) -> None:
    sim = await make_sim(litho(), speed=600)
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", list(range(1, 6)))), "")
    # Through the CLI's code path: InjectFault over OPC UA.
    await inject(_fault_parser().parse_args([sim.endpoint, "drop_connection", '{"seconds": 60}']))
    await wait_until(lambda: not sim.connected, "the drop")
    with pytest.raises((OSError, ConnectionError, TimeoutError, ua.UaError)):
        async with Client(sim.endpoint, timeout=2):
            pass
    await wait_until(lambda: sim.tool.wafers_processed_total >= 1, "processing during the outage")
    await sim.restore_connection()
    again = await connect(sim)
    assert await again.read(m.CONTROL, m.CONTROL_STATE) == "OnlineRemote"
    # The job may end before the new session subscribes (events are not replayed to it): ask
    # the tool, as a reconnecting host does.
    await wait_until(lambda: sim.tool.jobs["J1"].state.value == "Ended", "J1 to end")
    response, _state = await again.job_results.call_method(
        f"{again.ns[m.NS_ISA95_JOBS]}:{m.REQUEST_JOB_RESPONSE}", "J1"
    )
    ended = parse_job_response(str(response))
    assert (ended.state, ended.substate, ended.wafers_processed) == ("Ended", "Completed", 5)
    assert await again.read(m.COUNTERS, m.WAFERS_PROCESSED_TOTAL) == 5


async def test_auto_reconnecting_client_gets_the_events_after_a_drop(
    make_sim: SimFactory,
) -> None:
    sim = await make_sim(litho(), speed=600)
    from .conftest import ToolClient

    client = Client(sim.endpoint, timeout=TIMEOUT, auto_reconnect=True, reconnect_max_delay=0.5)
    await client.connect()
    try:
        tc = ToolClient(client, sim.spec.tool_id)
        await tc.setup()
        await tc.download("R1", LITHO_BODY)
        async with client.subscribe_state() as states:
            await sim.drop_connection(seconds=1.0)
            await states.wait_for_state(UaClientState.RECONNECTING, TIMEOUT)
            await states.wait_for_state(UaClientState.CONNECTED, TIMEOUT)
        await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", [1, 2])), "")
        assert (await tc.wait_job("J1", "Ended")).JobSubstate == "Completed"
    finally:
        await client.disconnect()
