"""E87 slot-map verification at job start, against a real simulated tool over OPC UA: the
carrier on the tool's load port is mapped differently from what the MES holds, so the adapter
refuses the job before it reaches the tool; with the carrier mapped right, the job runs."""

from __future__ import annotations

from datetime import UTC, datetime

from mes.audit.context import AuditContext, bind
from mes.db.transaction import unit_of_work
from mes.durables import service as durables_service
from mes.durables.schemas import CarrierCreate

from .conftest import Fab, wait_for

WET = "T1-WET01"
CARRIER = "T1-FP01"


async def _lot_in_carrier_on_port(fab: Fab) -> str:
    async with unit_of_work(fab.db) as session:
        bind(
            session,
            AuditContext(
                actor="test", role="admin", operation="test.carrier", at=datetime.now(UTC)
            ),
        )
        await durables_service.create_carrier(session, CarrierCreate(code=CARRIER, fab="T1"))
    lot = await fab.start_lot(5)  # wafers in slots 1..5
    put = await fab.api.post(f"/api/v1/lots/{lot}/carrier", json={"carrier": CARRIER})
    assert put.status_code == 200, put.text
    load = await fab.api.post(f"/api/v1/tools/{WET}/load-ports/1/load", json={"carrier": CARRIER})
    assert load.status_code == 200, load.text
    return lot


async def test_a_slot_map_mismatch_refuses_the_job_and_a_match_runs_it(fab: Fab) -> None:
    sim = await fab.start_sim(WET)
    fab.start_adapter()

    async def connected() -> bool:
        return bool((await fab.connection(WET))["state"] == "connected")

    await wait_for(connected, f"{WET} connected", within=20)
    lot = await _lot_in_carrier_on_port(fab)
    # The mapper finds slot 4 empty and a wafer in slot 6 the MES knows nothing of.
    await sim.inject("place_carrier", port=1, carrier_id=CARRIER, slots=[1, 2, 3, 5, 6])

    job = await fab.request_job(lot, WET)
    done = await fab.wait_job(job["job_order_id"], "failed", "completed", "aborted")
    assert done["status"] == "failed"
    assert done["last_error"].startswith("carrier.slot_map_mismatch"), done["last_error"]
    assert "slots [4] empty on the tool" in done["last_error"]
    assert "slots [6] occupied on the tool" in done["last_error"]
    assert sim.tool.jobs == {}  # nothing reached the tool
    detail = await fab.lot(lot)
    assert (detail["state"], detail["step"]["sequence"], detail["carrier"]) == (
        "Waiting",
        10,
        CARRIER,
    )
    assert [e["event_type"] for e in await fab.history(lot)].count("JOB_FAILED") == 1

    # The carrier put right (as after a sorter fixed it): the next attempt runs.
    await sim.inject("remove_carrier", port=1)
    await sim.inject("place_carrier", port=1, carrier_id=CARRIER, slots=[1, 2, 3, 4, 5])
    again = await fab.request_job(lot, WET)
    ran = await fab.wait_job(again["job_order_id"], "completed", "failed", "aborted")
    assert ran["status"] == "completed", ran
    assert ran["wafers_processed"] == 5
