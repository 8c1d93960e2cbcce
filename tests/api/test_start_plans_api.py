"""Start plans through the API, and the releaser on the shared seeded app with a fake clock:
the lots it releases, their priority and due date, the catch-up cap, the WIP cap, refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from mes.lots.models import Lot
from mes.planning.models import StartPlan
from mes.planning.releaser import Releaser
from mes.seed import loader
from tests.api.problems import assert_problem
from tests.conftest import NOW

PLAN = {
    "code": "T-LOGIC",
    "fab": "F1",
    "product": "LOGIC28",
    "rate": 6,
    "rate_per": "hour",
    "wafer_count": 10,
    "due_rule": "x_factor",
    "due_value": 2.5,
    "priority_mix": {"normal": 3, "hot": 1},
    "catch_up_max": 2,
    "starts_at": NOW.isoformat(),
}


def raw_process_s(route: str) -> float:
    """A route's raw process time from the example data: step times, weighted by sampling."""
    (found,) = [r for r in loader.read_example().routes if r.code == route]
    return sum(s.process_time_s * s.sampling_rate for s in found.steps)


@pytest.fixture
async def only_test_plans(session) -> None:
    """The example's own plans are active too; keep the releaser to the test's plans."""
    await session.execute(update(StartPlan).values(active=False))
    await session.flush()


async def create(client, **changes) -> dict:
    response = await client.post("/api/v1/start-plans", json={**PLAN, **changes})
    assert response.status_code == 201, response.text
    return response.json()


async def releases(client, plan: str = "T-LOGIC") -> list[dict]:
    response = await client.get(f"/api/v1/start-plans/{plan}/releases", params={"limit": 500})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def releaser(db, clock) -> Releaser:
    return Releaser(db, clock, owner="test-releaser", lease_ttl_s=600)


async def test_the_example_seeds_active_plans_for_both_fabs(client) -> None:
    page = (await client.get("/api/v1/start-plans", params={"active": True})).json()
    assert {p["fab"] for p in page["items"]} == {"F1", "F2"}
    assert page["total"] == 6
    f2 = (await client.get("/api/v1/start-plans", params={"fab": "F2"})).json()["items"]
    assert [p["code"] for p in f2] == ["F2-CLEANMON", "F2-MONITOR"]


async def test_create_read_change_and_audit_a_plan(client) -> None:
    made = await create(client)
    assert made["interval_s"] == 600
    assert made["version"] == 1
    assert made["released"] == 0
    assert made["next_release_at"] == made["starts_at"]
    assert made["created_by"] == "tester"
    assert (await client.get("/api/v1/start-plans/T-LOGIC")).json() == made

    changed = await client.patch(
        "/api/v1/start-plans/T-LOGIC", json={"version": 1, "rate": 2, "rate_per": "day"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["interval_s"] == 43_200
    assert changed.json()["version"] == 2
    stale = await client.patch("/api/v1/start-plans/T-LOGIC", json={"version": 1, "rate": 3})
    assert assert_problem(stale, 409, "start_plan.stale_version")["current_version"] == 2

    trail = await client.get(
        "/api/v1/audit", params={"target_type": "start_plan", "target_id": "T-LOGIC"}
    )
    actions = [(e["action"], e["actor"], e["operation"]) for e in trail.json()["items"]]
    assert actions == [
        ("update", "tester", "planning.update_plan"),
        ("insert", "tester", "planning.create_plan"),
    ]
    assert trail.json()["items"][0]["after"]["rate"] == 2


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"product": "NOPE"}, 404, "product.not_found"),
        ({"fab": "F9"}, 404, "fab.not_found"),
        ({"route": "R-ANALOG"}, 422, "start_plan.route_unknown"),
        ({"route": "R-NONE"}, 422, "start_plan.route_unknown"),
        ({"rate": 2, "rate_per": "second"}, 422, "request.invalid"),
        ({"rate": 7200}, 422, "start_plan.rate"),
        ({"rate": 0}, 422, "request.invalid"),
        ({"rate": 5e-324}, 422, "request.invalid"),  # found by the fuzzer: was a 500
        ({"priority_mix": {"urgent": 1}}, 422, "start_plan.priority_mix"),
        ({"priority_mix": {"normal": 0}}, 422, "start_plan.priority_mix"),
        ({"due_value": 0.5}, 422, "start_plan.due_rule"),
        ({"wafer_count": 26}, 422, "request.invalid"),
        ({"code": "F1-LOGIC28"}, 409, "start_plan.duplicate"),
    ],
)
async def test_bad_plans_are_refused_with_a_problem(client, changes, status, code) -> None:
    assert_problem(await client.post("/api/v1/start-plans", json={**PLAN, **changes}), status, code)
    assert (await client.get("/api/v1/start-plans/T-LOGIC")).status_code == 404


async def test_a_refused_change_changes_nothing(client) -> None:
    await create(client)
    bad = await client.patch(
        "/api/v1/start-plans/T-LOGIC", json={"version": 1, "wafer_count": 5, "rate": 99_999}
    )
    assert_problem(bad, 422, "start_plan.rate")
    kept = (await client.get("/api/v1/start-plans/T-LOGIC")).json()
    assert (kept["wafer_count"], kept["rate"], kept["version"]) == (10, 6, 1)
    missing = await client.patch("/api/v1/start-plans/NOPE", json={"version": 1})
    assert_problem(missing, 404, "start_plan.not_found")


async def test_only_planners_change_plans(client, client_as) -> None:
    async with client_as("t-operator") as operator:
        assert_problem(await operator.post("/api/v1/start-plans", json=PLAN), 403, "auth.forbidden")
        assert (await operator.get("/api/v1/start-plans")).status_code == 200
    async with client_as("t-supervisor") as supervisor:
        assert (await supervisor.post("/api/v1/start-plans", json=PLAN)).status_code == 201


async def test_the_releaser_releases_exactly_the_due_lots(
    client, db, clock, only_test_plans
) -> None:
    await create(client)
    worker = releaser(db, clock)
    first = await worker.cycle()
    assert len(first.released) == 1
    assert (await worker.cycle()).released == []  # nothing new at the same time

    clock.advance(timedelta(minutes=25))  # slots at +10 and +20 min are due
    assert len((await worker.cycle()).released) == 2
    clock.advance(timedelta(minutes=4))
    assert (await worker.cycle()).released == []

    rows = await releases(client)
    assert [r["sequence"] for r in rows] == [3, 2, 1]
    assert [r["slot_at"] for r in rows] == [
        (NOW + timedelta(minutes=m)).isoformat().replace("+00:00", "Z") for m in (20, 10, 0)
    ]
    assert all(r["skipped_before"] == 0 and r["owner"] == "test-releaser" for r in rows)
    lot = (await client.get(f"/api/v1/lots/{rows[-1]['lot']}")).json()
    assert (lot["product"], lot["fab"], lot["wafer_count"], lot["state"]) == (
        "LOGIC28",
        "F1",
        10,
        "Waiting",
    )
    assert lot["priority_class"] == rows[-1]["priority_class"]
    due = NOW + timedelta(seconds=2.5 * raw_process_s("R-LOGIC28"))
    assert lot["due_at"] == due.isoformat().replace("+00:00", "Z")
    history = (await client.get(f"/api/v1/lots/{rows[-1]['lot']}/history")).json()["items"]
    assert (history[0]["event_type"], history[0]["actor"]) == ("START", "releaser")
    plan = (await client.get("/api/v1/start-plans/T-LOGIC")).json()
    assert (plan["released"], plan["last_sequence"]) == (3, 3)
    assert plan["next_release_at"] == (NOW + timedelta(minutes=30)).isoformat().replace(
        "+00:00", "Z"
    )


async def test_after_downtime_the_releaser_catches_up_no_more_than_the_cap(
    client, db, clock, only_test_plans
) -> None:
    await create(client)
    worker = releaser(db, clock)
    await worker.cycle()
    clock.advance(timedelta(hours=5))  # 30 slots missed
    caught_up = await worker.cycle()
    assert len(caught_up.released) == 2
    rows = await releases(client)
    assert [(r["sequence"], r["skipped_before"]) for r in rows] == [(31, 0), (30, 28), (1, 0)]


async def test_the_wip_cap_waits_for_lots_to_leave_the_line(
    client, session, db, clock, only_test_plans
) -> None:
    await create(client, max_wip=2, catch_up_max=5)
    worker = releaser(db, clock)
    clock.advance(timedelta(minutes=35))  # four slots due, room for two
    assert len((await worker.cycle()).released) == 2
    clock.advance(timedelta(minutes=10))
    assert (await worker.cycle()).released == []
    done = (await releases(client))[-1]["lot"]
    await session.execute(
        update(Lot).where(Lot.code == done).values(state="Completed", ended_at=clock.now())
    )
    await session.flush()
    assert len((await worker.cycle()).released) == 1
    assert [r["sequence"] for r in await releases(client)] == [3, 2, 1]


async def test_an_inactive_plan_releases_nothing_and_a_refusal_releases_nothing(
    client, db, clock, only_test_plans
) -> None:
    await create(client, active=False)
    worker = releaser(db, clock)
    assert (await worker.cycle()).released == []
    # A product without an active route: the plan is refused every cycle, nothing half-done.
    await client.post("/api/v1/products", json={"code": "NEWP", "name": "new"})
    await create(client, code="T-NEW", product="NEWP")
    report = await worker.cycle()
    assert report.released == []
    assert [code for _, code in report.refused] == ["lot.no_active_route"]
    assert await releases(client, "T-NEW") == []
    assert (await client.get("/api/v1/lots", params={"product": "NEWP"})).json()["total"] == 0


async def test_a_plan_that_released_lots_is_deactivated_not_deleted(
    client, db, clock, only_test_plans
) -> None:
    await create(client)
    await create(client, code="T-UNUSED", active=False)
    await releaser(db, clock).cycle()
    assert_problem(
        await client.delete("/api/v1/start-plans/T-LOGIC"), 409, "start_plan.has_releases"
    )
    assert (await client.delete("/api/v1/start-plans/T-UNUSED")).status_code == 204
    assert (await client.get("/api/v1/start-plans/T-UNUSED")).status_code == 404
    off = await client.patch("/api/v1/start-plans/T-LOGIC", json={"version": 1, "active": False})
    assert off.json()["next_release_at"] is None
