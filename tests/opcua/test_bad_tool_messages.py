"""One bad message from a tool (a NaN measurement) never stalls its adapter: it is refused at
the edge, kept in a dead-letter quarantine the API shows, raised as an MES alarm on the tool,
and the lot whose result could not be read is held — while the adapter goes on with the next."""

from __future__ import annotations

from sqlalchemy import select

from mes.db.transaction import unit_of_work
from mes.equipment.models import EquipmentAlarm

from .conftest import Fab
from .test_adapter_faults import _ready, _state_is

MET = "T1-MET01"


async def _at_met_step(fab: Fab, wafers: int = 3) -> str:
    lot = await fab.start_lot(wafers)
    for tool in ("T1-WET01", "T1-DEP01"):
        r = await fab.api.post(f"/api/v1/lots/{lot}/track-in", json={"tool": tool})
        assert r.status_code == 200, r.text
        r = await fab.api.post(f"/api/v1/lots/{lot}/track-out", json={})
        assert r.status_code == 200, r.text
    return lot


async def test_a_nan_measurement_is_quarantined_and_the_adapter_goes_on(fab: Fab) -> None:
    await _ready(fab, MET)
    sim = fab.sims[MET]
    await sim.set_drift(per_wafer=float("nan"))  # every site measurement becomes NaN
    bad = await _at_met_step(fab)
    job = await fab.request_job(bad, MET)
    done = await fab.wait_job(job["job_order_id"], "completed", "aborted", within=30)
    assert done["status"] == "completed"
    lot = await fab.lot(bad)
    assert lot["state"] == "OnHold"
    assert lot["step"]["sequence"] == 30  # not passed on an unreadable result
    letters = (await fab.api.get(f"/api/v1/equipment/{MET}/dead-letters")).json()
    assert letters, "the bad messages are kept"
    assert all("finite" in letter["error"] for letter in letters)
    assert "JobResponse" in {letter["kind"] for letter in letters}
    async with unit_of_work(fab.db, write=False) as session:
        codes = list(await session.scalars(select(EquipmentAlarm.alarm_code)))
    assert codes.count("MES_BAD_MESSAGE") == 1  # one open alarm, however many messages

    # The adapter was not stalled: the next lot runs through as usual.
    await sim.set_drift(per_wafer=0.0)
    good = await _at_met_step(fab)
    job = await fab.request_job(good, MET)
    assert (await fab.wait_job(job["job_order_id"], "completed", within=30))[
        "status"
    ] == "completed"
    assert (await fab.lot(good))["step"]["sequence"] == 40
    assert await _state_is(fab, MET, "connected")


async def test_an_unreadable_result_read_at_resync_is_filed_as_the_job_response(fab: Fab) -> None:
    # The end event is missed during an outage: the adapter reads the job's response when it
    # reconnects, and must file and settle that unreadable answer like the end event's.
    await _ready(fab, MET)
    sim = fab.sims[MET]
    await sim.set_drift(per_wafer=float("nan"))
    lot = await _at_met_step(fab)
    job = await fab.request_job(lot, MET)
    await fab.wait_job(job["job_order_id"], "running", within=15)
    await sim.drop_connection(seconds=4.0)  # the job ends on the tool while nobody listens
    done = await fab.wait_job(job["job_order_id"], "completed", "aborted", within=40)
    assert done["status"] == "completed"
    held = await fab.lot(lot)
    assert (held["state"], held["step"]["sequence"]) == ("OnHold", 30)
    letters = (await fab.api.get(f"/api/v1/equipment/{MET}/dead-letters")).json()
    # (The end event the tool replays at reconnect may be quarantined too, as kind Event.)
    responses = [letter for letter in letters if letter["kind"] == "JobResponse"]
    assert responses, letters
    assert all(job["job_order_id"] in letter["payload"] for letter in responses)
    assert "Unreadable" not in {letter["kind"] for letter in letters}
