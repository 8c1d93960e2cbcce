"""Automatic dispatch on the shared seeded app: one cycle requests jobs, logs its decisions,
refuses cleanly when a lot was taken meanwhile; compliance and shadow reports via the API."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mes.dispatch import policy
from mes.dispatch import service as dispatch_service
from mes.dispatch.scheduler import Dispatcher, Mode, parse_fabs
from tests.api.test_dispatch_api import start

SINCE = "2026-01-01T00:00:00Z"


def dispatcher(db, clock, mode: Mode = Mode.AUTO) -> Dispatcher:
    return Dispatcher(db, clock, {"F1": mode}, owner="test-dispatcher", lease_ttl_s=60)


async def decisions(client, **params) -> list[dict]:
    response = await client.get("/api/v1/dispatch/decisions", params={"fab": "F1", **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_parse_fabs() -> None:
    assert parse_fabs(" F1, F2=advise ,") == {"F1": Mode.AUTO, "F2": Mode.ADVISE}
    assert parse_fabs(None) == {}


def test_choose_starts_waits_for_a_batch_worth_waiting_for() -> None:
    step = policy.StepSnapshot(1, 10, 7, "OX", "R", batch_min=3, batch_max=4)
    tool = policy.ToolSnapshot(1, "FUR", 1, 7, "SBY", max_lots=4, qualified=frozenset({"R"}))
    lots = [
        policy.LotSnapshot(i, f"L{i}", 1, "Waiting", 0, "normal", 25, step, queued_at=0.0)
        for i in (1, 2)
    ]
    listing = policy.rank_lots(tool, lots, policy.Situation(now=60.0))
    starts = policy.choose_starts(listing)
    assert starts.lots == ()
    assert starts.waiting
    assert "worth waiting" in starts.waiting
    # Waited long enough: the batch starts with every compatible lot.
    late = policy.rank_lots(tool, lots, policy.Situation(now=3 * 3600.0))
    assert [r.lot.code for r in policy.choose_starts(late).lots] == ["L1", "L2"]


async def test_cycle_requests_jobs_for_idle_tools_and_logs_decisions(client, db, clock):
    hot = await start(client, priority_class="hot")
    normal = await start(client)
    report = await dispatcher(db, clock).cycle("F1")
    assert report.leader
    assert not report.refused
    assert len(report.requested) == 2  # both wet benches were idle: one lot each
    for lot in (hot, normal):
        jobs = (await client.get(f"/api/v1/lots/{lot['code']}/jobs")).json()
        assert [(j["status"], j["requested_by"]) for j in jobs] == [("requested", "dispatcher")]
    logged = await decisions(client)
    assert {d["outcome"] for d in logged} == {"requested"}
    by_lot = {d["chosen_lot"]: d for d in logged}
    first = by_lot[hot["code"]]
    assert first["rule_set"] == "default"
    assert first["job_order_id"]
    assert first["top"][0]["lot"] == hot["code"]
    assert first["top"][0]["contributions"][0]["rule"] == "priority"
    # The hot lot went to the first tool decided; the second tool's list no longer had it.
    second = by_lot[normal["code"]]
    assert [r["lot"] for r in second["top"]] == [normal["code"]]
    one_tool = await decisions(client, tool=first["tool"])
    assert [d["id"] for d in one_tool] == [first["id"]]
    # Nothing is left to start: the next cycle requests nothing.
    again = await dispatcher(db, clock).cycle("F1")
    assert again.requested == []


async def test_a_wet_bench_with_a_job_not_yet_sent_is_offered_no_second_job(client, db, clock):
    # Three lots, two wet benches (room for 2 lots each, one job at a time). The first cycle
    # gives each bench a job; no adapter has picked them up yet (status requested), as at start
    # or while an adapter reconnects. The tool would refuse a second job as busy.
    lots = [await start(client) for _ in range(3)]
    first = await dispatcher(db, clock).cycle("F1")
    assert len(first.requested) == 2
    clock.advance(timedelta(seconds=5))
    second = await dispatcher(db, clock).cycle("F1")
    assert second.requested == []
    waiting = [
        lot["code"]
        for lot in lots
        if not (await client.get(f"/api/v1/lots/{lot['code']}/jobs")).json()
    ]
    assert len(waiting) == 1


async def test_a_lot_taken_meanwhile_is_refused_logged_and_not_retried(
    client, db, clock, monkeypatch
):
    lot = await start(client, priority_class="hot")
    real = dispatch_service.fab_snapshot

    async def operator_is_faster(session, fab, now):
        snap = await real(session, fab, now)
        taken = await client.post(f"/api/v1/lots/{lot['code']}/jobs", json={"tool": "F1-WETC02"})
        assert taken.status_code == 201, taken.text
        return snap

    monkeypatch.setattr(dispatch_service, "fab_snapshot", operator_is_faster)
    report = await dispatcher(db, clock).cycle("F1")
    assert report.requested == []
    assert [lot_code for lot_code, _ in report.refused] == [lot["code"]]
    (refused,) = [d for d in await decisions(client) if d["outcome"] == "refused"]
    assert refused["chosen_lot"] == lot["code"]
    assert refused["refusal_code"]
    jobs = (await client.get(f"/api/v1/lots/{lot['code']}/jobs")).json()
    assert len(jobs) == 1
    assert jobs[0]["requested_by"] != "dispatcher"


async def test_a_standby_does_nothing_while_the_leader_holds_the_lease(client, db, clock):
    await start(client)
    standby = Dispatcher(db, clock, {"F1": Mode.AUTO}, owner="other", lease_ttl_s=60)
    assert (await dispatcher(db, clock, Mode.ADVISE).cycle("F1")).leader
    assert not (await standby.cycle("F1")).leader
    clock.advance(timedelta(seconds=61))
    assert (await standby.cycle("F1")).leader


async def test_compliance_compares_manual_track_ins_with_the_logged_lists(client, db, clock):
    hot = await start(client, priority_class="hot")
    normal = await start(client)
    later = await start(client)
    report = await dispatcher(db, clock, Mode.ADVISE).cycle("F1")
    assert report.requested == []
    assert report.logged == 2
    logged = await decisions(client)
    assert {d["outcome"] for d in logged} == {"advisory"}
    tops = {d["tool"]: d["chosen_lot"] for d in logged}
    hot_tool = next(t for t, lot in tops.items() if lot == hot["code"])
    other_tool = next(t for t in tops if t != hot_tool)
    assert tops[other_tool] == normal["code"]
    clock.advance(timedelta(seconds=30))
    for lot, tool in ((hot, hot_tool), (later, other_tool)):
        done = await client.post(f"/api/v1/lots/{lot['code']}/jobs", json={"tool": tool})
        assert done.status_code == 201, done.text
    response = await client.get("/api/v1/dispatch/compliance", params={"fab": "F1", "since": SINCE})
    assert response.status_code == 200, response.text
    found = response.json()
    assert (found["track_ins"], found["with_list"], found["followed"]) == (2, 2, 1)
    assert found["compliance_rate"] == pytest.approx(0.5)
    (deviation,) = found["deviations"]
    assert (deviation["lot"], deviation["top_lot"], deviation["rank_of_lot"]) == (
        later["code"],
        normal["code"],
        2,
    )
    # Lists older than max_age do not count.
    stale = await client.get(
        "/api/v1/dispatch/compliance", params={"fab": "F1", "since": SINCE, "max_age_s": 10}
    )
    assert (stale.json()["with_list"], stale.json()["without_list"]) == (0, 2)


async def test_shadow_rule_set_is_logged_never_run_and_reported(client, client_as, db, clock):
    normal = await start(client)
    hot = await start(client, priority_class="hot")
    shadow = await client_as("t-engineer").post(
        "/api/v1/dispatch/rule-sets",
        json={
            "fab": "F1",
            "tool_group": "WET_CLEAN",
            "rules": [{"rule": "fifo", "weight": 1}],
            "shadow": True,
            "note": "try plain FIFO",
        },
    )
    assert shadow.status_code == 201, shadow.text
    assert (shadow.json()["scope"], shadow.json()["shadow"]) == ("F1/group/WET_CLEAN#shadow", True)
    assert shadow.json()["tool_group"] == "WET_CLEAN"
    # Production is unchanged.
    listing = (await client.get("/api/v1/dispatch/tools/F1-WETC01/list")).json()
    assert listing["rule_set"] == "default"

    report = await dispatcher(db, clock).cycle("F1")
    assert len(report.requested) == 2
    logged = await decisions(client)
    shadows = [d for d in logged if d["outcome"] == "shadow"]
    assert len(shadows) == 2
    assert all(d["job_order_id"] is None for d in shadows)
    assert {d["rule_set"] for d in shadows} == {"F1/group/WET_CLEAN#shadow"}
    response = await client.get(
        "/api/v1/dispatch/shadow-report", params={"fab": "F1", "since": SINCE}
    )
    assert response.status_code == 200, response.text
    found = response.json()
    # First tool: production takes the hot lot, FIFO the older normal lot; second tool: both
    # have only the normal lot left.
    assert (found["compared"], found["agreed"]) == (2, 1)
    assert found["agreement_rate"] == pytest.approx(0.5)
    (diff,) = found["differences"]
    assert diff["production"]["lot"] == hot["code"]
    assert diff["shadow"]["lot"] == normal["code"]
    assert diff["production"]["score"] > diff["shadow"]["score"]
    assert diff["shadow"]["contributions"][0]["rule"] == "fifo"


async def test_a_standby_tries_again_when_the_leaders_lease_runs_out_not_a_cycle_later(
    client, db, clock
):
    await start(client)
    leader = Dispatcher(db, clock, {"F1": Mode.ADVISE}, owner="a", interval_s=300, lease_ttl_s=60)
    standby = Dispatcher(db, clock, {"F1": Mode.AUTO}, owner="b", interval_s=300, lease_ttl_s=60)
    assert (await leader.cycle("F1")).leader
    assert leader.next_wait_s() == 300
    assert not (await standby.cycle("F1")).leader
    assert standby.next_wait_s() == pytest.approx(60.05)
    clock.advance(timedelta(seconds=59))
    assert not (await standby.cycle("F1")).leader
    assert standby.next_wait_s() == pytest.approx(1.05)
    clock.advance(timedelta(seconds=1.05))
    assert (await standby.cycle("F1")).leader
    assert standby.next_wait_s() == 300


async def test_a_tool_that_refuses_is_paused_with_a_growing_back_off(client, db, clock):
    """The tool refuses the job (its adapter reports it failed): the dispatcher does not send
    the lot straight back every cycle, but pauses that tool per refusal code, says so once in
    the decision log, and tries again when the pause is over."""
    from sqlalchemy import select

    from mes.audit.context import AuditContext, bind
    from mes.db.transaction import unit_of_work
    from mes.equipment.models import Equipment
    from mes.opcua import service as opcua_service
    from mes.opcua.service import ToolRef

    tool = (await client.get("/api/v1/equipment/F1-WETC02")).json()
    down = await client.post(
        "/api/v1/equipment/F1-WETC02/state",
        json={"version": tool["version"], "state": "UDT", "reason": "only WETC01 here"},
    )
    assert down.status_code == 200, down.text
    lot = await start(client, priority_class="hot")
    d = Dispatcher(
        db,
        clock,
        {"F1": Mode.AUTO},
        owner="test-dispatcher",
        lease_ttl_s=600,
        backoff_base_s=30,
    )
    first = await d.cycle("F1")
    (job_id,) = first.requested
    async with unit_of_work(db) as session:
        bind(
            session,
            AuditContext(
                actor="F1-WETC01", role="equipment", operation="opcua.job_refused", at=clock.now()
            ),
        )
        wet = (
            await session.execute(
                select(Equipment.id, Equipment.fab_id).where(Equipment.code == "F1-WETC01")
            )
        ).one()
        ref = ToolRef(id=wet.id, code="F1-WETC01", fab_id=wet.fab_id, endpoint="-")
        await opcua_service.fail_job(
            session, ref, job_id, "recipe.checksum_mismatch: tool reports 00ff", clock=clock
        )
    assert (await client.get(f"/api/v1/lots/{lot['code']}")).json()["state"] == "Waiting"

    clock.advance(timedelta(seconds=5))
    assert (await d.cycle("F1")).requested == []
    clock.advance(timedelta(seconds=5))
    assert (await d.cycle("F1")).requested == []
    paused = [x for x in await decisions(client) if x["outcome"] == "backoff"]
    assert [(x["tool"], x["refusal_code"]) for x in paused] == [
        ("F1-WETC01", "recipe.checksum_mismatch")  # once per pause, not once per cycle
    ]
    clock.advance(timedelta(seconds=25))  # 35 s after the refusal: the pause is over
    again = await d.cycle("F1")
    assert len(again.requested) == 1
