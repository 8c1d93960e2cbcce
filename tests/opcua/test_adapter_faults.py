"""Faults: duplicated events, dropped connections, a sim killed mid-job, a breakdown, a
corrupt recipe checksum, an adapter dying between send and confirmation, lease take-over.
In every case no job runs twice, no track-out is lost or doubled, and the lot history says
what happened."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from asyncua import Client
from sqlalchemy import func, select

from mes.clock import SystemClock
from mes.db.transaction import unit_of_work
from mes.equipment.models import Equipment, EquipmentAlarm
from mes.opcua import mapping
from mes.opcua import model as m
from mes.opcua import service as opcua_service
from mes.opcua.service import ToolRef

from .conftest import TOOLS, Fab, wait_for

DEP = "T1-DEP01"


async def _ready(fab: Fab, code: str, *, speed: float = 600.0, owner: str = "adapter-a") -> None:
    await fab.start_sim(code, speed=speed)
    fab.start_adapter(owner)
    await wait_for(lambda: _state_is(fab, code, "connected"), f"{code} connected", within=20)


async def _state_is(fab: Fab, code: str, state: str, owner: str | None = None) -> bool:
    c = await fab.connection(code)
    return bool(c["state"] == state and (owner is None or c["owner"] == owner))


async def _at_dep_step(fab: Fab, wafers: int = 5) -> str:
    """A lot waiting at step 20 (DEP): step 10 moved by hand (no sim needed for it)."""
    lot = await fab.start_lot(wafers)
    r = await fab.api.post(f"/api/v1/lots/{lot}/track-in", json={"tool": "T1-WET01"})
    assert r.status_code == 200, r.text
    r = await fab.api.post(f"/api/v1/lots/{lot}/track-out", json={})
    assert r.status_code == 200, r.text
    return lot


def _count(history: list[dict[str, object]], kind: str) -> int:
    return sum(1 for e in history if e["event_type"] == kind)


async def test_a_duplicated_and_a_replayed_job_event_change_nothing(fab: Fab) -> None:
    await _ready(fab, DEP)
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    await fab.wait_job(job["job_order_id"], "completed")
    registry = fab.registries[0][0]
    adapter = next(a for a in registry.adapters.values() if a.tool.code == DEP)
    applied = adapter.applied
    sim = fab.sims[DEP]
    await sim.duplicate_job_event()  # the Ended event again, same Sequence
    await sim.replay_job_event(back=2)  # the Running event again
    await wait_for(lambda: adapter.applied >= applied + 2, "the adapter to see both")
    history = await fab.history(lot)
    assert _count(history, "TRACK_OUT") == 2  # step 10 by hand, step 20 by the adapter
    assert (await fab.lot(lot))["step"]["sequence"] == 30
    assert (await fab.job(job["job_order_id"]))["status"] == "completed"


async def test_connection_drop_mid_job_reconnects_and_tracks_out_once(fab: Fab) -> None:
    await _ready(fab, DEP, speed=60)  # 5 wafers: about 3.5 s
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    await fab.wait_job(job["job_order_id"], "running")
    await fab.sims[DEP].drop_connection(seconds=2.0)
    await wait_for(
        lambda: _state_is(fab, DEP, "disconnected") or _state_is(fab, DEP, "connecting"),
        "the adapter to notice",
        within=15,
    )
    done = await fab.wait_job(job["job_order_id"], "completed", "aborted", "failed")
    assert done["status"] == "completed"
    await wait_for(lambda: _state_is(fab, DEP, "connected"), "reconnected", within=20)
    history = await fab.history(lot)
    assert _count(history, "TRACK_OUT") == 2
    assert list(fab.sims[DEP].tool.jobs) == [job["job_order_id"]]


async def test_sim_killed_mid_job_and_restarted_loses_the_job_once(fab: Fab) -> None:
    await _ready(fab, DEP, speed=30)
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    await fab.wait_job(job["job_order_id"], "running")
    await fab.stop_sim(DEP)  # the tool dies with the job on it
    await asyncio.sleep(0.5)
    await fab.start_sim(DEP, speed=600)  # comes back knowing nothing
    done = await fab.wait_job(job["job_order_id"], "aborted", "completed", "failed")
    assert done["status"] == "aborted"
    assert "not found on the tool" in done["last_error"]
    detail = await fab.lot(lot)
    assert detail["state"] == "OnHold"
    assert detail["step"]["sequence"] == 20
    history = await fab.history(lot)
    assert _count(history, "JOB_LOST") == 1
    assert _count(history, "TRACK_OUT") == 1
    assert fab.sims[DEP].tool.jobs == {}  # never resent


async def test_breakdown_mid_job_takes_the_tool_down_and_holds_the_lot(fab: Fab) -> None:
    await _ready(fab, DEP, speed=30)
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    await fab.wait_job(job["job_order_id"], "running")
    await fab.sims[DEP].raise_alarm(
        "RF_GEN_FAULT", "RF generator fault", severity=900, breaking=True
    )
    done = await fab.wait_job(job["job_order_id"], "aborted", "completed", "failed")
    assert done["status"] == "aborted"
    tool = await fab.tool(DEP)
    assert (tool["e10_state"], tool["e10_substate"]) == ("UDT", "UDT.ALARM")
    detail = await fab.lot(lot)
    assert (detail["state"], detail["step"]["sequence"]) == ("OnHold", 20)
    history = await fab.history(lot)
    assert _count(history, "JOB_ABORTED") == 1
    assert _count(history, "TRACK_OUT") == 1
    async with unit_of_work(fab.db, write=False) as session:
        alarms = list(await session.scalars(select(EquipmentAlarm)))
    assert [(a.alarm_code, a.breaking) for a in alarms] == [("RF_GEN_FAULT", True)]
    assert "udt" in alarms[0].actions
    assert "abort" in alarms[0].actions
    # The tool recovers: cleared alarm -> NotExecuting -> SBY.
    await fab.sims[DEP].clear_alarm("RF_GEN_FAULT")
    await wait_for(lambda: _tool_state(fab, DEP, "SBY"), "the tool back in SBY", within=15)
    async with unit_of_work(fab.db, write=False) as session:
        cleared = await session.scalar(
            select(func.count())
            .select_from(EquipmentAlarm)
            .where(EquipmentAlarm.cleared_at.is_not(None))
        )
    assert cleared == 1


async def _tool_state(fab: Fab, code: str, state: str) -> bool:
    return bool((await fab.tool(code))["e10_state"] == state)


async def test_recipe_checksum_mismatch_fails_the_job_before_it_starts(fab: Fab) -> None:
    await _ready(fab, DEP)
    await fab.sims[DEP].corrupt_checksums()
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    done = await fab.wait_job(job["job_order_id"], "failed", "completed", "aborted")
    assert done["status"] == "failed"
    assert done["last_error"].startswith("recipe.checksum_mismatch")
    assert fab.sims[DEP].tool.jobs == {}  # never started
    detail = await fab.lot(lot)
    assert (detail["state"], detail["step"]["sequence"]) == ("Waiting", 20)
    history = await fab.history(lot)
    assert _count(history, "JOB_FAILED") == 1
    # With the tool fixed, a second attempt runs (a new job order id).
    await fab.sims[DEP].corrupt_checksums(on=False)
    again = await fab.request_job(lot, DEP)
    assert again["job_order_id"].endswith("-20-2")
    assert (await fab.wait_job(again["job_order_id"], "completed"))["wafers_processed"] == 5


async def _send_as_dead_adapter(fab: Fab, lot: str, *, deliver: bool) -> str:
    """What an adapter that died right after its send would leave: the job ``sent`` (committed
    before the call) and, if ``deliver``, the job order on the tool; no event applied."""
    job = await fab.request_job(lot, DEP)
    job_id = job["job_order_id"]
    async with unit_of_work(fab.db) as session:
        tool_id = await session.scalar(select(Equipment.id).where(Equipment.code == DEP))
        assert tool_id is not None
        tool = ToolRef(tool_id, DEP, 1, "")
        now = SystemClock().now()
        opcua_service.bind_adapter(session, tool, "test.dead_adapter", now)
        assert await opcua_service.acquire(
            session, tool_id, "dead-adapter", now, timedelta(seconds=1)
        )
        sent = await opcua_service.claim_send(session, tool, job_id, "dead-adapter", now)
        assert sent is not None
        body = dict(sent.recipe_version.body)
        recipe_id = mapping.tool_recipe_id(
            sent.recipe_version.recipe.name, sent.recipe_version.version
        )
    if deliver:
        sim = fab.sims[DEP]
        async with Client(sim.endpoint, timeout=10) as client:
            ns = {
                uri: await client.get_namespace_index(uri)
                for uri in (m.NS_FAB, m.NS_MACHINERY, m.NS_MACHINERY_JOBS, m.NS_ISA95_JOBS)
            }
            machine = await client.nodes.objects.get_child(
                [f"{ns[m.NS_MACHINERY]}:Machines", f"{ns[m.NS_FAB]}:{DEP}"]
            )
            recipes = await machine.get_child([f"{ns[m.NS_FAB]}:Recipes"])
            await recipes.call_method(
                f"{ns[m.NS_FAB]}:{m.DOWNLOAD_RECIPE}",
                recipe_id,
                json.dumps(body),
                m.recipe_checksum(body),
            )
            control = await machine.get_child(
                [
                    f"{ns[m.NS_MACHINERY]}:MachineryBuildingBlocks",
                    f"{ns[m.NS_MACHINERY_JOBS]}:JobManagement",
                    f"{ns[m.NS_ISA95_JOBS]}:JobOrderControl",
                ]
            )
            order = mapping.job_order_document(
                job_id,
                recipe_id,
                [mapping.JobOrderLot(lot, None, [(s, f"{lot}-W{s:02d}") for s in range(1, 6)])],
            )
            await control.call_method(f"{ns[m.NS_ISA95_JOBS]}:StoreAndStart", order, "")
    return job_id


async def test_restart_between_send_and_confirmation_never_sends_twice(fab: Fab) -> None:
    await fab.start_sim(DEP)
    lot = await _at_dep_step(fab)
    job_id = await _send_as_dead_adapter(fab, lot, deliver=True)
    await asyncio.sleep(1.2)  # the dead adapter's lease runs out
    fab.start_adapter("adapter-b")  # the restarted MES
    done = await fab.wait_job(job_id, "completed", "aborted", "failed")
    assert done["status"] == "completed"
    assert list(fab.sims[DEP].tool.jobs) == [job_id]  # one job on the tool, started once
    history = await fab.history(lot)
    assert _count(history, "TRACK_OUT") == 2


async def test_a_sent_job_the_tool_never_got_is_not_resent(fab: Fab) -> None:
    await fab.start_sim(DEP)
    lot = await _at_dep_step(fab)
    job_id = await _send_as_dead_adapter(fab, lot, deliver=False)
    await asyncio.sleep(1.2)
    fab.start_adapter("adapter-b")
    done = await fab.wait_job(job_id, "failed", "completed", "aborted")
    assert done["status"] == "failed"
    assert "not resent" in done["last_error"]
    assert fab.sims[DEP].tool.jobs == {}
    detail = await fab.lot(lot)
    assert (detail["state"], detail["step"]["sequence"]) == ("OnHold", 20)
    assert _count(await fab.history(lot), "JOB_LOST") == 1


async def test_a_second_adapter_takes_over_a_dead_ones_tools(fab: Fab) -> None:
    await fab.start_sim(DEP)
    first = fab.start_adapter("adapter-a", lease_ttl_s=2.0)
    await wait_for(lambda: _state_is(fab, DEP, "connected", "adapter-a"), "adapter-a", within=20)
    fab.start_adapter("adapter-b", lease_ttl_s=2.0)
    await asyncio.sleep(1.0)
    assert (await fab.connection(DEP))["owner"] == "adapter-a"  # leased: b keeps off
    await fab.kill_adapter(first)
    await wait_for(
        lambda: _state_is(fab, DEP, "connected", "adapter-b"), "adapter-b takes over", within=20
    )
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    assert (await fab.wait_job(job["job_order_id"], "completed"))["status"] == "completed"
    assert len(TOOLS) == 4


async def test_operator_abort_through_the_api(fab: Fab) -> None:
    await _ready(fab, DEP, speed=30)
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    await fab.wait_job(job["job_order_id"], "running")
    r = await fab.api.post(
        f"/api/v1/jobs/{job['job_order_id']}/commands", json={"command": "abort"}
    )
    assert r.status_code == 200, r.text
    done = await fab.wait_job(job["job_order_id"], "aborted", "completed")
    assert done["status"] == "aborted"
    assert (await fab.lot(lot))["state"] == "OnHold"


async def test_a_start_answered_with_a_timeout_is_reconciled_not_failed(fab: Fab) -> None:
    """BadTimeout on StoreAndStart says nothing about whether the tool started the job (here
    it did): the adapter must not fail the job and send the lot back while its wafers are in
    the chamber, but reconnect and learn from the tool what happened."""
    await _ready(fab, DEP, speed=60)
    await fab.sims[DEP].lose_replies(1)
    lot = await _at_dep_step(fab)
    job = await fab.request_job(lot, DEP)
    done = await fab.wait_job(job["job_order_id"], "completed", "aborted", "failed")
    assert done["status"] == "completed", done
    history = await fab.history(lot)
    assert _count(history, "TRACK_OUT") == 2
    assert _count(history, "JOB_FAILED") == 0
    assert (await fab.lot(lot))["step"]["sequence"] == 30
    assert list(fab.sims[DEP].tool.jobs) == [job["job_order_id"]]  # started once, not resent
