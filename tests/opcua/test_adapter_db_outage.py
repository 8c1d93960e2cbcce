"""The database goes away under the adapters and comes back (a TCP proxy the test controls in
front of PostgreSQL, as in tests/crash/test_database_faults.py): while it is gone the tool
finishes its job and raises an alarm; once it is back the adapter re-reads the tool by itself
(state, alarms, each open job by its order id), and nothing is lost or doubled: the job is
completed once, the lot tracked out once with its process values, the alarm open once."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from mes.check.invariants import check_database
from mes.db.transaction import unit_of_work
from mes.equipment.models import EquipmentAlarm
from mes.jobs.models import EquipmentJob, ProcessValueSummary
from tests.crash.proxy import Proxy

from .conftest import Fab, wait_for
from .test_adapter_faults import _at_dep_step, _count, _state_is

DEP = "T1-DEP01"


@pytest.fixture
def postgres_only() -> None:
    if not os.environ.get("MES_TEST_DATABASE_URL", "").startswith("postgresql"):
        pytest.skip("the proxy stands in front of PostgreSQL (MES_TEST_DATABASE_URL)")


async def test_adapters_resynchronise_after_a_database_outage(
    fab: Fab, postgres_only: None
) -> None:
    target = make_url(fab.url)
    proxy = Proxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    try:
        through = target.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        settings = fab.settings.model_copy(
            update={
                "database_url": through,
                "database_connect_timeout_s": 1,
                "database_command_timeout_s": 2,
                "database_pool_timeout_s": 1,
            }
        )
        sim = await fab.start_sim(DEP, speed=120.0)  # a job of some seconds
        # The production lease (15 s) outlasts this outage; a longer one hands the tool to a
        # fresh adapter, which resynchronises the same way.
        registry = fab.start_adapter(settings=settings, lease_ttl_s=15.0)
        await wait_for(lambda: _state_is(fab, DEP, "connected"), f"{DEP} connected", within=20)
        lot = await _at_dep_step(fab)
        job = await fab.request_job(lot, DEP)
        job_id = job["job_order_id"]
        await fab.wait_job(job_id, "running", within=30)

        # The database is gone (every connection dropped, new ones refused) ...
        await proxy.refuse()
        # ... while the tool finishes the job and raises an alarm.
        await sim.raise_alarm("OUTAGE-1", "raised while the MES database was away", severity=300)

        def ended_on_tool() -> bool:
            return sim.tool.jobs[job_id].state.value in ("Ended", "Aborted")

        await wait_for(ended_on_tool, "the job to end on the tool", within=60)
        assert (await fab.job(job_id))["status"] == "running"  # nobody could record it yet
        await proxy.restore()

        # Back: the adapter recovers by itself and re-reads what it missed.
        done = await fab.wait_job(job_id, "completed", "aborted", within=60)
        assert done["status"] == "completed", done
        await wait_for(lambda: _state_is(fab, DEP, "connected"), "connected again", within=30)

        async def alarm_once() -> bool:
            async with unit_of_work(fab.db, write=False) as session:
                codes = list(
                    await session.scalars(
                        select(EquipmentAlarm.alarm_code).where(
                            EquipmentAlarm.alarm_code == "OUTAGE-1"
                        )
                    )
                )
            return codes == ["OUTAGE-1"]

        await wait_for(alarm_once, "the alarm raised during the outage, recorded once")
        history = await fab.history(lot)
        assert _count(history, "TRACK_OUT") == 2  # step 10 by hand, step 20 from the tool
        assert (await fab.lot(lot))["step"]["sequence"] == 30
        async with unit_of_work(fab.db, write=False) as session:
            row = (
                await session.scalars(
                    select(EquipmentJob).where(EquipmentJob.job_order_id == job_id)
                )
            ).one()
            summaries = await session.scalar(
                select(func.count())
                .select_from(ProcessValueSummary)
                .where(ProcessValueSummary.job_id == row.id)
            )
        # The process values sampled before and during the outage were kept in memory and
        # written when the job was settled by the reconciliation.
        assert (summaries or 0) > 0
        assert registry.adapters, "the adapter serves the tool again"
        report = await check_database(fab.db)
        assert report.ok, [v.as_dict() for v in report.violations]

        # And the line goes on: the next lot runs through.
        lot2 = await _at_dep_step(fab)
        job2 = await fab.request_job(lot2, DEP)
        assert (await fab.wait_job(job2["job_order_id"], "completed", within=90))[
            "status"
        ] == "completed"
    finally:
        await proxy.close()
