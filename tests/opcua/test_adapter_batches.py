"""Batches: several lots in one job order, run together by a batch tool (here a wet bench
taking two lots per job), tracked in together, tracked out or sent back together."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from sqlalchemy import select

from mes.audit.context import AuditContext, bind
from mes.db.transaction import unit_of_work
from mes.equipment.models import Equipment
from tests.conftest import START

from .conftest import Fab, wait_for
from .test_adapter_faults import _state_is

WET = "T1-WET01"


async def _ready(fab: Fab, *, speed: float = 600.0) -> None:
    await fab.start_sim(WET, speed=speed)
    fab.start_adapter()
    await wait_for(lambda: _state_is(fab, WET, "connected"), f"{WET} connected", within=20)


async def _request_batch(fab: Fab, lots: list[str]) -> dict[str, Any]:
    r = await fab.api.post("/api/v1/jobs", json={"tool": WET, "lots": lots})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _count(history: list[dict[str, Any]], kind: str) -> int:
    return sum(1 for e in history if e["event_type"] == kind)


async def test_two_lots_run_as_one_job_order_and_are_tracked_out_together(fab: Fab) -> None:
    await _ready(fab)
    first, second = await fab.start_lot(5), await fab.start_lot(3)
    job = await _request_batch(fab, [second, first])  # the first named leads
    assert (job["lot"], job["lots"], job["status"]) == (second, [second, first], "requested")
    assert job["job_order_id"].startswith(f"{second}-10-")
    for lot in (first, second):
        assert (await fab.lot(lot))["state"] == "Running"

    done = await fab.wait_job(job["job_order_id"], "completed", "aborted", "failed")
    assert done["status"] == "completed", done
    assert done["wafers_processed"] == 8
    # One job order on the tool, carrying both lots: the bench ran them together.
    (tool_job,) = fab.sims[WET].tool.jobs.values()
    assert [lot["LotID"] for lot in tool_job.lots] == [second, first]
    for lot, wafers in ((first, 5), (second, 3)):
        detail = await fab.lot(lot)
        assert (detail["state"], detail["step"]["sequence"]) == ("Waiting", 20)
        history = await fab.history(lot)
        assert _count(history, "TRACK_IN") == 1
        outs = [e for e in history if e["event_type"] == "TRACK_OUT"]
        assert len(outs) == 1
        assert outs[0]["after"]["wafers_processed"] == wafers
        jobs = (await fab.api.get(f"/api/v1/lots/{lot}/jobs")).json()
        assert [j["job_order_id"] for j in jobs] == [job["job_order_id"]]


async def test_a_batch_is_all_or_nothing(fab: Fab) -> None:
    waiting = await fab.start_lot()
    ahead = await fab.start_lot()
    r = await fab.api.post(f"/api/v1/lots/{ahead}/track-in", json={"tool": WET})
    assert r.status_code == 200, r.text
    r = await fab.api.post(f"/api/v1/lots/{ahead}/track-out", json={})
    assert r.status_code == 200, r.text  # now at step 20: not a wet bench step

    r = await fab.api.post("/api/v1/jobs", json={"tool": WET, "lots": [waiting, ahead]})
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (await fab.lot(waiting))["state"] == "Waiting"  # its track-in was rolled back
    assert (await fab.api.get(f"/api/v1/lots/{waiting}/jobs")).json() == []

    r = await fab.api.post("/api/v1/jobs", json={"tool": WET, "lots": [waiting, waiting]})
    assert (r.status_code, r.json()["code"]) == (409, "job.duplicate_lot")
    r = await fab.api.post("/api/v1/jobs", json={"tool": WET, "lots": []})
    assert r.status_code == 422
    assert (await fab.lot(waiting))["state"] == "Waiting"


async def test_an_aborted_batch_sends_every_lot_back_on_hold(fab: Fab) -> None:
    await _ready(fab, speed=20)
    counted_before = await _wafers_counted(fab)
    lots = [await fab.start_lot(), await fab.start_lot()]
    job = await _request_batch(fab, lots)
    await fab.wait_job(job["job_order_id"], "running")
    r = await fab.api.post(
        f"/api/v1/jobs/{job['job_order_id']}/commands", json={"command": "abort"}
    )
    assert r.status_code == 200, r.text
    done = await fab.wait_job(job["job_order_id"], "aborted", "completed")
    assert done["status"] == "aborted"
    given_back = 0
    for lot in lots:
        detail = await fab.lot(lot)
        assert (detail["state"], detail["step"]["sequence"]) == ("OnHold", 10)
        history = await fab.history(lot)
        assert _count(history, "JOB_ABORTED") == 1
        assert _count(history, "TRACK_OUT") == 0
        given_back += next(e for e in history if e["event_type"] == "JOB_ABORTED")["after"][
            "usage_given_back"
        ]
    assert len(fab.sims[WET].tool.jobs) == 1
    # The wafers the tool never processed gave back what their track-in counted.
    assert given_back == 10 - done["wafers_processed"]
    assert await _wafers_counted(fab) == counted_before + done["wafers_processed"]


async def _wafers_counted(fab: Fab) -> int:
    async with unit_of_work(fab.db, write=False) as session:
        return int(
            await session.scalar(select(Equipment.wafers_processed).where(Equipment.code == WET))
            or 0
        )


async def test_a_withdrawn_job_sends_its_lots_back(fab: Fab) -> None:
    lots = [await fab.start_lot(), await fab.start_lot()]  # no adapter: the job stays queued
    job = await _request_batch(fab, lots)
    r = await fab.api.post(
        f"/api/v1/jobs/{job['job_order_id']}/commands", json={"command": "abort"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["last_error"]) == (
        "aborted",
        "withdrawn by t1-operator before it was sent",
    )
    for lot in lots:
        detail = await fab.lot(lot)
        assert (detail["state"], detail["step"]["sequence"]) == ("Waiting", 10)
        assert _count(await fab.history(lot), "JOB_WITHDRAWN") == 1
    assert (await fab.tool(WET))["e10_state"] == "SBY"


async def test_a_batch_racing_a_single_job_for_a_shared_lot(fab: Fab) -> None:
    """A batch of (a, b) and a job for b alone, at the same moment, on the same tool: exactly
    one gets b, the loser changes nothing, nobody deadlocks (PostgreSQL runs them truly in
    parallel) and no answer is a 5xx."""
    outcomes: Counter[str] = Counter()
    for _ in range(8):
        a, b = await fab.start_lot(), await fab.start_lot()
        batch, single = await asyncio.gather(
            fab.api.post("/api/v1/jobs", json={"tool": WET, "lots": [a, b]}),
            fab.api.post(f"/api/v1/lots/{b}/jobs", json={"tool": WET}),
        )
        assert batch.status_code in (201, 409), batch.text
        assert single.status_code in (201, 409), single.text
        assert sorted((batch.status_code, single.status_code)) == [201, 409]
        winner = batch if batch.status_code == 201 else single
        outcomes["batch" if winner is batch else "single"] += 1
        assert (await fab.lot(b))["state"] == "Running"
        assert (await fab.lot(a))["state"] == ("Running" if winner is batch else "Waiting")
        jobs_of_b = (await fab.api.get(f"/api/v1/lots/{b}/jobs")).json()
        assert [j["job_order_id"] for j in jobs_of_b] == [winner.json()["job_order_id"]]
        r = await fab.api.post(
            f"/api/v1/jobs/{winner.json()['job_order_id']}/commands", json={"command": "abort"}
        )
        assert r.status_code == 200, r.text  # withdrawn: the bench is free for the next round
    assert sum(outcomes.values()) == 8


async def test_a_tool_without_an_endpoint_takes_no_job_orders(fab: Fab) -> None:
    async with unit_of_work(fab.db) as session:
        bind(session, AuditContext(actor="test", role="system", operation="test.setup", at=START))
        tool = (await session.scalars(select(Equipment).where(Equipment.code == WET))).one()
        tool.opcua_endpoint = None  # run by hand
    lot = await fab.start_lot()
    r = await fab.api.post("/api/v1/jobs", json={"tool": WET, "lots": [lot]})
    assert (r.status_code, r.json()["code"]) == (409, "job.tool_not_connected")
    assert (await fab.lot(lot))["state"] == "Waiting"  # the track-in went with the refusal
