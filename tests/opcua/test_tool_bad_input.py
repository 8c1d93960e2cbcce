"""Bad input from a tool, over real OPC UA loopback: values and events of the wrong type or out
of range, events out of order, for unknown jobs, replayed, lost on the way, and a flood.

In every case the adapter does not crash or stall, does not apply the bad message (it is kept
as a dead letter, with the MES alarm ``MES_BAD_MESSAGE`` or ``MES_EVENTS_LOST`` on the tool),
and goes on with the next good events: a lot run afterwards is tracked out exactly once.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import select

from mes.db.transaction import unit_of_work
from mes.equipment.models import EquipmentAlarm
from mes.jobs.models import EquipmentJob, JobWaferResult
from mes.opcua.adapter import ToolAdapter

from .conftest import Fab, wait_for
from .test_adapter_faults import _at_dep_step, _count, _state_is

DEP = "T1-DEP01"


async def _up(fab: Fab, **adapter: Any) -> ToolAdapter:
    await fab.start_sim(DEP)
    # A lease that outlives a starved machine's stalls: these tests count sessions and events
    # of one adapter, which a lost lease would replace.
    registry = fab.start_adapter(**{"lease_ttl_s": 15.0, **adapter})
    await wait_for(lambda: _state_is(fab, DEP, "connected"), f"{DEP} connected", within=20)
    await wait_for(lambda: bool(registry.adapters), "the adapter")
    return next(a for a in registry.adapters.values() if a.tool.code == DEP)


async def _alarms(fab: Fab, *, open_only: bool = True) -> list[str]:
    async with unit_of_work(fab.db, write=False) as session:
        query = select(EquipmentAlarm.alarm_code)
        if open_only:
            query = query.where(EquipmentAlarm.cleared_at.is_(None))
        return list(await session.scalars(query))


async def _letters(fab: Fab) -> list[dict[str, Any]]:
    r = await fab.api.get(f"/api/v1/equipment/{DEP}/dead-letters")
    assert r.status_code == 200, r.text
    return list(r.json())


async def _run_a_lot(fab: Fab) -> str:
    """A good lot through the tool: requested, run, tracked out once (the adapter goes on)."""
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    done = await fab.wait_job(job["job_order_id"], "completed", "aborted", "failed", within=60)
    assert done["status"] == "completed", done
    assert (await fab.lot(lot))["step"]["sequence"] == 30
    assert _count(await fab.history(lot), "TRACK_OUT") == 2  # step 10 by hand, 20 by the tool
    return lot


EDGE = [  # (fault kind, what the dead letter's error names)
    ("job_sequence_text", "Sequence must be an integer"),
    ("job_unknown_state", "JobState 'Exploded'"),
    ("substrate_slot_text", "Slot must be an integer"),
    ("substrate_slot_out_of_range", "Slot 9999 is out of range"),
    ("alarm_severity_text", "Severity must be an integer"),
    ("alarm_severity_out_of_range", "Severity 5000 is out of range"),
    ("item_state_number", "ItemState must be a string"),
    ("control_state_unknown", "ControlState 'Sideways'"),
    ("process_value_text", "must be a finite number"),
    ("process_value_nan", "must be a finite number"),
]


async def test_wrong_types_and_out_of_range_values_are_refused_and_the_adapter_goes_on(
    fab: Fab,
) -> None:
    adapter = await _up(fab)
    first = await _run_a_lot(fab)
    before = await fab.history(first)
    tool_before = await fab.tool(DEP)
    sessions = adapter.sessions
    sim = fab.sims[DEP]
    for kind, _ in EDGE:
        await sim.send_bad_event(kind)

    async def all_kept() -> bool:
        return len(await _letters(fab)) >= len(EDGE)

    await wait_for(all_kept, "every bad message in the dead letters")
    errors = [letter["error"] for letter in await _letters(fab)]
    for kind, expected in EDGE:
        assert sum(expected in e for e in errors) >= 1, (kind, expected, errors)
    assert len(errors) == len(EDGE), errors  # each once (the process values: once per session)

    # Nothing was applied: no alarm from the bad severities, the tool's E10 and control states
    # as they were, the lot that ran before untouched; one MES alarm says what happened.
    codes = await _alarms(fab, open_only=False)
    assert "BAD-SEVERITY" not in codes
    assert codes.count("MES_BAD_MESSAGE") == 1
    tool = await fab.tool(DEP)
    for key in ("e10_state", "e10_substate", "control_state"):
        assert tool[key] == tool_before[key], (key, tool[key], tool_before[key])
    assert await fab.history(first) == before

    # Never stalled or crashed: the same session, connected, and the next lot runs through
    # (the tool publishes its real states again first).
    await sim.command(lambda: None, slow=False)
    await _run_a_lot(fab)
    assert adapter.sessions == sessions
    assert await _state_is(fab, DEP, "connected")


async def test_out_of_order_unknown_and_impossible_job_events_change_nothing(
    fab: Fab, caplog: pytest.LogCaptureFixture
) -> None:
    await _up(fab)
    lot = await _run_a_lot(fab)
    history = await fab.history(lot)
    sim = fab.sims[DEP]
    caplog.set_level(logging.DEBUG, logger="mes.opcua")

    # The job's Running event again under a new Sequence, after it Ended: the job stays
    # completed and the lot where it went.
    await sim.resend_job_event(back=2)
    # An Ended event for a job order the MES never sent: logged, nothing else.
    await sim.send_bad_event("job_unknown_job")
    # A wafer result for the ended job: late, it must not rewrite the job's results.
    await sim.send_bad_event("substrate_unknown_wafer")

    def seen() -> bool:
        text = caplog.text
        return all(
            what in text
            for what in ("confirm (no change: job completed)", "NO-SUCH-JOB", "after job")
        )

    await wait_for(seen, "the adapter to apply all three")
    assert await fab.history(lot) == history
    assert (await fab.lot(lot))["step"]["sequence"] == 30
    logs = caplog.text
    assert "which the MES did not send there" in logs
    assert "NO-SUCH-JOB" in logs
    assert "substrate event GHOST-01/Processed after job" in logs  # late: ignored
    async with unit_of_work(fab.db, write=False) as session:
        ghosts = await session.scalars(
            select(JobWaferResult).where(JobWaferResult.substrate_id == "GHOST-01")
        )
        assert list(ghosts) == []

    # A wafer that is not in the running job's lots, and a job end claiming 9999 wafers
    # processed: both refused (dead letters); the lot is held at its step instead of passing
    # on a count nobody can believe.
    lot2 = await _at_dep_step(fab, wafers=3)
    await sim.send_bad_event("job_wafers_out_of_range")
    job = await fab.request_job(lot2, DEP)
    # (sent before the job can have ended, so it is refused, not ignored as late)
    await sim.send_bad_event("substrate_unknown_wafer", job_order_id=job["job_order_id"])
    done = await fab.wait_job(job["job_order_id"], "completed", "aborted", within=60)
    assert done["wafers_processed"] == 0, done
    held = await fab.lot(lot2)
    assert held["state"] == "OnHold", held
    assert held["step"]["sequence"] == 20, held
    errors = " | ".join(letter["error"] for letter in await _letters(fab))
    assert "WafersProcessed 9999" in errors, errors
    assert "'GHOST-01' is not a wafer of job" in errors, errors
    async with unit_of_work(fab.db, write=False) as session:
        row = (
            await session.scalars(
                select(EquipmentJob).where(EquipmentJob.job_order_id == job["job_order_id"])
            )
        ).one()
        assert row.wafers_processed == 0
        ghosts = await session.scalars(
            select(JobWaferResult).where(JobWaferResult.substrate_id == "GHOST-01")
        )
        assert list(ghosts) == []

    # And the adapter goes on with the next good lot.
    await _run_a_lot(fab)


async def test_lost_events_are_noticed_by_their_sequence_and_resynchronised(fab: Fab) -> None:
    adapter = await _up(fab)
    await _run_a_lot(fab)  # the adapter has seen the tool's Sequence so far
    sessions = adapter.sessions
    # The job's first events never arrive (the Running event, the first wafer's): the next
    # event's Sequence shows the gap, the adapter raises MES_EVENTS_LOST and re-reads the job.
    await fab.sims[DEP].lose_events(2)
    lot = await _run_a_lot(fab)
    assert adapter.events_lost == 1
    assert adapter.sessions == sessions + 1
    assert (await _alarms(fab)).count("MES_EVENTS_LOST") == 1
    history = await fab.history(lot)
    assert _count(history, "TRACK_OUT") == 2
    await wait_for(lambda: _state_is(fab, DEP, "connected"), "connected again")


async def test_an_alarm_flood_is_bounded_and_the_line_goes_on(fab: Fab) -> None:
    limit = 200
    adapter = await _up(fab, max_queued_events=limit)
    sim = fab.sims[DEP]
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    await fab.wait_job(job["job_order_id"], "running", "completed", within=30)
    # 4000 alarm events as fast as the server takes them (ten codes raised and cleared in
    # turn), during the job.
    await sim.flood_alarms(count=4000, codes=10)
    done = await fab.wait_job(job["job_order_id"], "completed", "aborted", within=90)
    assert done["status"] == "completed", done

    # Bounded: never more than the limit waiting; the overflow was dropped, noticed, alarmed
    # once, and the session rebuilt (re-reading the tool).
    print(
        f"flood of 4000 alarm events: queue high water {adapter.queue_high_water} "
        f"(limit {limit}), sessions rebuilt for lost events {adapter.events_lost}"
    )
    assert adapter.queue_high_water <= limit
    assert adapter.events_lost >= 1

    async def settled() -> bool:
        codes = await _alarms(fab)
        return not any(c.startswith("FLOOD-") for c in codes)

    await wait_for(settled, "the flood's alarms closed (all cleared on the tool)", within=60)
    assert (await _alarms(fab)).count("MES_EVENTS_LOST") == 1
    assert _count(await fab.history(lot), "TRACK_OUT") == 2
    await wait_for(lambda: _state_is(fab, DEP, "connected"), "connected again", within=30)
    await _run_a_lot(fab)
