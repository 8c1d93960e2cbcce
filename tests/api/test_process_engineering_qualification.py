"""Process engineering through the HTTP API: the qualification matrix, disqualification
(of tools and chambers) and requalification.

Every test runs in its own rolled-back transaction (see tests/conftest.py), against the
example fab: LOGIC28 lots start at step 10 PAD_OX_CLEAN (WET_CLEAN, logical recipe
WETC_PRECLEAN), which every wet bench of both fabs is qualified for. Shared helpers:
``tests/api/process_engineering.py``.
"""

from __future__ import annotations

from typing import Any

from tests.api.problems import assert_problem
from tests.api.process_engineering import NOW, start_lot, track_in

# --- qualification matrix and disqualification ------------------------------------------------


async def test_qualification_matrix_filters(client):
    async def matrix(**params: Any) -> list[tuple[str, int, str]]:
        response = await client.get("/api/v1/recipes/qualifications", params=params)
        assert response.status_code == 200, response.text
        return [(q["recipe"], q["version"], q["tool"]) for q in response.json()]

    assert await matrix(tool="F1-WETC01") == [
        ("WETC_PRECLEAN", 1, "F1-WETC01"),
        ("WETC_STRIP", 1, "F1-WETC01"),
    ]
    assert await matrix(recipe="LI93_GATE") == [
        ("LI93_GATE", 1, "F1-LI9301"),
        ("LI93_GATE", 1, "F1-LI9302"),
        ("LI93_GATE", 1, "F2-LI9301"),
    ]
    assert await matrix(tool_group="LITHO_193", fab="F2") == [
        ("LI93_CONTACT", 1, "F2-LI9301"),
        ("LI93_GATE", 1, "F2-LI9301"),
        ("LI93_METAL1", 1, "F2-LI9301"),
    ]
    assert await matrix(recipe="LI93_GATE", fab="F2") == [("LI93_GATE", 1, "F2-LI9301")]
    assert await matrix(tool="F9-NOPE") == []
    # The seeded recipes, each on every tool of its group in both fabs: by tool group,
    # tools x recipes = LITHO_193 3x3, LITHO_248 2x2, ETCH_POLY 3x2, ETCH_OXIDE 2x2,
    # DEP_CVD 3x2, DEP_PVD 2x2, IMPL_HC 2x2, IMPL_MC 1x1, WET_CLEAN 3x2, FURN_OX 2x2,
    # FURN_ANNEAL 2x1, METRO_CD 2x1, METRO_THK 2x1, METRO_OVL 1x1.
    assert len(await matrix()) == 9 + 4 + 6 + 4 + 6 + 4 + 4 + 1 + 6 + 4 + 2 + 2 + 2 + 1


async def test_disqualification_stops_track_in_at_once(client, client_as):
    lot = (await start_lot(client))["code"]
    url = "/api/v1/recipes/WETC_PRECLEAN/versions/1/qualifications/F1-WETC01/disqualify"
    reason = {"reason": "particles after PM"}
    async with client_as("t-operator") as operator:
        assert_problem(await operator.post(url, json=reason), 403, "auth.forbidden")
    assert_problem(
        await client.post(
            "/api/v1/recipes/WETC_PRECLEAN/versions/1/qualifications/F1-LI9301/disqualify",
            json=reason,
        ),
        404,
        "recipe.not_qualified",
    )
    assert_problem(await client.post(url, json={"reason": ""}), 422, "request.invalid")

    async with client_as("t-supervisor") as supervisor:
        response = await supervisor.post(url, json=reason)
    assert response.status_code == 200, response.text
    withdrawn = response.json()
    assert (withdrawn["tool"], withdrawn["standing"]) == ("F1-WETC01", False)
    assert (withdrawn["disqualified_at"], withdrawn["disqualified_by"]) == (NOW, "t-supervisor")
    assert withdrawn["disqualify_reason"] == "particles after PM"

    assert_problem(await track_in(client, lot, "F1-WETC01"), 409, "tool.not_qualified")
    explained = (
        await client.get("/api/v1/recipes/resolve", params={"lot": lot, "tool": "F1-WETC01"})
    ).json()
    assert explained["runnable"] is False
    assert explained["refusal"]["code"] == "tool.not_qualified"
    assert (explained["recipe"], explained["version"]) == ("WETC_PRECLEAN", None)
    # Withdrawn once is withdrawn: there is nothing standing left to withdraw.
    assert_problem(await client.post(url, json=reason), 404, "recipe.not_qualified")

    # The matrix shows standing qualifications, the history keeps the withdrawn one.
    standing = (
        await client.get("/api/v1/recipes/qualifications", params={"tool": "F1-WETC01"})
    ).json()
    assert [q["recipe"] for q in standing] == ["WETC_STRIP"]
    history = (
        await client.get(
            "/api/v1/recipes/qualifications",
            params={"tool": "F1-WETC01", "recipe": "WETC_PRECLEAN", "include_history": True},
        )
    ).json()
    assert [(q["standing"], q["disqualify_reason"]) for q in history] == [
        (False, "particles after PM")
    ]
    # The other bench still runs it.
    tin = await track_in(client, lot, "F1-WETC02")
    assert tin.status_code == 200, tin.text
    assert tin.json()["recipe"]["name"] == "WETC_PRECLEAN"


async def test_requalifying_after_disqualification_keeps_the_history(client):
    base = "/api/v1/recipes/WETC_PRECLEAN/versions/1/qualifications"
    withdrawn = await client.post(f"{base}/F1-WETC01/disqualify", json={"reason": "drift"})
    assert withdrawn.status_code == 200, withdrawn.text
    again = await client.post(base, json={"tool": "F1-WETC01"})
    assert again.status_code == 201, again.text
    history = (
        await client.get(
            "/api/v1/recipes/qualifications",
            params={"tool": "F1-WETC01", "recipe": "WETC_PRECLEAN", "include_history": True},
        )
    ).json()
    assert [(q["standing"], q["disqualify_reason"]) for q in history] == [
        (False, "drift"),
        (True, None),
    ]
    lot = (await start_lot(client))["code"]
    assert (await track_in(client, lot, "F1-WETC01")).status_code == 200


async def test_chamber_disqualification(client):
    base = "/api/v1/recipes/ETPO_GATE/versions/1/qualifications"
    assert (
        await client.post(base, json={"tool": "F1-ETPO01", "chamber": "PM2"})
    ).status_code == 201
    assert_problem(
        await client.post(f"{base}/F1-ETPO01/disqualify", json={"chamber": "PM9", "reason": "x-x"}),
        404,
        "tool.chamber_not_found",
    )
    assert_problem(
        await client.post(f"{base}/F1-ETPO01/disqualify", json={"chamber": "PM3", "reason": "arc"}),
        404,
        "recipe.not_qualified",
    )
    response = await client.post(
        f"{base}/F1-ETPO01/disqualify", json={"chamber": "PM2", "reason": "arcing"}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["chamber"], response.json()["standing"]) == ("PM2", False)
    # The tool-wide qualification is untouched.
    rows = (await client.get(base)).json()
    assert [(q["tool"], q["chamber"], q["standing"]) for q in rows] == [
        ("F1-ETPO01", None, True),
        ("F1-ETPO01", "PM2", False),
        ("F1-ETPO02", None, True),
        ("F2-ETPO01", None, True),
    ]
