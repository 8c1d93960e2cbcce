"""Products and versioned routes through the HTTP API, against the example fab."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.problems import assert_problem

SEEDED_AT = "2026-01-05T06:00:00Z"  # the clock the example fab was loaded with
NOW = "2026-01-05T08:00:00Z"  # the `clock` fixture
# An e-signature within minutes of the client's login: a reason is enough.
SIGNED = {"signature": {"reason": "release the new flow"}}


def step(
    sequence: int,
    tool_group: str = "WET_CLEAN",
    recipe: str = "WETC_PRECLEAN",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "sequence": sequence,
        "operation": f"OP{sequence}",
        "tool_group": tool_group,
        "recipe": recipe,
        "process_time_s": 600,
        **extra,
    }


# Three steps whose recipes exist, are approved and belong to the step's tool group.
SOUND_STEPS = [
    step(10, "WET_CLEAN", "WETC_PRECLEAN", qtime_to_sequence=20, qtime_max_s=3600),
    step(20, "FURN_OX", "FUOX_PADOX", batch_min=2, batch_max=6),
    step(30, "METRO_THK", "METK_MEASURE", rework_to_sequence=20, sampling_rate=0.25),
]


async def create_route(client: Any, code: str = "R-NEW", **overrides: Any) -> dict[str, Any]:
    body = {"code": code, "name": "New flow", "product": "MONITOR", "steps": SOUND_STEPS}
    body.update(overrides)
    response = await client.post("/api/v1/routes", json=body)
    assert response.status_code == 201, response.text
    return response.json()


# --- products ---------------------------------------------------------------------------------


async def test_seeded_products_are_listed_in_code_order(client):
    response = await client.get("/api/v1/products")
    assert response.status_code == 200
    page = response.json()
    assert page["total"] == 4
    assert [p["code"] for p in page["items"]] == ["ANALOG180", "CLEANMON", "LOGIC28", "MONITOR"]
    assert page["items"][2]["name"] == "28 nm logic test chip"


async def test_create_product_then_read_it_back(client):
    created = await client.post(
        "/api/v1/products", json={"code": "RF65", "name": "65 nm RF", "description": "LNA test"}
    )
    assert created.status_code == 201, created.text
    assert created.json() == {"code": "RF65", "name": "65 nm RF", "description": "LNA test"}

    fetched = await client.get("/api/v1/products/RF65")
    assert fetched.status_code == 200
    assert fetched.json() == created.json()
    assert (await client.get("/api/v1/products")).json()["total"] == 5


async def test_duplicate_product_is_refused(client):
    response = await client.post("/api/v1/products", json={"code": "LOGIC28", "name": "again"})
    assert_problem(response, 409, "product.duplicate")
    # The seeded product is untouched.
    assert (await client.get("/api/v1/products/LOGIC28")).json()["name"] == "28 nm logic test chip"


async def test_unknown_product_is_404_on_read_and_update(client):
    assert_problem(await client.get("/api/v1/products/NOPE"), 404, "product.not_found")
    response = await client.patch("/api/v1/products/NOPE", json={"name": "x"})
    assert_problem(response, 404, "product.not_found")


async def test_malformed_product_is_refused(client):
    for body in (
        {"code": "bad code", "name": "spaces are not allowed"},
        {"code": "X" * 33, "name": "too long"},
        {"code": "OK1", "name": ""},
        {"code": "OK2"},
    ):
        response = await client.post("/api/v1/products", json=body)
        assert_problem(response, 422, "request.invalid")
    assert (await client.get("/api/v1/products")).json()["total"] == 4


async def test_patch_product_changes_only_the_given_fields(client):
    response = await client.patch("/api/v1/products/MONITOR", json={"name": "Monitor lots"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "code": "MONITOR",
        "name": "Monitor lots",
        "description": "Process monitors for furnace and deposition.",
    }

    response = await client.patch("/api/v1/products/MONITOR", json={"description": None})
    assert response.status_code == 200
    assert response.json() == {"code": "MONITOR", "name": "Monitor lots", "description": None}

    # An explicit null name is ignored rather than blanking a mandatory field.
    response = await client.patch("/api/v1/products/MONITOR", json={"name": None})
    assert response.status_code == 200
    assert response.json()["name"] == "Monitor lots"
    assert (await client.get("/api/v1/products/MONITOR")).json()["name"] == "Monitor lots"


# --- reading the seeded routes ----------------------------------------------------------------


async def test_seeded_route_summary(client):
    response = await client.get("/api/v1/routes/R-LOGIC28")
    assert response.status_code == 200
    route = response.json()
    assert route["product"] == "LOGIC28"
    assert route["active_version"] == 1
    assert route["versions"] == [
        {
            "version": 1,
            "status": "active",
            "in_force": True,
            "step_count": 38,
            "created_by": "seed",
            "created_at": route["versions"][0]["created_at"],
            "activated_at": SEEDED_AT,
            "activated_by": "seed",
            "effective_at": SEEDED_AT,
        }
    ]


async def test_seeded_route_version_has_its_steps_in_sequence_order(client):
    response = await client.get("/api/v1/routes/R-LOGIC28/versions/1")
    assert response.status_code == 200
    version = response.json()
    assert version["route"] == "R-LOGIC28"
    assert version["status"] == "active"
    steps = version["steps"]
    assert [s["sequence"] for s in steps] == list(range(10, 390, 10))
    by_seq = {s["sequence"]: s for s in steps}

    assert by_seq[10] == {
        "sequence": 10,
        "operation": "PAD_OX_CLEAN",
        "description": None,
        "tool_group": "WET_CLEAN",
        "recipe": "WETC_PRECLEAN",
        "process_time_s": 2400,
        "batch_min": None,
        "batch_max": None,
        "qtime_to_sequence": None,
        "qtime_max_s": None,
        "qtime_min_s": None,
        "rework_to_sequence": None,
        "rework_limit": 2,
        "sampling_rate": 1.0,
        "setup": None,
        "same_tool_as_sequence": None,
    }
    assert (by_seq[20]["tool_group"], by_seq[20]["batch_min"], by_seq[20]["batch_max"]) == (
        "FURN_OX",
        2,
        6,
    )
    assert (by_seq[110]["qtime_to_sequence"], by_seq[110]["qtime_max_s"]) == (120, 14400)
    assert (by_seq[310]["qtime_to_sequence"], by_seq[310]["qtime_max_s"]) == (320, 21600)
    assert by_seq[160]["rework_to_sequence"] == 150
    assert by_seq[350]["rework_to_sequence"] == 340
    assert by_seq[130]["sampling_rate"] == 0.5
    assert (by_seq[150]["tool_group"], by_seq[150]["recipe"]) == ("LITHO_193", "LI93_GATE")
    assert by_seq[380]["operation"] == "PASSIVATION"


async def test_unknown_route_and_version_are_404(client):
    assert_problem(await client.get("/api/v1/routes/R-NOPE"), 404, "route.not_found")
    assert_problem(await client.get("/api/v1/routes/R-NOPE/versions/1"), 404, "route.not_found")
    assert_problem(
        await client.get("/api/v1/routes/R-LOGIC28/versions/7"), 404, "route.version_not_found"
    )


async def test_version_number_below_one_is_malformed(client):
    assert_problem(await client.get("/api/v1/routes/R-LOGIC28/versions/0"), 422, "request.invalid")


# --- listing ---------------------------------------------------------------------------------


async def test_route_list_is_ordered_and_paginated(client):
    page = (await client.get("/api/v1/routes")).json()
    assert page["total"] == 4
    assert (page["limit"], page["offset"]) == (50, 0)
    assert [r["code"] for r in page["items"]] == ["R-ANALOG", "R-CLEANMON", "R-LOGIC28", "R-TESTWF"]
    assert {r["code"]: r["versions"][0]["step_count"] for r in page["items"]} == {
        "R-ANALOG": 32,
        "R-CLEANMON": 2,
        "R-LOGIC28": 38,
        "R-TESTWF": 5,
    }

    first = (await client.get("/api/v1/routes", params={"limit": 2})).json()
    assert (first["total"], first["limit"], first["offset"]) == (4, 2, 0)
    assert [r["code"] for r in first["items"]] == ["R-ANALOG", "R-CLEANMON"]

    rest = (await client.get("/api/v1/routes", params={"limit": 2, "offset": 2})).json()
    assert (rest["total"], rest["limit"], rest["offset"]) == (4, 2, 2)
    assert [r["code"] for r in rest["items"]] == ["R-LOGIC28", "R-TESTWF"]

    beyond = (await client.get("/api/v1/routes", params={"offset": 10})).json()
    assert (beyond["total"], beyond["items"]) == (4, [])


async def test_route_list_refuses_bad_page_parameters(client):
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}):
        response = await client.get("/api/v1/routes", params=params)
        assert_problem(response, 422, "request.invalid")


async def test_route_list_filtered_by_product(client):
    await create_route(client, "R-MON2")
    page = (await client.get("/api/v1/routes", params={"product": "MONITOR"})).json()
    assert page["total"] == 2
    assert [r["code"] for r in page["items"]] == ["R-MON2", "R-TESTWF"]
    assert {r["product"] for r in page["items"]} == {"MONITOR"}

    page = (await client.get("/api/v1/routes", params={"product": "LOGIC28"})).json()
    assert (page["total"], [r["code"] for r in page["items"]]) == (1, ["R-LOGIC28"])

    page = (await client.get("/api/v1/routes", params={"product": "NOPE"})).json()
    assert (page["total"], page["items"]) == (0, [])


# --- creating routes --------------------------------------------------------------------------


async def test_create_route_makes_version_1_a_draft(client):
    unsorted = [SOUND_STEPS[2], SOUND_STEPS[0], SOUND_STEPS[1]]
    route = await create_route(client, steps=unsorted, notes="first cut")
    assert route["code"] == "R-NEW"
    assert route["product"] == "MONITOR"
    assert route["active_version"] is None
    assert len(route["versions"]) == 1
    summary = route["versions"][0]
    assert (summary["version"], summary["status"], summary["step_count"]) == (1, "draft", 3)
    assert summary["created_by"] == "tester"
    assert (summary["activated_at"], summary["activated_by"]) == (None, None)

    version = (await client.get("/api/v1/routes/R-NEW/versions/1")).json()
    assert version["notes"] == "first cut"
    assert [s["sequence"] for s in version["steps"]] == [10, 20, 30]
    s10, s20, s30 = version["steps"]
    assert (s10["qtime_to_sequence"], s10["qtime_max_s"]) == (20, 3600)
    assert (s20["tool_group"], s20["batch_min"], s20["batch_max"]) == ("FURN_OX", 2, 6)
    assert (s30["rework_to_sequence"], s30["sampling_rate"]) == (20, 0.25)


async def test_route_author_is_the_signed_in_engineer(client_as):
    body = {"code": "R-ANON", "name": "n", "product": "MONITOR", "steps": SOUND_STEPS}
    async with client_as("t-engineer") as engineer:
        response = await engineer.post("/api/v1/routes", json=body)
    assert response.status_code == 201
    assert response.json()["versions"][0]["created_by"] == "t-engineer"


async def test_create_duplicate_route_is_refused(client):
    body = {"code": "R-LOGIC28", "name": "n", "product": "LOGIC28", "steps": SOUND_STEPS}
    assert_problem(await client.post("/api/v1/routes", json=body), 409, "route.duplicate")
    assert (await client.get("/api/v1/routes/R-LOGIC28")).json()["versions"][0]["step_count"] == 38


async def test_create_route_for_unknown_product_is_refused(client):
    body = {"code": "R-X", "name": "n", "product": "NOPE", "steps": SOUND_STEPS}
    assert_problem(await client.post("/api/v1/routes", json=body), 404, "product.not_found")
    assert_problem(await client.get("/api/v1/routes/R-X"), 404, "route.not_found")


async def test_create_route_without_steps_is_malformed(client):
    body = {"code": "R-X", "name": "n", "product": "MONITOR", "steps": []}
    assert_problem(await client.post("/api/v1/routes", json=body), 422, "request.invalid")


INVALID_STEPS = {
    "duplicate_sequences": (
        [step(10), step(10, "FURN_OX", "FUOX_PADOX")],
        None,
        "duplicate step sequence numbers [10]",
    ),
    "qtime_backwards": (
        [step(10), step(20, qtime_to_sequence=10, qtime_max_s=60)],
        20,
        "Q-time window must end later",
    ),
    "qtime_to_itself": (
        [step(10, qtime_to_sequence=10, qtime_max_s=60)],
        10,
        "Q-time window must end later",
    ),
    "qtime_to_missing_step": (
        [step(10, qtime_to_sequence=30, qtime_max_s=60), step(20)],
        10,
        "Q-time end step 30 does not exist",
    ),
    "qtime_without_length": (
        [step(10, qtime_to_sequence=20), step(20)],
        10,
        "needs both its end step and length",
    ),
    "rework_forward": (
        [step(10, rework_to_sequence=20), step(20)],
        10,
        "rework must return to an earlier step",
    ),
    "rework_to_missing_step": (
        [step(10), step(20, rework_to_sequence=15)],
        20,
        "rework step 15 does not exist",
    ),
    "unknown_tool_group": (
        [step(10, "NO_SUCH_GROUP")],
        10,
        "unknown tool group 'NO_SUCH_GROUP'",
    ),
    "batch_min_above_max": (
        [step(10, "FURN_OX", "FUOX_PADOX", batch_min=6, batch_max=2)],
        10,
        "batch size needs 1 <= min <= max",
    ),
    "batch_min_only": (
        [step(10, "FURN_OX", "FUOX_PADOX", batch_min=2)],
        10,
        "batch size needs both minimum and maximum",
    ),
}


@pytest.mark.parametrize(
    ("steps", "sequence", "message"), INVALID_STEPS.values(), ids=INVALID_STEPS.keys()
)
async def test_unsound_steps_are_refused_with_a_list_of_errors(client, steps, sequence, message):
    body = {"code": "R-BAD", "name": "n", "product": "MONITOR", "steps": steps}
    problem = assert_problem(
        await client.post("/api/v1/routes", json=body), 422, "route.invalid_steps"
    )
    assert isinstance(problem["errors"], list)
    assert any(e["sequence"] == sequence and message in e["msg"] for e in problem["errors"]), (
        problem["errors"]
    )
    # Nothing of the refused route was stored.
    assert_problem(await client.get("/api/v1/routes/R-BAD"), 404, "route.not_found")


async def test_every_problem_of_a_route_is_reported_at_once(client):
    steps = [
        step(10, rework_to_sequence=20),
        step(20, "NO_SUCH_GROUP", qtime_to_sequence=10, qtime_max_s=60),
        step(30, "FURN_OX", "FUOX_PADOX", batch_min=5, batch_max=1),
    ]
    body = {"code": "R-BAD", "name": "n", "product": "MONITOR", "steps": steps}
    problem = assert_problem(
        await client.post("/api/v1/routes", json=body), 422, "route.invalid_steps"
    )
    assert sorted((e["sequence"], e["msg"]) for e in problem["errors"]) == [
        (10, "rework must return to an earlier step"),
        (20, "a Q-time window must end later"),
        (20, "unknown tool group 'NO_SUCH_GROUP'"),
        (30, "batch size needs 1 <= min <= max"),
    ]


# --- versions -------------------------------------------------------------------------------


async def test_adding_versions_increments_the_number(client):
    for expected in (2, 3):
        response = await client.post(
            "/api/v1/routes/R-TESTWF/versions",
            json={"steps": SOUND_STEPS, "notes": f"v{expected}"},
        )
        assert response.status_code == 201, response.text
        version = response.json()
        assert (version["route"], version["version"], version["status"]) == (
            "R-TESTWF",
            expected,
            "draft",
        )
        assert version["created_by"] == "tester"
        assert version["notes"] == f"v{expected}"
        assert [s["sequence"] for s in version["steps"]] == [10, 20, 30]

    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert route["active_version"] == 1
    assert [(v["version"], v["status"], v["step_count"]) for v in route["versions"]] == [
        (1, "active", 5),
        (2, "draft", 3),
        (3, "draft", 3),
    ]


async def test_adding_a_version_to_an_unknown_route_is_404(client):
    response = await client.post("/api/v1/routes/R-NOPE/versions", json={"steps": SOUND_STEPS})
    assert_problem(response, 404, "route.not_found")


async def test_adding_an_unsound_version_is_refused(client):
    response = await client.post(
        "/api/v1/routes/R-TESTWF/versions", json={"steps": [step(10, rework_to_sequence=20)]}
    )
    problem = assert_problem(response, 422, "route.invalid_steps")
    assert problem["errors"] == [{"sequence": 10, "msg": "rework must return to an earlier step"}]
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert [v["version"] for v in route["versions"]] == [1]


async def test_replace_steps_of_a_draft(client):
    await create_route(client)
    # Reuses sequence 10 with other content: the old rows must go before the new ones arrive.
    new_steps = [
        step(10, "DEP_CVD", "DCVD_TEOS", description="thicker film"),
        step(15, "METRO_THK", "METK_MEASURE"),
    ]
    response = await client.put("/api/v1/routes/R-NEW/versions/1/steps", json={"steps": new_steps})
    assert response.status_code == 200, response.text
    version = response.json()
    assert version["status"] == "draft"
    assert [(s["sequence"], s["tool_group"], s["recipe"]) for s in version["steps"]] == [
        (10, "DEP_CVD", "DCVD_TEOS"),
        (15, "METRO_THK", "METK_MEASURE"),
    ]
    assert version["steps"][0]["description"] == "thicker film"
    assert version["steps"][0]["qtime_to_sequence"] is None

    again = (await client.get("/api/v1/routes/R-NEW/versions/1")).json()
    assert again["steps"] == version["steps"]
    route = (await client.get("/api/v1/routes/R-NEW")).json()
    assert route["versions"][0]["step_count"] == 2


async def test_replacing_steps_of_an_active_version_is_refused(client):
    response = await client.put(
        "/api/v1/routes/R-LOGIC28/versions/1/steps", json={"steps": SOUND_STEPS}
    )
    assert_problem(response, 409, "route.version_not_draft")
    version = (await client.get("/api/v1/routes/R-LOGIC28/versions/1")).json()
    assert len(version["steps"]) == 38


async def test_replacing_steps_with_unsound_ones_keeps_the_old_steps(client):
    await create_route(client)
    response = await client.put(
        "/api/v1/routes/R-NEW/versions/1/steps",
        json={"steps": [step(10), step(20, qtime_to_sequence=10, qtime_max_s=5)]},
    )
    assert_problem(response, 422, "route.invalid_steps")
    version = (await client.get("/api/v1/routes/R-NEW/versions/1")).json()
    assert [s["sequence"] for s in version["steps"]] == [10, 20, 30]


async def test_replacing_steps_of_an_unknown_version_is_404(client):
    response = await client.put(
        "/api/v1/routes/R-LOGIC28/versions/9/steps", json={"steps": SOUND_STEPS}
    )
    assert_problem(response, 404, "route.version_not_found")


async def test_activating_a_new_version_retires_the_previous_one(client):
    added = await client.post("/api/v1/routes/R-TESTWF/versions", json={"steps": SOUND_STEPS})
    assert added.status_code == 201

    response = await client.post("/api/v1/routes/R-TESTWF/versions/2/activate", json=SIGNED)
    assert response.status_code == 200, response.text
    activated = response.json()
    assert (activated["version"], activated["status"]) == (2, "active")
    assert activated["activated_by"] == "tester"
    assert activated["activated_at"] == NOW

    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert route["active_version"] == 2
    assert [(v["version"], v["status"]) for v in route["versions"]] == [
        (1, "obsolete"),
        (2, "active"),
    ]
    # The retired version keeps the record of its own activation.
    assert route["versions"][0]["activated_at"] == SEEDED_AT
    assert route["versions"][0]["activated_by"] == "seed"


async def test_activating_the_first_draft_of_a_new_route(client):
    await create_route(client)
    response = await client.post("/api/v1/routes/R-NEW/versions/1/activate", json=SIGNED)
    assert response.status_code == 200, response.text
    route = (await client.get("/api/v1/routes/R-NEW")).json()
    assert route["active_version"] == 1
    assert [(v["version"], v["status"]) for v in route["versions"]] == [(1, "active")]


async def test_only_drafts_can_be_activated(client):
    await client.post("/api/v1/routes/R-TESTWF/versions", json={"steps": SOUND_STEPS})
    assert (
        await client.post("/api/v1/routes/R-TESTWF/versions/2/activate", json=SIGNED)
    ).status_code == 200
    # Version 1 is now obsolete, version 2 active: neither can be activated (again).
    for version in (1, 2):
        response = await client.post(
            f"/api/v1/routes/R-TESTWF/versions/{version}/activate", json=SIGNED
        )
        assert_problem(response, 409, "route.version_not_draft")
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert route["active_version"] == 2


async def test_activation_needs_every_recipe_to_exist(client):
    steps = [step(10), step(20, "FURN_OX", "NO_SUCH_RECIPE")]
    await client.post("/api/v1/routes/R-TESTWF/versions", json={"steps": steps})
    problem = assert_problem(
        await client.post("/api/v1/routes/R-TESTWF/versions/2/activate", json=SIGNED),
        422,
        "route.invalid",
    )
    assert problem["errors"] == [
        {"sequence": 20, "msg": "recipe 'NO_SUCH_RECIPE' has no approved version"}
    ]
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert route["active_version"] == 1
    assert [(v["version"], v["status"]) for v in route["versions"]] == [
        (1, "active"),
        (2, "draft"),
    ]


async def test_activation_needs_the_recipe_of_the_steps_tool_group(client):
    # DCVD_SIN is approved, but for DEP_CVD, not for the wet bench.
    await create_route(client, steps=[step(10, "WET_CLEAN", "DCVD_SIN")])
    problem = assert_problem(
        await client.post("/api/v1/routes/R-NEW/versions/1/activate", json=SIGNED),
        422,
        "route.invalid",
    )
    assert problem["errors"] == [
        {"sequence": 10, "msg": "recipe 'DCVD_SIN' is for another tool group than WET_CLEAN"}
    ]


async def test_activation_needs_an_approved_recipe_version(client):
    recipe = {
        "name": "WETC_DRAFTONLY",
        "tool_group": "WET_CLEAN",
        "body": {"parameters": [{"name": "time_s", "value": 60}]},
    }
    assert (await client.post("/api/v1/recipes", json=recipe)).status_code == 201
    await create_route(client, steps=[step(10, "WET_CLEAN", "WETC_DRAFTONLY")])
    problem = assert_problem(
        await client.post("/api/v1/routes/R-NEW/versions/1/activate", json=SIGNED),
        422,
        "route.invalid",
    )
    assert problem["errors"] == [
        {"sequence": 10, "msg": "recipe 'WETC_DRAFTONLY' has no approved version"}
    ]
    assert (await client.get("/api/v1/routes/R-NEW")).json()["active_version"] is None


async def test_activating_an_unknown_version_is_404(client):
    assert_problem(
        await client.post("/api/v1/routes/R-TESTWF/versions/5/activate", json=SIGNED),
        404,
        "route.version_not_found",
    )
    assert_problem(
        await client.post("/api/v1/routes/R-NOPE/versions/1/activate", json=SIGNED),
        404,
        "route.not_found",
    )


async def test_rename_route(client):
    response = await client.patch("/api/v1/routes/R-TESTWF", json={"name": "Monitor flow"})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Monitor flow"
    assert response.json()["active_version"] == 1
    assert (await client.get("/api/v1/routes/R-TESTWF")).json()["name"] == "Monitor flow"
    assert_problem(
        await client.patch("/api/v1/routes/R-NOPE", json={"name": "x"}), 404, "route.not_found"
    )
