"""The whole loop with nobody at the keyboard: the dispatcher chooses, the adapter starts the job
on a simulated tool and tracks the lot out when the tool reports it done, until lots finish."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from sqlalchemy import select

from mes.clock import SystemClock
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.dispatch.models import DispatchDecision
from mes.dispatch.scheduler import Dispatcher, Mode
from mes.jobs.models import EquipmentJob, EquipmentJobLot

from .conftest import ROUTE, TOOLS, Fab, wait_for


async def test_lots_flow_through_the_simulated_line_by_dispatch_alone(fab: Fab) -> None:
    for code in TOOLS:
        await fab.start_sim(code)
    fab.start_adapter()
    for code in TOOLS:
        await wait_for(
            lambda code=code: _state_is(fab, code, "connected"), f"{code} connected", within=20
        )
    lots = [await fab.start_lot(wafers=3) for _ in range(2)]

    db = Database(create_engine(fab.settings))
    dispatcher = Dispatcher(
        db, SystemClock(), {"T1": Mode.AUTO}, owner="dispatcher-test", interval_s=0.2
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        for lot in lots:
            await wait_for(
                lambda lot=lot: _lot_state_is(fab, lot, "Completed"),
                f"{lot} completed",
                within=120,
            )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.dispose()

    for lot in lots:
        history = await fab.history(lot)
        ins = [e for e in history if e["event_type"] == "TRACK_IN"]
        outs = [e for e in history if e["event_type"] == "TRACK_OUT"]
        assert len(ins) == len(outs) == len(ROUTE)
        assert {e["actor"] for e in ins} == {"dispatcher"}  # nobody requested a job by hand
        assert all(e["actor"].startswith("opcua:") for e in outs)

    async with unit_of_work(fab.db, write=False) as session:
        jobs = list(await session.scalars(select(EquipmentJob)))
        requested = list(
            await session.scalars(
                select(DispatchDecision).where(DispatchDecision.outcome == "requested")
            )
        )
        members = (
            await session.execute(select(EquipmentJobLot.job_id, EquipmentJobLot.lot_id))
        ).all()
    # Every lot ran every step in some job order; the two lots waiting together at the wet
    # bench (a batch step, two lots per job) went in as one batch.
    assert len(members) == len(lots) * len(ROUTE)
    lots_per_job = Counter(job_id for job_id, _ in members)
    assert sorted(lots_per_job.values()) == [1, 1, 1, 1, 1, 1, 2]
    (batch,) = [j for j in jobs if lots_per_job[j.id] == 2]
    assert batch.job_order_id.split("-")[-2] == "10"  # the CLEAN step
    assert {j.status.value for j in jobs} == {"completed"}
    # Every job order reached its tool exactly once.
    sent = [job_id for sim in fab.sims.values() for job_id in sim.tool.jobs]
    assert sorted(sent) == sorted(j.job_order_id for j in jobs)
    # Each start is a logged decision that explains its choice.
    assert len(requested) == len(jobs)
    for decision in requested:
        ranked = decision.top["ranked"]
        assert ranked[0]["lot"] == decision.chosen_lot
        assert ranked[0]["contributions"], "a decision says why"


async def _state_is(fab: Fab, code: str, state: str) -> bool:
    return (await fab.connection(code))["state"] == state


async def _lot_state_is(fab: Fab, lot: str, state: str) -> bool:
    return (await fab.lot(lot))["state"] == state
