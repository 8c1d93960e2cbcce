"""A job that leaves wafers unprocessed never passes its lot: stopped on the tool mid-job, the
lot is held PARTIAL_RUN at the step it did not finish (real OPC UA against a simulated tool)."""

from __future__ import annotations

from .conftest import Fab
from .test_adapter_faults import DEP, _at_dep_step, _ready


async def test_a_job_stopped_on_the_tool_holds_its_lot_at_the_step(fab: Fab) -> None:
    await _ready(fab, DEP, speed=20)  # 5 wafers: several seconds, time to stop it
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    order = job["job_order_id"]
    await fab.wait_job(order, "running")
    sim = fab.sims[DEP]
    # The equipment operator presses Stop: the wafer in process finishes, the rest are skipped.
    await sim.command(lambda: sim.tool.stop(order))
    done = await fab.wait_job(order, "completed", "aborted")
    assert done["status"] == "completed"
    assert done["wafers_processed"] < 5

    after = await fab.lot(lot)
    assert after["state"] == "OnHold"
    assert after["step"]["sequence"] == 20  # not moved on to 30
    [hold] = after["holds"]
    assert hold["hold_code"] == "PARTIAL_RUN"
    assert f"{done['wafers_processed']} of 5 wafers processed" in hold["reason"]
    assert "Skipped" in hold["reason"]
    track_out = [e for e in await fab.history(lot) if e["event_type"] == "TRACK_OUT"][-1]
    assert track_out["after"]["wafers_processed"] == done["wafers_processed"]
    skipped = [w for w, state in track_out["after"]["partial_run"] if state == "Skipped"]
    assert len(skipped) == 5 - done["wafers_processed"]
