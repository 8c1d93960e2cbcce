"""Qualification and context per chamber: a recipe version qualified on one chamber of a
cluster tool runs only there; the chambers used are chosen or named at track-in, checked,
and recorded on the run."""

from __future__ import annotations

import pytest

from mes.errors import RuleViolation
from mes.lots.rules import chambers_to_run
from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import SIGNED, start

TOOL = "F1-ETPO01"
QUALS = "/api/v1/recipes/ETPO_STI/versions/1/qualifications"


async def _only_on_pm1(client) -> None:
    """ETPO_STI v1 (step 50) loses its tool-wide qualification on F1-ETPO01, keeps PM1's."""
    gone = await client.post(f"{QUALS}/{TOOL}/disqualify", json={"reason": "arcing in PM2-4"})
    assert gone.status_code == 200, gone.text
    added = await client.post(QUALS, json={"tool": TOOL, "chamber": "PM1"})
    assert added.status_code == 201, added.text


async def _lot_at_etch(client) -> str:
    code = (await start(client))["code"]
    jumped = await client.post(
        f"/api/v1/lots/{code}/jump", json={"to_sequence": 50, "signature": SIGNED}
    )
    assert jumped.status_code == 200, jumped.text
    return code


async def _chamber_state(client, chamber: str, state: str) -> None:
    tool = (await client.get(f"/api/v1/equipment/{TOOL}")).json()
    changed = await client.post(
        f"/api/v1/equipment/{TOOL}/state",
        json={"version": tool["version"], "state": state, "chamber": chamber, "reason": "test"},
    )
    assert changed.status_code == 200, changed.text


async def test_a_chamber_only_qualification_runs_the_lot_in_that_chamber_only(client):
    await _only_on_pm1(client)
    code = await _lot_at_etch(client)
    elsewhere = await client.post(
        f"/api/v1/lots/{code}/track-in", json={"tool": TOOL, "chambers": ["PM1", "PM2"]}
    )
    assert_problem(elsewhere, 409, "tool.not_qualified")
    assert "PM2" in elsewhere.json()["detail"]

    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": TOOL})
    assert tin.status_code == 200, tin.text
    assert tin.json()["chambers"] == ["PM1"]
    history = (await client.get(f"/api/v1/lots/{code}/history", params={"limit": 100})).json()
    track_in = [e for e in history["items"] if e["event_type"] == "TRACK_IN"][-1]
    assert track_in["after"]["chambers"] == ["PM1"]


async def test_without_a_qualified_chamber_up_the_tool_refuses(client):
    await _only_on_pm1(client)
    await _chamber_state(client, "PM1", "UDT")
    code = await _lot_at_etch(client)
    refused = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": TOOL})
    assert_problem(refused, 409, "tool.not_qualified")
    explained = await client.get("/api/v1/recipes/resolve", params={"lot": code, "tool": TOOL})
    assert explained.status_code == 200, explained.text
    assert (explained.json()["runnable"], explained.json()["refusal"]["code"]) == (
        False,
        "tool.not_qualified",
    )


async def test_named_chambers_must_exist_and_be_up(client):
    code = await _lot_at_etch(client)
    unknown = await client.post(
        f"/api/v1/lots/{code}/track-in", json={"tool": TOOL, "chambers": ["PM9"]}
    )
    assert_problem(unknown, 404, "tool.chamber_not_found")
    await _chamber_state(client, "PM3", "SDT")
    down = await client.post(
        f"/api/v1/lots/{code}/track-in", json={"tool": TOOL, "chambers": ["PM3"]}
    )
    assert_problem(down, 409, "tool.chamber_not_available")
    # Tool-wide qualification: every chamber that is up runs the lot.
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": TOOL})
    assert tin.status_code == 200, tin.text
    assert tin.json()["chambers"] == ["PM1", "PM2", "PM4"]


def test_the_mes_picks_the_version_most_chambers_may_run():
    assert chambers_to_run([("PM1", 7), ("PM2", 8), ("PM3", 8)], asked=False) == ["PM2", "PM3"]
    assert chambers_to_run([("PM1", 7), ("PM2", 8)], asked=False) == ["PM1"]  # tie: first
    assert chambers_to_run([], asked=False) == []
    assert chambers_to_run([("PM1", 7), ("PM2", 7)], asked=True) == ["PM1", "PM2"]
    with pytest.raises(RuleViolation) as refused:
        chambers_to_run([("PM1", 7), ("PM2", 8)], asked=True)
    assert refused.value.code == "recipe.chamber_mismatch"
