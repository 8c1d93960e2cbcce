"""Process engineering through the HTTP API: context rules, their precedence, and their
resolution through ``resolve`` and track-in.

Every test runs in its own rolled-back transaction (see tests/conftest.py), against the
example fab: LOGIC28 lots start at step 10 PAD_OX_CLEAN (WET_CLEAN, logical recipe
WETC_PRECLEAN), which every wet bench of both fabs is qualified for. Shared helpers:
``tests/api/process_engineering.py``.
"""

from __future__ import annotations

from typing import Any

from tests.api.problems import assert_problem
from tests.api.process_engineering import ENGINEER_B, approved_recipe, start_lot, track_in

# --- context rules ----------------------------------------------------------------------------


async def test_context_rule_lifecycle_and_refusals(client, client_as):
    async with client_as(ENGINEER_B) as other:
        await approved_recipe(client, other, "WETC_ALT")
    rule = {"logical_recipe": "WETC_PRECLEAN", "recipe": "WETC_ALT", "tool": "F1-WETC02"}
    response = await client.post("/api/v1/recipes/context-rules", json={**rule, "note": "trial"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created == {
        "id": created["id"],
        "logical_recipe": "WETC_PRECLEAN",
        "recipe": "WETC_ALT",
        "product": None,
        "step": None,
        "tool_group": None,
        "tool": "F1-WETC02",
        "chamber": None,
        "specificity": ["tool"],
        "created_by": "tester",
        "note": "trial",
    }
    assert_problem(
        await client.post("/api/v1/recipes/context-rules", json=rule),
        409,
        "recipe.context_rule_exists",
    )
    # The same context for another logical recipe is a different rule.
    other_logical = {**rule, "logical_recipe": "WETC_STRIP"}
    assert (
        await client.post("/api/v1/recipes/context-rules", json=other_logical)
    ).status_code == 201

    for refused, status, code in (
        ({**rule, "tool": "F1-LI9301"}, 409, "recipe.tool_group_mismatch"),
        ({**rule, "tool": None, "tool_group": "FURN_OX"}, 409, "recipe.tool_group_mismatch"),
        (
            {
                "logical_recipe": "ETPO_GATE",
                "recipe": "ETPO_STI",
                "tool": "F1-ETPO01",
                "chamber": "PM9",
            },
            404,
            "tool.chamber_not_found",
        ),
        ({**rule, "tool": None, "chamber": "PM1"}, 422, "request.invalid"),
        ({**rule, "recipe": "NO_RECIPE"}, 404, "recipe.not_found"),
        ({**rule, "tool": "F9-NOPE"}, 404, "tool.not_found"),
        ({**rule, "tool": None, "product": "NOPE"}, 404, "product.not_found"),
    ):
        assert_problem(
            await client.post("/api/v1/recipes/context-rules", json=refused), status, code
        )

    chamber_rule = {
        "logical_recipe": "ETPO_GATE",
        "recipe": "ETPO_STI",
        "tool": "F1-ETPO01",
        "chamber": "PM2",
        "product": "LOGIC28",
    }
    response = await client.post("/api/v1/recipes/context-rules", json=chamber_rule)
    assert response.status_code == 201, response.text
    assert response.json()["specificity"] == ["chamber", "tool", "product"]

    listed = (
        await client.get(
            "/api/v1/recipes/context-rules", params={"logical_recipe": "WETC_PRECLEAN"}
        )
    ).json()
    assert [r["id"] for r in listed] == [created["id"]]
    every = (await client.get("/api/v1/recipes/context-rules")).json()
    assert [(r["logical_recipe"], r["recipe"]) for r in every] == [
        ("ETPO_GATE", "ETPO_STI"),
        ("WETC_PRECLEAN", "WETC_ALT"),
        ("WETC_STRIP", "WETC_ALT"),
    ]

    async with client_as("t-operator") as operator:
        assert_problem(
            await operator.post(
                "/api/v1/recipes/context-rules", json={**rule, "tool": "F1-WETC01"}
            ),
            403,
            "auth.forbidden",
        )
        assert_problem(
            await operator.delete(f"/api/v1/recipes/context-rules/{created['id']}"),
            403,
            "auth.forbidden",
        )
    deleted = await client.delete(f"/api/v1/recipes/context-rules/{created['id']}")
    assert deleted.status_code == 204, deleted.text
    assert_problem(
        await client.delete(f"/api/v1/recipes/context-rules/{created['id']}"),
        404,
        "recipe.context_rule_not_found",
    )
    listed = (
        await client.get(
            "/api/v1/recipes/context-rules", params={"logical_recipe": "WETC_PRECLEAN"}
        )
    ).json()
    assert listed == []
    # Gone, the context is free again.
    assert (await client.post("/api/v1/recipes/context-rules", json=rule)).status_code == 201


async def test_context_precedence_through_resolve_and_track_in(client, client_as):
    tools = ("F1-WETC01", "F1-WETC02")
    async with client_as(ENGINEER_B) as other:
        by_product = await approved_recipe(client, other, "WETC_P", tools=tools, value=61)
        await approved_recipe(client, other, "WETC_PS", tools=tools, value=62)
        tool_recipe = await approved_recipe(client, other, "WETC_T", tools=tools, value=63)
    rules = {}
    for name, named in (
        ("WETC_P", {"product": "LOGIC28"}),
        ("WETC_PS", {"product": "LOGIC28", "step": "PAD_OX_CLEAN"}),
        ("WETC_T", {"tool": "F1-WETC02"}),
        # Another product, another step: never matches a LOGIC28 lot at PAD_OX_CLEAN.
        ("WETC_STRIP", {"product": "ANALOG180"}),
        ("WETC_STRIP", {"step": "GATE_CLEAN"}),
        # A recipe of another tool group never matches a wet-clean step, even where the
        # context it names (the step) does.
        ("FUOX_PADOX", {"step": "PAD_OX_CLEAN"}),
    ):
        body = {"logical_recipe": "WETC_PRECLEAN", "recipe": name, **named}
        response = await client.post("/api/v1/recipes/context-rules", json=body)
        assert response.status_code == 201, response.text
        rules[(name, tuple(named))] = response.json()["id"]
    lot = await start_lot(client)
    code = lot["code"]
    assert lot["step"] == {"sequence": 10, "operation": "PAD_OX_CLEAN", "tool_group": "WET_CLEAN"}

    def explain(tool: str) -> Any:
        return client.get("/api/v1/recipes/resolve", params={"lot": code, "tool": tool})

    response = await explain("F1-WETC02")
    assert response.status_code == 200, response.text
    on_02 = response.json()
    assert on_02["lot"] == code
    assert on_02["step"] == {
        "route": "R-LOGIC28",
        "route_version": 1,
        "sequence": 10,
        "operation": "PAD_OX_CLEAN",
    }
    assert on_02["logical_recipe"] == "WETC_PRECLEAN"
    assert on_02["context"] == {
        "product": "LOGIC28",
        "step": "PAD_OX_CLEAN",
        "tool_group": "WET_CLEAN",
        "tool": "F1-WETC02",
        "chamber": None,
    }
    assert on_02["precedence"] == ["chamber", "tool", "step", "product", "tool_group"]
    assert on_02["rule"]["recipe"] == "WETC_T"
    assert [r["recipe"] for r in on_02["matched_rules"]] == ["WETC_T", "WETC_PS", "WETC_P"]
    assert [r["specificity"] for r in on_02["matched_rules"]] == [
        ["tool"],
        ["step", "product"],
        ["product"],
    ]
    assert (on_02["recipe"], on_02["version"], on_02["checksum"]) == (
        "WETC_T",
        1,
        tool_recipe["checksum"],
    )
    assert (on_02["qualification"]["tool"], on_02["qualification"]["standing"]) == (
        "F1-WETC02",
        True,
    )
    assert (on_02["runnable"], on_02["refusal"]) == (True, None)

    on_01 = (await explain("F1-WETC01")).json()
    assert on_01["rule"]["recipe"] == "WETC_PS"
    assert [r["recipe"] for r in on_01["matched_rules"]] == ["WETC_PS", "WETC_P"]

    # Track-in runs what resolve explained.
    tin = await track_in(client, code, "F1-WETC02")
    assert tin.status_code == 200, tin.text
    assert tin.json()["recipe"] == {
        "name": "WETC_T",
        "version": 1,
        "checksum": tool_recipe["checksum"],
        "body": {
            "parameters": [{"name": "time_s", "value": 63, "unit": "s", "min": None, "max": None}]
        },
    }

    # Without the product+step rule, F1-WETC01 falls back to the product rule.
    await client.delete(f"/api/v1/recipes/context-rules/{rules[('WETC_PS', ('product', 'step'))]}")
    second = (await start_lot(client))["code"]
    tin = await track_in(client, second, "F1-WETC01")
    assert tin.status_code == 200, tin.text
    assert (tin.json()["recipe"]["name"], tin.json()["recipe"]["checksum"]) == (
        "WETC_P",
        by_product["checksum"],
    )
    # Without any rule, the logical name is the recipe again.
    await client.delete(f"/api/v1/recipes/context-rules/{rules[('WETC_P', ('product',))]}")
    plain = await client.get("/api/v1/recipes/resolve", params={"lot": second, "tool": "F1-WETC01"})
    # The lot is running now; resolve still explains its current step.
    assert plain.status_code == 200, plain.text
    assert (plain.json()["rule"], plain.json()["matched_rules"]) == (None, [])
    assert plain.json()["recipe"] == "WETC_PRECLEAN"


async def test_resolve_refusals(client):
    code = (await start_lot(client))["code"]
    wrong = await client.get("/api/v1/recipes/resolve", params={"lot": code, "tool": "F1-ETPO01"})
    assert wrong.status_code == 200, wrong.text
    assert (wrong.json()["runnable"], wrong.json()["refusal"]["code"]) == (
        False,
        "tool.wrong_group",
    )
    assert wrong.json()["recipe"] is None
    chamber = await client.get(
        "/api/v1/recipes/resolve", params={"lot": code, "tool": "F1-ETPO01", "chamber": "PM9"}
    )
    assert_problem(chamber, 404, "tool.chamber_not_found")
    assert_problem(
        await client.get("/api/v1/recipes/resolve", params={"lot": code, "tool": "F9-NOPE"}),
        404,
        "tool.not_found",
    )
    assert_problem(
        await client.get(
            "/api/v1/recipes/resolve", params={"lot": "L26-9999", "tool": "F1-WETC01"}
        ),
        404,
        "lot.not_found",
    )
    assert_problem(
        await client.get("/api/v1/recipes/resolve", params={"lot": code}), 422, "request.invalid"
    )
