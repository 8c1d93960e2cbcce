"""A lot that runs in an equipment job is tracked out by its job, not by hand: a manual
track-out while the job is open is refused, and a job's late end event never moves a lot that
has since been moved on (it was taken off and sent on by other means)."""

from __future__ import annotations

from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import start


async def test_a_manual_track_out_of_a_lot_in_an_open_job_is_refused(client):
    code = (await start(client))["code"]
    job = await client.post("/api/v1/jobs", json={"tool": "F1-WETC01", "lots": [code]})
    assert job.status_code == 201, job.text
    out = await client.post(f"/api/v1/lots/{code}/track-out", json={})
    assert_problem(out, 409, "lot.job_open")
    assert job.json()["job_order_id"] in out.json()["detail"]
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    assert (lot["state"], lot["step"]["sequence"]) == ("Running", 10)
