"""Process engineering through the HTTP API: route validation, signed and scheduled
activation, and the diff between route versions.

Every test runs in its own rolled-back transaction (see tests/conftest.py), against the
example fab: LOGIC28 lots start at step 10 PAD_OX_CLEAN (WET_CLEAN, logical recipe
WETC_PRECLEAN), which every wet bench of both fabs is qualified for. Shared helpers:
``tests/api/process_engineering.py``.
"""

from __future__ import annotations

from datetime import timedelta

from tests.api.problems import assert_problem
from tests.api.process_engineering import (
    ENGINEER_B,
    NOW,
    SIGNED,
    SIGNED_WITH_PASSWORD,
    approved_recipe,
    new_route,
    start_lot,
    step,
    track_in,
)

# --- validation and activation ----------------------------------------------------------------


async def test_validation_lists_what_stops_activation(client, client_as):
    # A fresh recipe, approved, but qualified nowhere; and a step with no recipe yet.
    async with client_as(ENGINEER_B) as other:
        await approved_recipe(client, other, "WETC_UNQUAL")
    steps = [step(10, "CLEAN", recipe="WETC_UNQUAL"), step(20, "DRY", recipe=None)]
    url = await new_route(client, "R-VAL", steps)
    response = await client.get(f"{url}/validation")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "route": "R-VAL",
        "version": 1,
        "activatable": False,
        "problems": [
            {"sequence": 20, "msg": "the step has no recipe"},
            {
                "sequence": 10,
                "msg": "no tool of WET_CLEAN in any fab is qualified for WETC_UNQUAL",
            },
        ],
    }
    refused = await client.post(f"{url}/activate", json=SIGNED)
    problem = assert_problem(refused, 422, "route.invalid")
    assert sorted(problem["errors"], key=lambda e: e["sequence"]) == [
        {"sequence": 10, "msg": "no tool of WET_CLEAN in any fab is qualified for WETC_UNQUAL"},
        {"sequence": 20, "msg": "the step has no recipe"},
    ]
    assert (await client.get(url)).json()["status"] == "draft"

    # Fix both and the same version validates.
    await client.post(
        "/api/v1/recipes/WETC_UNQUAL/versions/1/qualifications", json={"tool": "F2-WETC01"}
    )
    await client.put(f"{url}/steps/20", json=step(20, "DRY", recipe="WETC_STRIP"))
    fixed = (await client.get(f"{url}/validation")).json()
    assert (fixed["activatable"], fixed["problems"]) == (True, [])
    assert_problem(
        await client.get("/api/v1/routes/R-VAL/versions/4/validation"),
        404,
        "route.version_not_found",
    )


async def test_activation_needs_an_e_signature(client, clock):
    url = await new_route(client, "R-SIGN")
    assert_problem(await client.post(f"{url}/activate", json={}), 422, "request.invalid")
    assert_problem(
        await client.post(f"{url}/activate", json={"signature": {"reason": ""}}),
        422,
        "request.invalid",
    )
    clock.advance(timedelta(minutes=10))  # the login is no longer recent
    assert_problem(
        await client.post(f"{url}/activate", json=SIGNED), 401, "auth.signature_required"
    )
    wrong = {"signature": {"reason": "release", "password": "not my password"}}
    assert_problem(await client.post(f"{url}/activate", json=wrong), 401, "auth.signature_invalid")
    assert (await client.get(url)).json()["status"] == "draft"
    response = await client.post(f"{url}/activate", json=SIGNED_WITH_PASSWORD)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["in_force"]) == ("active", True)


async def test_effective_time_may_not_lie_far_in_the_past(client, clock):
    url = await new_route(client, "R-PAST")
    long_ago = (clock.now() - timedelta(minutes=6)).isoformat()
    problem = assert_problem(
        await client.post(f"{url}/activate", json={**SIGNED, "effective_at": long_ago}),
        422,
        "route.effective_time_past",
    )
    assert "backdated" in problem["detail"]
    naive = await client.post(
        f"{url}/activate", json={**SIGNED, "effective_at": "2026-01-05T09:00:00"}
    )
    assert_problem(naive, 422, "request.invalid")
    # A few minutes of clock skew mean "now".
    just_past = (clock.now() - timedelta(minutes=4)).isoformat()
    response = await client.post(f"{url}/activate", json={**SIGNED, "effective_at": just_past})
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["effective_at"]) == ("active", NOW)


async def test_scheduled_activation_takes_effect_when_the_clock_passes(client, clock):
    added = await client.post("/api/v1/routes/R-TESTWF/versions", json={"copy_from": 1})
    assert added.status_code == 201, added.text
    url = "/api/v1/routes/R-TESTWF/versions/2"
    later = "2026-01-05T10:00:00Z"
    response = await client.post(f"{url}/activate", json={**SIGNED, "effective_at": later})
    assert response.status_code == 200, response.text
    scheduled = response.json()
    assert (scheduled["status"], scheduled["in_force"], scheduled["effective_at"]) == (
        "pending",
        False,
        later,
    )
    assert (scheduled["activated_at"], scheduled["activated_by"]) == (NOW, "tester")
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert route["active_version"] == 1
    assert [(v["version"], v["status"], v["in_force"]) for v in route["versions"]] == [
        (1, "active", True),
        (2, "pending", False),
    ]

    # Nothing else may be scheduled meanwhile, and the pending version is no draft.
    await client.post("/api/v1/routes/R-TESTWF/versions", json={"copy_from": 1})
    assert_problem(
        await client.post("/api/v1/routes/R-TESTWF/versions/3/activate", json=SIGNED),
        409,
        "route.activation_pending",
    )
    assert_problem(
        await client.post(f"{url}/activate", json=SIGNED), 409, "route.version_not_draft"
    )
    assert_problem(await client.post(f"{url}/steps", json=step(15)), 409, "route.version_not_draft")

    before = await start_lot(client, "MONITOR")
    assert (before["route"], before["route_version"]) == ("R-TESTWF", 1)

    clock.advance(timedelta(hours=2) - timedelta(seconds=1))
    assert (await client.get("/api/v1/routes/R-TESTWF")).json()["active_version"] == 1
    clock.advance(timedelta(seconds=1))
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert route["active_version"] == 2
    assert [v["in_force"] for v in route["versions"]] == [False, True, False]
    assert (await client.get(url)).json()["in_force"] is True

    after = await start_lot(client, "MONITOR")
    assert after["route_version"] == 2
    # Starting a lot recorded what the clock had decided.
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert [(v["version"], v["status"]) for v in route["versions"]] == [
        (1, "obsolete"),
        (2, "active"),
        (3, "draft"),
    ]
    # The lot started before keeps its version and still runs.
    kept = (await client.get(f"/api/v1/lots/{before['code']}")).json()
    assert kept["route_version"] == 1
    tin = await track_in(client, before["code"], "F1-WETC01")
    assert tin.status_code == 200, tin.text
    assert tin.json()["lot"]["route_version"] == 1
    # With v2 in force the next draft may be activated (password: the login is old now).
    response = await client.post(
        "/api/v1/routes/R-TESTWF/versions/3/activate", json=SIGNED_WITH_PASSWORD
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"


async def test_a_pending_version_due_but_not_yet_recorded_is_retired_by_the_next_activation(
    client, clock
):
    for _ in range(2):
        await client.post("/api/v1/routes/R-TESTWF/versions", json={"copy_from": 1})
    soon = "2026-01-05T08:30:00Z"
    response = await client.post(
        "/api/v1/routes/R-TESTWF/versions/2/activate", json={**SIGNED, "effective_at": soon}
    )
    assert response.json()["status"] == "pending"
    clock.advance(timedelta(hours=1))
    response = await client.post(
        "/api/v1/routes/R-TESTWF/versions/3/activate", json=SIGNED_WITH_PASSWORD
    )
    assert response.status_code == 200, response.text
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert [(v["version"], v["status"], v["in_force"]) for v in route["versions"]] == [
        (1, "obsolete", False),
        (2, "obsolete", False),
        (3, "active", True),
    ]


# --- route diff -------------------------------------------------------------------------------


async def test_route_diff_between_versions(client):
    await new_route(client, "R-DIFF")
    added = await client.post("/api/v1/routes/R-DIFF/versions", json={"copy_from": 1})
    assert added.status_code == 201
    v2 = "/api/v1/routes/R-DIFF/versions/2"
    await client.post(f"{v2}/renumber", json={"start": 100, "increment": 100})
    await client.put(
        f"{v2}/steps/300",
        json=step(
            300, "MEASURE", "METRO_THK", "METK_MEASURE", rework_to_sequence=200, sampling_rate=0.5
        ),
    )
    await client.post(f"{v2}/steps", json=step(150, "ANNEAL", "FURN_ANNEAL", "FUAN_ACTIVATE"))

    response = await client.get("/api/v1/routes/R-DIFF/versions/1/diff/2")
    assert response.status_code == 200, response.text
    diff = response.json()
    assert (diff["route"], diff["before"], diff["after"], diff["identical"]) == (
        "R-DIFF",
        1,
        2,
        False,
    )
    assert diff["differences"] == [
        {
            "kind": "changed",
            "operation": "CLEAN",
            "before_sequence": 10,
            "after_sequence": 100,
            "changes": [
                {"field": "qtime_to_sequence", "before": 20, "after": 200},
                {"field": "sequence", "before": 10, "after": 100},
            ],
        },
        {
            "kind": "added",
            "operation": "ANNEAL",
            "before_sequence": None,
            "after_sequence": 150,
            "changes": [],
        },
        {
            "kind": "changed",
            "operation": "OXIDE",
            "before_sequence": 20,
            "after_sequence": 200,
            "changes": [{"field": "sequence", "before": 20, "after": 200}],
        },
        {
            "kind": "changed",
            "operation": "MEASURE",
            "before_sequence": 30,
            "after_sequence": 300,
            "changes": [
                {"field": "rework_to_sequence", "before": 20, "after": 200},
                {"field": "sampling_rate", "before": 1.0, "after": 0.5},
                {"field": "sequence", "before": 30, "after": 300},
            ],
        },
    ]
    back = (await client.get("/api/v1/routes/R-DIFF/versions/2/diff/1")).json()
    assert [(d["kind"], d["operation"]) for d in back["differences"]] == [
        ("removed", "ANNEAL"),
        ("changed", "CLEAN"),
        ("changed", "OXIDE"),
        ("changed", "MEASURE"),
    ]
    same = (await client.get("/api/v1/routes/R-DIFF/versions/2/diff/2")).json()
    assert (same["identical"], same["differences"]) == (True, [])
    assert_problem(
        await client.get("/api/v1/routes/R-DIFF/versions/1/diff/7"), 404, "route.version_not_found"
    )
    assert_problem(
        await client.get("/api/v1/routes/R-NOPE/versions/1/diff/2"), 404, "route.not_found"
    )


async def test_route_diff_shows_a_moved_step(client):
    url = await new_route(client, "R-MOVE", [step(10, "A"), step(20, "B"), step(30, "C")])
    await client.post("/api/v1/routes/R-MOVE/versions", json={"copy_from": 1})
    response = await client.post(
        "/api/v1/routes/R-MOVE/versions/2/renumber", json={"order": [30, 10, 20]}
    )
    assert response.status_code == 200, response.text
    assert [s["operation"] for s in response.json()["steps"]] == ["C", "A", "B"]
    diff = (await client.get("/api/v1/routes/R-MOVE/versions/1/diff/2")).json()
    assert [
        (d["kind"], d["operation"], d["before_sequence"], d["after_sequence"])
        for d in diff["differences"]
    ] == [
        ("moved", "C", 30, 10),
        ("changed", "A", 10, 20),
        ("changed", "B", 20, 30),
    ]
    assert url.endswith("/1")


async def test_a_first_version_scheduled_for_later_starts_no_lot_before_its_time(client, clock):
    assert (
        await client.post("/api/v1/products", json={"code": "SCHED1", "name": "Scheduled"})
    ).status_code == 201
    url = await new_route(client, "R-SCHED1", product="SCHED1")
    response = await client.post(
        f"{url}/activate", json={**SIGNED, "effective_at": "2026-01-05T09:00:00Z"}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["in_force"]) == ("pending", False)
    assert (await client.get("/api/v1/routes/R-SCHED1")).json()["active_version"] is None
    early = await client.post("/api/v1/lots", json={"product": "SCHED1", "fab": "F1"})
    assert_problem(early, 409, "lot.no_active_route")

    clock.advance(timedelta(hours=1))
    lot = await start_lot(client, "SCHED1")
    assert (lot["route"], lot["route_version"], lot["step"]["operation"]) == (
        "R-SCHED1",
        1,
        "CLEAN",
    )
    assert (await client.get(url)).json()["status"] == "active"
