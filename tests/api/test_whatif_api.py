"""What-if through the API: a job that simulates the live fab in a worker process."""

from __future__ import annotations

import asyncio

from tests.api.problems import assert_problem


async def test_a_whatif_job_runs_off_the_request_path_and_answers_both_rule_sets(client):
    for priority in ("normal", "hot"):
        body = {"product": "LOGIC28", "fab": "F1", "wafer_count": 5, "priority_class": priority}
        started = await client.post("/api/v1/lots", json=body)
        assert started.status_code == 201, started.text
    response = await client.post(
        "/api/v1/whatif", json={"fab": "F1", "days": 2, "rules": ["production", "fifo"]}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running")
    assert job["read"]["lots"] >= 2
    assert job["read"]["tools"] > 0
    for _ in range(600):  # a worker process is started for the first job
        polled = await client.get(f"/api/v1/whatif/{job['id']}")
        assert polled.status_code == 200
        job = polled.json()
        if job["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.2)
    assert job["status"] == "done", job
    assert job["progress"] == 1.0
    assert set(job["result"]) == {"production", "fifo"}
    for figures in job["result"].values():
        assert figures["counters"]["decisions"] > 0
        assert figures["lot_types"]


async def test_whatif_refusals(client, client_as):
    unknown = await client.post("/api/v1/whatif", json={"fab": "F1", "rules": ["fifo", "magic"]})
    assert_problem(unknown, 422, "whatif.unknown_rule_set")
    twice = await client.post("/api/v1/whatif", json={"fab": "F1", "rules": ["fifo", "FIFO"]})
    assert_problem(twice, 422, "whatif.duplicate_rule_set")
    no_fab = await client.post("/api/v1/whatif", json={"fab": "NOPE"})
    assert no_fab.status_code == 404
    operator = client_as("t-operator")
    assert (await operator.post("/api/v1/whatif", json={"fab": "F1"})).status_code == 403
    assert_problem(await client.get("/api/v1/whatif/nope"), 404, "whatif.not_found")
