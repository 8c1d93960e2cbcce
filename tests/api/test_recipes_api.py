"""Recipes, their versions, checksums and qualifications through the HTTP API."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from mes.recipes import service as recipes_service
from tests.api.problems import assert_problem

SEEDED_AT = "2026-01-05T06:00:00Z"  # the clock the example fab was loaded with
NOW = "2026-01-05T08:00:00Z"  # the `clock` fixture


def sha256_of_canonical(body: dict[str, Any]) -> str:
    """The documented checksum, computed independently of mes.recipes.rules."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


BODY = {
    "parameters": [
        {"name": "rf_power", "value": 350, "unit": "W", "min": 100, "max": 500},
        {"name": "pressure", "value": 12.5, "unit": "mTorr", "min": 5.0, "max": 50.0},
        {"name": "gas", "value": "CF4/O2"},
        {"name": "endpoint", "value": True},
    ]
}
# BODY as the service stores it: every field present, limits as floats.
STORED_BODY = {
    "parameters": [
        {"name": "rf_power", "value": 350, "unit": "W", "min": 100.0, "max": 500.0},
        {"name": "pressure", "value": 12.5, "unit": "mTorr", "min": 5.0, "max": 50.0},
        {"name": "gas", "value": "CF4/O2", "unit": None, "min": None, "max": None},
        {"name": "endpoint", "value": True, "unit": None, "min": None, "max": None},
    ]
}


async def create_recipe(
    client: Any, name: str = "ETOX_TEST", body: dict[str, Any] | None = None, **extra: Any
) -> Any:
    payload = {"name": name, "tool_group": "ETCH_OXIDE", "body": body or BODY, **extra}
    return await client.post("/api/v1/recipes", json=payload)


# --- listing ---------------------------------------------------------------------------------


async def test_seeded_recipes_are_approved_version_1(client):
    page = (await client.get("/api/v1/recipes", params={"limit": 100})).json()
    assert page["total"] == 24
    names = [r["name"] for r in page["items"]]
    assert names == sorted(names)
    for recipe in page["items"]:
        assert len(recipe["versions"]) == 1
        version = recipe["versions"][0]
        assert (version["version"], version["status"]) == (1, "approved")
        assert (version["approved_by"], version["approved_at"]) == ("seed.approver", SEEDED_AT)
        assert len(version["checksum"]) == 64


async def test_recipe_list_filtered_by_tool_group(client):
    page = (await client.get("/api/v1/recipes", params={"tool_group": "LITHO_193"})).json()
    assert page["total"] == 3
    assert [r["name"] for r in page["items"]] == ["LI93_CONTACT", "LI93_GATE", "LI93_METAL1"]
    assert {r["tool_group"] for r in page["items"]} == {"LITHO_193"}

    page = (await client.get("/api/v1/recipes", params={"tool_group": "NO_GROUP"})).json()
    assert (page["total"], page["items"]) == (0, [])

    page = (
        await client.get("/api/v1/recipes", params={"tool_group": "WET_CLEAN", "limit": 1})
    ).json()
    assert (page["total"], page["limit"], len(page["items"])) == (2, 1, 1)


async def test_seeded_version_checksum_matches_its_body(client):
    version = (await client.get("/api/v1/recipes/LI93_GATE/versions/1")).json()
    assert version["body"]["parameters"][0]["name"] == "dose"
    assert version["checksum"] == sha256_of_canonical(version["body"])


# --- creating -------------------------------------------------------------------------------


async def test_create_recipe_makes_version_1_a_draft_with_its_checksum(client):
    response = await create_recipe(client, description="contact etch, test")
    assert response.status_code == 201, response.text
    recipe = response.json()
    assert (recipe["name"], recipe["tool_group"]) == ("ETOX_TEST", "ETCH_OXIDE")
    assert recipe["description"] == "contact etch, test"
    [summary] = recipe["versions"]
    assert (summary["version"], summary["status"], summary["created_by"]) == (1, "draft", "tester")
    assert (summary["approved_by"], summary["approved_at"]) == (None, None)
    assert summary["checksum"] == sha256_of_canonical(STORED_BODY)

    version = (await client.get("/api/v1/recipes/ETOX_TEST/versions/1")).json()
    assert version["body"] == STORED_BODY
    assert version["checksum"] == summary["checksum"]
    assert version["recipe"] == "ETOX_TEST"


async def test_checksum_ignores_the_key_order_of_parameters(client):
    reordered = {"parameters": [{k: p[k] for k in reversed(list(p))} for p in BODY["parameters"]]}
    assert list(reordered["parameters"][0]) != list(BODY["parameters"][0])
    first = (await create_recipe(client, "ETOX_A", BODY)).json()
    second = (await create_recipe(client, "ETOX_B", reordered)).json()
    assert first["versions"][0]["checksum"] == second["versions"][0]["checksum"]

    # ... but not the values.
    changed = json.loads(json.dumps(BODY))
    changed["parameters"][0]["value"] = 351
    third = (await create_recipe(client, "ETOX_C", changed)).json()
    assert third["versions"][0]["checksum"] != first["versions"][0]["checksum"]


PARAM_LIMITS = {
    "below_min": {"name": "p", "value": 4, "min": 5, "max": 10},
    "above_max": {"name": "p", "value": 10.5, "min": 5, "max": 10},
    "min_above_max": {"name": "p", "value": 7, "min": 10, "max": 5},
}


async def test_parameter_outside_its_limits_is_refused(client):
    for case, parameter in PARAM_LIMITS.items():
        response = await create_recipe(client, body={"parameters": [parameter]})
        problem = assert_problem(response, 422, "request.invalid")
        assert problem["errors"], case
    assert_problem(await client.get("/api/v1/recipes/ETOX_TEST"), 404, "recipe.not_found")


async def test_parameter_value_on_its_limit_is_accepted(client):
    body = {"parameters": [{"name": "p", "value": 5, "min": 5, "max": 10}]}
    assert (await create_recipe(client, body=body)).status_code == 201


async def test_duplicate_parameter_names_are_refused(client):
    body = {"parameters": [{"name": "p", "value": 1}, {"name": "p", "value": 2}]}
    problem = assert_problem(await create_recipe(client, body=body), 422, "request.invalid")
    assert any("unique" in e["msg"] for e in problem["errors"])


async def test_empty_body_is_refused(client):
    assert_problem(await create_recipe(client, body={"parameters": []}), 422, "request.invalid")


NON_FINITE = (
    '{"name": "p", "value": NaN}',
    '{"name": "p", "value": Infinity}',
    '{"name": "p", "value": -Infinity}',
    '{"name": "p", "value": 1e400}',
    '{"name": "p", "value": 1, "min": NaN}',
    '{"name": "p", "value": 1, "max": Infinity}',
)


async def test_non_finite_parameter_values_are_refused(client):
    # Plain JSON has no NaN, but Python's json module (and so the request parser) reads it, and
    # reads 1e400 as infinity. Such a body has no canonical JSON form, hence no checksum.
    for parameter in NON_FINITE:
        raw = (
            '{"name": "ETOX_NAN", "tool_group": "ETCH_OXIDE", '
            f'"body": {{"parameters": [{parameter}]}}}}'
        )
        response = await client.post(
            "/api/v1/recipes", content=raw, headers={"content-type": "application/json"}
        )
        assert_problem(response, 422, "request.invalid")
    assert_problem(await client.get("/api/v1/recipes/ETOX_NAN"), 404, "recipe.not_found")


async def test_duplicate_recipe_is_refused(client):
    response = await client.post(
        "/api/v1/recipes", json={"name": "LI93_GATE", "tool_group": "LITHO_193", "body": BODY}
    )
    assert_problem(response, 409, "recipe.duplicate")


async def test_recipe_for_unknown_tool_group_is_refused(client):
    response = await client.post(
        "/api/v1/recipes", json={"name": "X_RECIPE", "tool_group": "NO_GROUP", "body": BODY}
    )
    assert_problem(response, 404, "tool_group.not_found")
    assert_problem(await client.get("/api/v1/recipes/X_RECIPE"), 404, "recipe.not_found")


async def test_unknown_recipe_and_version_are_404(client):
    assert_problem(await client.get("/api/v1/recipes/NOPE"), 404, "recipe.not_found")
    assert_problem(
        await client.get("/api/v1/recipes/LI93_GATE/versions/2"), 404, "recipe.version_not_found"
    )
    assert_problem(
        await client.get("/api/v1/recipes/NOPE/versions/1/qualifications"),
        404,
        "recipe.not_found",
    )


async def test_update_recipe_description(client):
    response = await client.patch("/api/v1/recipes/LI93_GATE", json={"description": "gate"})
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "gate"
    assert (await client.get("/api/v1/recipes/LI93_GATE")).json()["description"] == "gate"


# --- drafts and approved versions -----------------------------------------------------------


async def test_updating_a_draft_body_changes_its_checksum(client):
    created = (await create_recipe(client)).json()
    old_checksum = created["versions"][0]["checksum"]
    new_body = {"parameters": [{"name": "rf_power", "value": 400, "unit": "W"}]}

    response = await client.put("/api/v1/recipes/ETOX_TEST/versions/1/body", json=new_body)
    assert response.status_code == 200, response.text
    version = response.json()
    assert version["status"] == "draft"
    assert version["body"] == {
        "parameters": [{"name": "rf_power", "value": 400, "unit": "W", "min": None, "max": None}]
    }
    assert version["checksum"] != old_checksum
    assert version["checksum"] == sha256_of_canonical(version["body"])

    again = (await client.get("/api/v1/recipes/ETOX_TEST/versions/1")).json()
    assert (again["body"], again["checksum"]) == (version["body"], version["checksum"])


async def test_updating_a_draft_with_an_invalid_body_is_refused(client):
    await create_recipe(client)
    response = await client.put(
        "/api/v1/recipes/ETOX_TEST/versions/1/body",
        json={"parameters": [{"name": "p", "value": 99, "max": 10}]},
    )
    assert_problem(response, 422, "request.invalid")
    version = (await client.get("/api/v1/recipes/ETOX_TEST/versions/1")).json()
    assert version["body"] == STORED_BODY


async def test_adding_a_version_increments_the_number(client):
    for expected in (2, 3):
        response = await client.post("/api/v1/recipes/LI93_GATE/versions", json={"body": BODY})
        assert response.status_code == 201, response.text
        version = response.json()
        assert (version["version"], version["status"], version["created_by"]) == (
            expected,
            "draft",
            "tester",
        )
        assert version["checksum"] == sha256_of_canonical(STORED_BODY)
    recipe = (await client.get("/api/v1/recipes/LI93_GATE")).json()
    assert [(v["version"], v["status"]) for v in recipe["versions"]] == [
        (1, "approved"),
        (2, "draft"),
        (3, "draft"),
    ]


async def test_the_body_of_an_approved_version_never_changes(client):
    before = (await client.get("/api/v1/recipes/LI93_GATE/versions/1")).json()
    response = await client.put("/api/v1/recipes/LI93_GATE/versions/1/body", json=BODY)
    assert_problem(response, 409, "recipe.version_not_draft")
    after = (await client.get("/api/v1/recipes/LI93_GATE/versions/1")).json()
    assert (after["body"], after["checksum"]) == (before["body"], before["checksum"])


async def test_a_draft_approved_by_the_service_is_frozen_for_the_api(client, session, clock):
    # No approval API yet (issue 5): approve through the service in the test's session. It
    # shares the outer transaction with the client's sessions, so a flush is enough.
    assert (await create_recipe(client)).status_code == 201
    await recipes_service.approve_version(session, "ETOX_TEST", 1, actor="qa.frank", clock=clock)
    await session.flush()

    summary = (await client.get("/api/v1/recipes/ETOX_TEST")).json()["versions"][0]
    assert (summary["status"], summary["approved_by"], summary["approved_at"]) == (
        "approved",
        "qa.frank",
        NOW,
    )
    response = await client.put("/api/v1/recipes/ETOX_TEST/versions/1/body", json=BODY)
    assert_problem(response, 409, "recipe.version_not_draft")


async def test_body_update_of_an_unknown_version_is_404(client):
    response = await client.put("/api/v1/recipes/LI93_GATE/versions/4/body", json=BODY)
    assert_problem(response, 404, "recipe.version_not_found")


# --- qualifications -------------------------------------------------------------------------


async def test_seeded_qualifications_cover_every_tool_of_the_group(client):
    response = await client.get("/api/v1/recipes/LI93_GATE/versions/1/qualifications")
    assert response.status_code == 200
    rows = response.json()
    assert [q["tool"] for q in rows] == ["F1-LI9301", "F1-LI9302", "F2-LI9301"]
    for q in rows:
        assert q == {
            "recipe": "LI93_GATE",
            "version": 1,
            "tool": q["tool"],
            "chamber": None,
            "qualified_at": SEEDED_AT,
            "expires_at": None,
            "qualified_by": "seed",
            "disqualified_at": None,
            "disqualified_by": None,
            "disqualify_reason": None,
            "standing": True,
        }

    rows = (await client.get("/api/v1/recipes/IMMC_WELL/versions/1/qualifications")).json()
    assert [q["tool"] for q in rows] == ["F1-IMMC01"]


async def test_qualify_a_draft_then_twice_is_refused(client):
    await create_recipe(client)
    url = "/api/v1/recipes/ETOX_TEST/versions/1/qualifications"
    assert (await client.get(url)).json() == []

    response = await client.post(url, json={"tool": "F2-ETOX01"})
    assert response.status_code == 201, response.text
    assert response.json() == {
        "recipe": "ETOX_TEST",
        "version": 1,
        "tool": "F2-ETOX01",
        "chamber": None,
        "qualified_at": NOW,
        "expires_at": None,
        "qualified_by": "tester",
        "disqualified_at": None,
        "disqualified_by": None,
        "disqualify_reason": None,
        "standing": True,
    }
    assert_problem(
        await client.post(url, json={"tool": "F2-ETOX01"}), 409, "recipe.already_qualified"
    )
    assert [q["tool"] for q in (await client.get(url)).json()] == ["F2-ETOX01"]


async def test_seeded_qualification_cannot_be_repeated(client):
    response = await client.post(
        "/api/v1/recipes/LI93_GATE/versions/1/qualifications", json={"tool": "F1-LI9301"}
    )
    assert_problem(response, 409, "recipe.already_qualified")


async def test_chamber_qualification_is_separate_from_the_tool_one(client):
    url = "/api/v1/recipes/ETPO_GATE/versions/1/qualifications"
    response = await client.post(url, json={"tool": "F1-ETPO01", "chamber": "PM2"})
    assert response.status_code == 201, response.text
    assert (response.json()["tool"], response.json()["chamber"]) == ("F1-ETPO01", "PM2")
    assert_problem(
        await client.post(url, json={"tool": "F1-ETPO01", "chamber": "PM2"}),
        409,
        "recipe.already_qualified",
    )
    response = await client.post(url, json={"tool": "F1-ETPO01", "chamber": "PM1"})
    assert response.status_code == 201, response.text
    # Ordered by tool, the tool-wide qualification before the chambers, on every backend.
    rows = (await client.get(url)).json()
    assert [(q["tool"], q["chamber"]) for q in rows] == [
        ("F1-ETPO01", None),
        ("F1-ETPO01", "PM1"),
        ("F1-ETPO01", "PM2"),
        ("F1-ETPO02", None),
        ("F2-ETPO01", None),
    ]


async def test_qualifying_a_tool_of_another_group_is_refused(client):
    response = await client.post(
        "/api/v1/recipes/LI93_GATE/versions/1/qualifications", json={"tool": "F1-ETPO01"}
    )
    assert_problem(response, 409, "recipe.tool_group_mismatch")


async def test_qualifying_an_unknown_chamber_or_tool_is_404(client):
    url = "/api/v1/recipes/ETPO_GATE/versions/1/qualifications"
    assert_problem(
        await client.post(url, json={"tool": "F1-ETPO01", "chamber": "PM9"}),
        404,
        "tool.chamber_not_found",
    )
    # A scanner has no chambers at all.
    assert_problem(
        await client.post(
            "/api/v1/recipes/LI93_GATE/versions/1/qualifications",
            json={"tool": "F1-LI9301", "chamber": "PM1"},
        ),
        404,
        "tool.chamber_not_found",
    )
    assert_problem(await client.post(url, json={"tool": "F9-NOPE"}), 404, "tool.not_found")
    assert_problem(
        await client.post(
            "/api/v1/recipes/ETPO_GATE/versions/3/qualifications", json={"tool": "F1-ETPO01"}
        ),
        404,
        "recipe.version_not_found",
    )


async def test_qualification_with_an_expiry(client, clock):
    await create_recipe(client)
    url = "/api/v1/recipes/ETOX_TEST/versions/1/qualifications"
    expiry = clock.now() + timedelta(days=30)
    response = await client.post(url, json={"tool": "F1-ETOX01", "expires_at": expiry.isoformat()})
    assert response.status_code == 201, response.text
    assert response.json()["expires_at"] == "2026-02-04T08:00:00Z"
    [row] = (await client.get(url)).json()
    assert row["expires_at"] == "2026-02-04T08:00:00Z"


async def test_qualification_expiring_in_the_past_is_refused(client, clock):
    await create_recipe(client)
    url = "/api/v1/recipes/ETOX_TEST/versions/1/qualifications"
    for offset in (timedelta(0), timedelta(hours=-1), timedelta(days=-400)):
        expiry = (clock.now() + offset).isoformat()
        response = await client.post(url, json={"tool": "F1-ETOX01", "expires_at": expiry})
        assert_problem(response, 409, "recipe.expiry_in_past")
    assert (await client.get(url)).json() == []


async def test_qualification_expiry_needs_a_time_zone(client):
    response = await client.post(
        "/api/v1/recipes/ETOX_VIA/versions/1/qualifications",
        json={"tool": "F2-ETOX01", "expires_at": "2027-01-01T00:00:00"},
    )
    assert_problem(response, 422, "request.invalid")
