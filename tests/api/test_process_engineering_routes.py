"""Process engineering through the HTTP API: editing draft route versions (new drafts,
inserting, updating and removing steps) and renumbering their steps.

Every test runs in its own rolled-back transaction (see tests/conftest.py), against the
example fab: LOGIC28 lots start at step 10 PAD_OX_CLEAN (WET_CLEAN, logical recipe
WETC_PRECLEAN), which every wet bench of both fabs is qualified for. Shared helpers:
``tests/api/process_engineering.py``.
"""

from __future__ import annotations

from tests.api.problems import assert_problem
from tests.api.process_engineering import SIGNED, STEPS, new_route, sequences, step

# --- draft editing ----------------------------------------------------------------------------


async def test_a_new_draft_copies_a_version_or_takes_steps(client):
    response = await client.post("/api/v1/routes/R-TESTWF/versions", json={"copy_from": 1})
    assert response.status_code == 201, response.text
    copy = response.json()
    original = (await client.get("/api/v1/routes/R-TESTWF/versions/1")).json()
    assert (copy["version"], copy["status"], copy["in_force"]) == (2, "draft", False)
    assert copy["steps"] == original["steps"]
    diff = (await client.get("/api/v1/routes/R-TESTWF/versions/1/diff/2")).json()
    assert (diff["identical"], diff["differences"]) == (True, [])

    both = await client.post(
        "/api/v1/routes/R-TESTWF/versions", json={"copy_from": 1, "steps": STEPS}
    )
    assert_problem(both, 422, "request.invalid")
    assert_problem(
        await client.post("/api/v1/routes/R-TESTWF/versions", json={}), 422, "request.invalid"
    )
    assert_problem(
        await client.post("/api/v1/routes/R-TESTWF/versions", json={"copy_from": 9}),
        404,
        "route.version_not_found",
    )
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert [(v["version"], v["status"]) for v in route["versions"]] == [
        (1, "active"),
        (2, "draft"),
    ]


async def test_insert_a_step_into_a_draft(client):
    url = await new_route(client, "R-INS")
    response = await client.post(f"{url}/steps", json=step(15, "RINSE", recipe="WETC_STRIP"))
    assert response.status_code == 201, response.text
    version = response.json()
    assert sequences(version) == [10, 15, 20, 30]
    assert version["steps"][1]["operation"] == "RINSE"
    assert version["steps"][1]["recipe"] == "WETC_STRIP"
    # The Q-time window 10 -> 20 now spans the new step; nothing else moved.
    assert version["steps"][0]["qtime_to_sequence"] == 20

    taken = await client.post(f"{url}/steps", json=step(15, "AGAIN"))
    assert_problem(taken, 409, "route.step_exists")
    unsound = await client.post(f"{url}/steps", json=step(40, rework_to_sequence=35))
    problem = assert_problem(unsound, 422, "route.invalid_steps")
    assert problem["errors"] == [{"sequence": 40, "msg": "rework step 35 does not exist"}]
    assert_problem(
        await client.post(f"{url}/steps", json=step(40, tool_group="NO_GROUP")),
        422,
        "route.invalid_steps",
    )
    assert sequences((await client.get(url)).json()) == [10, 15, 20, 30]


async def test_update_a_step_of_a_draft(client):
    url = await new_route(client, "R-UPD")
    changed = step(30, "MEASURE", "METRO_THK", None, description="recipe to be decided")
    response = await client.put(f"{url}/steps/30", json=changed)
    assert response.status_code == 200, response.text
    s30 = response.json()["steps"][2]
    assert (s30["recipe"], s30["description"], s30["rework_to_sequence"]) == (
        None,
        "recipe to be decided",
        None,
    )
    # The other steps are untouched.
    assert response.json()["steps"][:2] == (await client.get(url)).json()["steps"][:2]

    moved = await client.put(f"{url}/steps/30", json=step(35, "MEASURE", "METRO_THK"))
    assert_problem(moved, 422, "route.sequence_changed")
    assert_problem(await client.put(f"{url}/steps/99", json=step(99)), 404, "route.step_not_found")
    # An edit that breaks the structure is refused as a whole.
    backwards = await client.put(
        f"{url}/steps/20", json=step(20, "OXIDE", "FURN_OX", "FUOX_PADOX", rework_to_sequence=30)
    )
    assert_problem(backwards, 422, "route.invalid_steps")
    assert (await client.get(url)).json()["steps"][1]["rework_to_sequence"] is None


async def test_remove_a_step_from_a_draft(client):
    url = await new_route(client, "R-DEL")
    # 20 ends the Q-time window of 10 and is the rework target of 30.
    referenced = await client.delete(f"{url}/steps/20")
    problem = assert_problem(referenced, 409, "route.step_referenced")
    assert problem["errors"] == [
        {"sequence": 10, "msg": "step 10 ends a Q-time window there"},
        {"sequence": 30, "msg": "step 30 reworks back to it"},
    ]
    assert_problem(await client.delete(f"{url}/steps/25"), 404, "route.step_not_found")

    response = await client.delete(f"{url}/steps/30")
    assert response.status_code == 200, response.text
    assert sequences(response.json()) == [10, 20]
    assert sequences((await client.delete(f"{url}/steps/10")).json()) == [20]
    assert_problem(await client.delete(f"{url}/steps/20"), 409, "route.last_step")
    assert sequences((await client.get(url)).json()) == [20]


async def test_only_drafts_are_edited(client):
    url = "/api/v1/routes/R-TESTWF/versions/1"
    before = (await client.get(url)).json()
    for response in (
        await client.post(f"{url}/steps", json=step(15)),
        await client.put(f"{url}/steps/10", json=step(10)),
        await client.delete(f"{url}/steps/10"),
        await client.post(f"{url}/renumber", json={}),
    ):
        assert_problem(response, 409, "route.version_not_draft")
    assert (await client.get(url)).json() == before


async def test_route_editing_needs_the_engineer_role(client, client_as):
    url = await new_route(client, "R-ROLE")
    async with client_as("t-operator") as operator:
        for response in (
            await operator.post(f"{url}/steps", json=step(15)),
            await operator.delete(f"{url}/steps/30"),
            await operator.post(f"{url}/renumber", json={}),
            await operator.post(f"{url}/activate", json=SIGNED),
        ):
            assert_problem(response, 403, "auth.forbidden")
    assert (await client.get(url)).json()["status"] == "draft"


# --- renumbering ------------------------------------------------------------------------------


async def test_renumber_in_a_new_order_references_follow(client):
    # 40 measures and reworks back to 20; put the oxide first, the clean second.
    steps = [*STEPS, step(40, "FINAL", "METRO_THK", "METK_MEASURE", rework_to_sequence=10)]
    steps[0] = step(10, "CLEAN")  # no Q-time, so that the new order stays sound
    url = await new_route(client, "R-REN", steps)
    response = await client.post(
        f"{url}/renumber", json={"order": [20, 10, 30, 40], "start": 100, "increment": 5}
    )
    assert response.status_code == 200, response.text
    got = [
        (s["sequence"], s["operation"], s["rework_to_sequence"]) for s in response.json()["steps"]
    ]
    assert got == [
        (100, "OXIDE", None),
        (105, "CLEAN", None),
        (110, "MEASURE", 100),  # reworked to 20 (OXIDE), now 100
        (115, "FINAL", 105),  # reworked to 10 (CLEAN), now 105
    ]


async def test_renumber_keeps_the_order_by_default(client):
    url = await new_route(client, "R-REN2")
    response = await client.post(f"{url}/renumber", json={"start": 1, "increment": 1})
    assert response.status_code == 200, response.text
    s1, s2, s3 = response.json()["steps"]
    assert (s1["sequence"], s1["qtime_to_sequence"]) == (1, 2)
    assert (s2["sequence"], s2["operation"]) == (2, "OXIDE")
    assert (s3["sequence"], s3["rework_to_sequence"]) == (3, 2)
    default = await client.post(f"{url}/renumber", json={})
    assert sequences(default.json()) == [10, 20, 30]


async def test_renumber_refusals_leave_the_draft_as_it_was(client):
    url = await new_route(client, "R-REN3")
    for order, detail in (
        ([10, 20], "missing [30]"),
        ([10, 20, 30, 40], "unknown [40]"),
        ([10, 20, 20, 30], "repeated [20]"),
    ):
        problem = assert_problem(
            await client.post(f"{url}/renumber", json={"order": order}), 422, "route.invalid_order"
        )
        assert detail in problem["detail"]
    # Moving the measurement (which reworks to 20) before 20 breaks the structure.
    problem = assert_problem(
        await client.post(f"{url}/renumber", json={"order": [30, 10, 20]}),
        422,
        "route.invalid_steps",
    )
    assert {"sequence": 10, "msg": "rework must return to an earlier step"} in problem["errors"]
    assert_problem(
        await client.post(f"{url}/renumber", json={"increment": 0}), 422, "request.invalid"
    )
    assert sequences((await client.get(url)).json()) == [10, 20, 30]
    assert (await client.get(url)).json()["steps"][2]["rework_to_sequence"] == 20


async def test_renumbering_beyond_the_largest_sequence_is_refused(client):
    url = await new_route(client, "R-REN4")
    # 99 990, 100 000, 100 010: the last is above what a step may carry (StepIn: <= 100 000).
    response = await client.post(f"{url}/renumber", json={"start": 99_990, "increment": 10})
    assert response.status_code == 422, response.text
    # ... and the draft stays usable.
    assert (await client.post(f"{url}/steps", json=step(5, "FIRST"))).status_code == 201
    copied = await client.post("/api/v1/routes/R-REN4/versions", json={"copy_from": 1})
    assert copied.status_code == 201
    assert (await client.get("/api/v1/routes/R-REN4/versions/1/diff/2")).status_code == 200
