"""Process engineering through the HTTP API: the whole engineer flow, from a recipe draft to
the track-in that runs it.

Every test runs in its own rolled-back transaction (see tests/conftest.py), against the
example fab: LOGIC28 lots start at step 10 PAD_OX_CLEAN (WET_CLEAN, logical recipe
WETC_PRECLEAN), which every wet bench of both fabs is qualified for. Shared helpers:
``tests/api/process_engineering.py``.
"""

from __future__ import annotations

from tests.api.problems import assert_problem
from tests.api.process_engineering import ENGINEER_B, SIGNED, start_lot, step, track_in
from tests.conftest import ROLE_PASSWORD

# --- the whole engineer flow ------------------------------------------------------------------


async def test_engineer_flow_from_recipe_draft_to_track_in(client, client_as):
    assert (
        await client.post("/api/v1/products", json={"code": "FLOW1", "name": "Flow test"})
    ).status_code == 201
    body = {"parameters": [{"name": "time_s", "value": 75, "unit": "s", "min": 60, "max": 90}]}
    async with client_as(ENGINEER_B) as engineer_a:
        # Engineer A writes the recipe and cannot approve it alone.
        created = await engineer_a.post(
            "/api/v1/recipes", json={"name": "WETC_FLOW", "tool_group": "WET_CLEAN", "body": body}
        )
        assert created.status_code == 201, created.text
        checksum = created.json()["versions"][0]["checksum"]
        assert_problem(
            await engineer_a.post("/api/v1/recipes/WETC_FLOW/versions/1/approve", json=SIGNED),
            409,
            "recipe.same_approver",
        )
        # Engineer B approves; A qualifies it on one bench.
        approved = await client.post("/api/v1/recipes/WETC_FLOW/versions/1/approve", json=SIGNED)
        assert approved.status_code == 200, approved.text
        qualified = await engineer_a.post(
            "/api/v1/recipes/WETC_FLOW/versions/1/qualifications", json={"tool": "F1-WETC01"}
        )
        assert qualified.status_code == 201, qualified.text

        # A route draft, first without a recipe at the clean step.
        route = {
            "code": "R-FLOW1",
            "name": "Flow",
            "product": "FLOW1",
            "steps": [step(10, "CLEAN", recipe=None), step(20, "OXIDE", "FURN_OX", "FUOX_PADOX")],
        }
        assert (await engineer_a.post("/api/v1/routes", json=route)).status_code == 201
        url = "/api/v1/routes/R-FLOW1/versions/1"
        first = (await engineer_a.get(f"{url}/validation")).json()
        assert first["problems"] == [{"sequence": 10, "msg": "the step has no recipe"}]
        edited = await engineer_a.put(f"{url}/steps/10", json=step(10, "CLEAN", recipe="WETC_FLOW"))
        assert edited.status_code == 200, edited.text
        inserted = await engineer_a.post(
            f"{url}/steps",
            json=step(30, "MEASURE", "METRO_THK", "METK_MEASURE", rework_to_sequence=20),
        )
        assert inserted.status_code == 201, inserted.text
        validation = (await engineer_a.get(f"{url}/validation")).json()
        assert (validation["activatable"], validation["problems"]) == (True, [])

        activated = await engineer_a.post(
            f"{url}/activate",
            json={"signature": {"reason": "release R-FLOW1", "password": ROLE_PASSWORD}},
        )
        assert activated.status_code == 200, activated.text
        assert (activated.json()["status"], activated.json()["in_force"]) == ("active", True)
        assert activated.json()["activated_by"] == ENGINEER_B

    lot = await start_lot(client, "FLOW1")
    assert (lot["route"], lot["route_version"], lot["step"]["operation"]) == ("R-FLOW1", 1, "CLEAN")
    # Only the qualified bench runs it.
    assert_problem(await track_in(client, lot["code"], "F1-WETC02"), 409, "tool.not_qualified")
    tin = await track_in(client, lot["code"], "F1-WETC01")
    assert tin.status_code == 200, tin.text
    assert tin.json()["recipe"] == {
        "name": "WETC_FLOW",
        "version": 1,
        "checksum": checksum,
        "body": {
            "parameters": [{"name": "time_s", "value": 75, "unit": "s", "min": 60.0, "max": 90.0}]
        },
    }
    assert tin.json()["tool"] == "F1-WETC01"
