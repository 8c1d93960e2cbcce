"""The faults of issue 7 over real OPC UA: breakdown, rejected downloads, slow replies,
a server restart that restores its state, and seeded random faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from asyncua import ua

from equipment_sims.state import read_state
from mes.opcua import model as m

from .conftest import (
    LITHO_BODY,
    ClientFactory,
    SimFactory,
    etch,
    job_order,
    litho,
    wait_until,
)

RANGED_BODY = {
    "parameters": [
        {"name": "dose", "value": 30.0, "unit": "mJ/cm2", "min": 10.0, "max": 50.0},
        {"name": "focus", "value": 0.0, "unit": "um", "min": -0.2, "max": 0.2},
    ]
}


async def test_breakdown_mid_job_aborts_it_and_puts_the_tool_out_of_service(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho(), speed=300)  # 25 wafers: 6 s
    tc = await connect(sim)
    await tc.download("R1", LITHO_BODY)
    await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", list(range(1, 26)))), "")
    await wait_until(
        lambda: any(e.SubstrateState == "Processed" for e in tc.substrate_events()),
        "a first processed wafer",
    )
    await sim.breakdown(text="Robot arm failure")
    aborted = await tc.wait_job("J1", "Aborted")
    states = [w["State"] for w in json.loads(aborted.JobResponse)["Wafers"]]
    assert states.count("Aborted") == 1
    assert "Skipped" in states
    await wait_until(lambda: len(tc.alarm_events()) == 1, "breakdown alarm")
    alarm = tc.alarm_events()[0]
    assert (alarm.ConditionName, alarm.Breaking, alarm.Severity) == ("BREAKDOWN", True, 900)
    assert alarm.Message.Text == "Robot arm failure"
    assert await tc.read(m.BUILDING_BLOCKS, m.ITEM_STATE, m.CURRENT_STATE) == "OutOfService"
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await tc.job("StoreAndStart", job_order("J2", "R1", ("L2", [1])), "")
    assert refused.value.code == ua.StatusCodes.BadInvalidState

    await sim.clear_alarm("BREAKDOWN")  # repaired
    assert await tc.read(m.BUILDING_BLOCKS, m.ITEM_STATE, m.CURRENT_STATE) == "NotExecuting"
    await tc.job("StoreAndStart", job_order("J3", "R1", ("L3", [1])), "")
    assert (await tc.wait_job("J3", "Ended")).JobSubstate == "Completed"


async def test_download_rejected_for_range_and_on_demand(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho())
    tc = await connect(sim)
    await tc.download("OK", RANGED_BODY)
    too_high = json.loads(json.dumps(RANGED_BODY))
    too_high["parameters"][0]["value"] = 75.0
    with pytest.raises(ua.UaStatusCodeError) as out_of_range:
        await tc.download("HIGH", too_high)
    assert out_of_range.value.code == ua.StatusCodes.BadOutOfRange

    await sim.inject("reject_downloads", count=1, reason="checksum")
    with pytest.raises(ua.UaStatusCodeError) as checksum:
        await tc.download("R2", RANGED_BODY)
    assert checksum.value.code == ua.StatusCodes.BadInvalidArgument
    await tc.download("R2", RANGED_BODY)  # only the one was rejected

    await sim.reject_downloads(reason="range")  # every one until told
    for _ in range(2):
        with pytest.raises(ua.UaStatusCodeError) as rejected:
            await tc.download("R3", LITHO_BODY)
        assert rejected.value.code == ua.StatusCodes.BadOutOfRange
    await sim.reject_downloads(0)
    await tc.download("R3", LITHO_BODY)
    assert await tc.read(m.RECIPES, m.RECIPE_LIST) == ["OK", "R2", "R3"]
    with pytest.raises(TypeError):
        sim.check_fault("reject_downloads", reasons="x")


async def test_slow_method_replies(make_sim: SimFactory, connect: ClientFactory) -> None:
    sim = await make_sim(litho())
    tc = await connect(sim)
    await sim.slow_replies(1.0)
    began = time.monotonic()
    await tc.download("R1", LITHO_BODY)
    assert time.monotonic() - began >= 1.0
    # Reads are not slowed.
    assert await tc.read(m.CONTROL, m.CONTROL_STATE) == "OnlineRemote"
    await sim.slow_replies(0)
    began = time.monotonic()
    await tc.call(m.RECIPES, m.SELECT_RECIPE, "R1")
    assert time.monotonic() - began < 1.0
    with pytest.raises(ValueError, match="negative"):
        await sim.slow_replies(-1)


async def test_restart_mid_job_restores_the_state_from_its_file(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(etch(), speed=300)  # 3 chambers, 6 wafers: about 2.5 s
    tc = await connect(sim)
    await tc.download("E1", {"parameters": [{"name": "time", "value": 60}]})
    await tc.download("E2", {"parameters": [{"name": "time", "value": 30}]})
    await tc.call(m.RECIPES, m.SELECT_RECIPE, "E2")
    await tc.job("StoreAndStart", job_order("J0", "E2", ("L0", [1])), "")
    await tc.wait_job("J0", "Ended")
    await tc.job("StoreAndStart", job_order("J1", "E1", ("L1", list(range(1, 7)))), "")
    await wait_until(
        lambda: any(
            e.SubstrateState == "Processed" and e.JobOrderID == "J1" for e in tc.substrate_events()
        ),
        "a first processed wafer of J1",
    )
    assert sim.state_path is not None
    saved = read_state(sim.state_path)
    assert saved is not None
    assert {j["job_order_id"] for j in saved["jobs"]} == {"J0", "J1"}

    await tc.call(m.SIMULATION, m.INJECT_FAULT, "restart", json.dumps({"down_s": 0.3}))
    await wait_until(lambda: sim.restarts == 1 and sim.connected, "the restart")

    tc2 = await connect(sim)
    assert await tc2.read(m.RECIPES, m.RECIPE_LIST) == ["E1", "E2"]
    assert await tc2.read(m.COUNTERS, m.WAFERS_PROCESSED_TOTAL) >= 2
    job_list = await tc2.job_control.get_child(f"{tc2.ns[m.NS_ISA95_JOBS]}:{m.JOB_ORDER_LIST}")

    async def jobs() -> dict[str, str]:
        return {j["JobOrderID"]: j["JobState"] for j in json.loads(await job_list.read_value())}

    assert (await jobs())["J0"] == "Ended"
    assert (await jobs())["J1"] in ("Running", "Ended")  # it may have ended meanwhile
    for _ in range(400):
        if (await jobs())["J1"] == "Ended":
            break
        await asyncio.sleep(0.05)
    response_node = f"{tc2.ns[m.NS_ISA95_JOBS]}:{m.REQUEST_JOB_RESPONSE}"
    text, state = await tc2.job_results.call_method(response_node, "J1")
    response = json.loads(text)
    assert (state, response["JobSubstate"]) == ("Ended", "Completed")
    assert response["WafersProcessed"] == 6
    assert await tc2.read(m.COUNTERS, m.WAFERS_PROCESSED_TOTAL) == 7
    await tc2.job("StoreAndStart", job_order("J2", "E2", ("L2", [1])), "")
    ended = await tc2.wait_job("J2", "Ended")
    # The event sequence goes on from where it was (no reuse after a restart).
    assert ended.Sequence > max(e.Sequence for e in tc.job_events())


async def test_restart_keeps_alarms_and_control_state(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho())
    await sim.raise_alarm("DOOR", "Door open", severity=400)
    await sim.set_control_state("OnlineLocal")
    await sim.restart(down_s=0.1)
    tc = await connect(sim)
    assert await tc.read(m.CONTROL, m.CONTROL_STATE) == "OnlineLocal"
    await tc.client.nodes.server.call_method(
        ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh), tc.subscription.subscription_id
    )
    await wait_until(
        lambda: any(e.ConditionName == "DOOR" for e in tc.alarm_events()), "DOOR alarm"
    )


async def test_random_faults_strike_at_the_seeded_rate(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    # Speed 3600: one simulated hour per second; 20 alarms an hour.
    sim = await make_sim(litho(), speed=3600, fault_rate=20, fault_kinds=("alarm",))
    tc = await connect(sim)
    await wait_until(lambda: len(sim.fault_log) >= 2, "two random faults")
    await wait_until(
        lambda: any(e.ConditionName.startswith("RANDOM-") for e in tc.alarm_events()),
        "a random alarm",
    )
    alarm = next(e for e in tc.alarm_events() if e.ConditionName.startswith("RANDOM-"))
    assert getattr(alarm, "AckedState/Id") is False  # it needs acknowledging
    assert all(kind == "alarm" for _, kind in sim.fault_log)


async def test_random_control_state_changes_come_back(
    make_sim: SimFactory, connect: ClientFactory
) -> None:
    sim = await make_sim(litho(), speed=3600, fault_rate=2, fault_kinds=("offline",), seed=11)
    tc = await connect(sim)
    seen: set[str] = set()

    async def watch() -> None:
        while True:
            seen.add(await tc.read(m.CONTROL, m.CONTROL_STATE))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(watch())
    try:
        await wait_until(lambda: "Offline" in seen, "Offline")
        seen.clear()
        await wait_until(lambda: "OnlineRemote" in seen, "back to OnlineRemote")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
