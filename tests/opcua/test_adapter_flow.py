"""A lot runs a whole route on simulated tools, tracked in and out by the adapter alone."""

from __future__ import annotations

from sqlalchemy import func, select

from mes.audit.context import AuditContext, bind
from mes.clock import FixedClock
from mes.db.transaction import unit_of_work
from mes.jobs.models import EquipmentJob, JobWaferResult, ProcessValueSummary
from mes.lots.models import LotEvent, Wafer
from mes.quality import plans
from mes.quality.schemas import ParameterIn, PlanBody, PlanCreate
from tests.conftest import START

from .conftest import ROUTE, TOOLS, Fab, wait_for


async def test_a_lot_runs_its_whole_route_through_the_adapter(fab: Fab) -> None:
    for code in TOOLS:
        await fab.start_sim(code)
    fab.start_adapter()
    for code in TOOLS:
        await wait_for(lambda code=code: _connected(fab, code), f"{code} connected", within=20)
    await _plan_for_the_deposition_temperature(fab)
    lot = await fab.start_lot(wafers=5)
    for sequence, _op, _group, _recipe, tool in ROUTE:
        # The etch job names one chamber: the MES checks it and the tool runs only there.
        chambers = {"chambers": ["PM2"]} if tool == "T1-ETCH01" else {}
        r = await fab.api.post(f"/api/v1/lots/{lot}/jobs", json={"tool": tool, **chambers})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "requested"
        assert job["job_order_id"] == f"{lot}-{sequence}-1"
        done = await fab.wait_job(job["job_order_id"], "completed", "failed", "aborted")
        assert done["status"] == "completed", done
        assert done["wafers_processed"] == 5
        sim_jobs = fab.sims[tool].tool.jobs
        assert list(sim_jobs) == [job["job_order_id"]]  # sent once
        if chambers:
            sim_job = sim_jobs[job["job_order_id"]]
            assert sim_job.chambers == ("PM2",)
            assert {w.chamber for w in sim_job.wafers} == {"PM2"}  # PM1 idle all along
    detail = await fab.lot(lot)
    assert detail["state"] == "Completed"
    history = await fab.history(lot)
    kinds = [e["event_type"] for e in history]
    assert kinds.count("TRACK_IN") == 4
    assert kinds.count("TRACK_OUT") == 4
    outs = [e for e in history if e["event_type"] == "TRACK_OUT"]
    assert all(e["actor"].startswith("opcua:") for e in outs)
    # The metrology step's measurements are recorded against the lot.
    measured = [e for e in outs if e["after"].get("measurements")]
    assert measured
    assert len(measured[0]["after"]["measurements"]) == 5
    async with unit_of_work(fab.db, write=False) as session:
        wafers = await session.scalar(select(func.count()).select_from(JobWaferResult))
        pvs = await session.scalar(select(func.count()).select_from(ProcessValueSummary))
        events = await session.scalar(select(func.count()).select_from(LotEvent))
    assert wafers == 20
    assert (pvs or 0) > 0
    assert events
    # The step's data collection plan took each wafer's chamber temperature as the tool sampled
    # it while the wafer was in process: every per-wafer summary of the deposition job (how many
    # there are depends on the samples that fell within each wafer's time on a loaded machine).
    collected = (await fab.api.get("/api/v1/quality/values", params={"lot": lot})).json()
    async with unit_of_work(fab.db, write=False) as session:
        rows = await session.execute(
            select(Wafer.slot, ProcessValueSummary.mean)
            .join(Wafer, Wafer.scribe_id == ProcessValueSummary.substrate_id)
            .join(EquipmentJob, EquipmentJob.id == ProcessValueSummary.job_id)
            .where(
                EquipmentJob.job_order_id == f"{lot}-20-1",
                ProcessValueSummary.name == "ChamberTemperature",
            )
        )
        expected = sorted((slot, mean) for slot, mean in rows.all())
    temps = [v for v in collected if v["parameter"] == "TEMP"]
    assert sorted((v["slot"], v["value"]) for v in temps) == expected
    assert {(v["operation"], v["tool"], v["source"]) for v in temps} <= {
        ("DEP", "T1-DEP01", "tool")
    }
    wrong = [
        {k: v[k] for k in ("slot", "value", "chamber", "source")}
        for v in temps
        if not (380 < v["value"] < 420 and v["chamber"] in ("PM1", "PM2"))
    ]
    assert not wrong, wrong
    connection = await fab.connection("T1-DEP01")
    assert connection["state"] in ("connected", "stale")
    assert connection["owner"] == "adapter-a"


async def _connected(fab: Fab, code: str) -> bool:
    return (await fab.connection(code))["state"] == "connected"


async def _plan_for_the_deposition_temperature(fab: Fab) -> None:
    async with unit_of_work(fab.db) as session:
        bind(session, AuditContext(actor="eng-a", role="engineer", operation="test", at=START))
        temp = ParameterIn(
            name="TEMP", unit="C", source="pv.ChamberTemperature.mean", required=False
        )
        await plans.create_plan(
            session,
            PlanCreate(name="DEP-TEMP", operation="DEP", body=PlanBody(parameters=[temp])),
            actor="eng-a",
        )
        await plans.approve_version(session, "DEP-TEMP", 1, actor="eng-b", clock=FixedClock(START))
