"""Dispatching through the API: what-next lists, rule sets, where-next across fabs."""

from __future__ import annotations

import pytest

from tests.api.problems import assert_problem

SIGNED = {"reason": "checked on the floor"}


async def start(client, **extra) -> dict:
    body = {"product": "LOGIC28", "fab": "F1", "wafer_count": 5, **extra}
    response = await client.post("/api/v1/lots", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def what_next(client, tool: str) -> dict:
    response = await client.get(f"/api/v1/dispatch/tools/{tool}/list")
    assert response.status_code == 200, response.text
    return response.json()


def ranked(listing: dict, mine: set[str]) -> list[str]:
    return [r["lot"] for r in listing["ranked"] if r["lot"] in mine]


async def test_what_next_ranks_hot_first_and_explains_exclusions(client):
    normal = await start(client)
    hot = await start(client, priority_class="hot")
    held = await start(client)
    placed = await client.post(
        f"/api/v1/lots/{held['code']}/hold", json={"hold_code": "ENGINEERING", "reason": "look"}
    )
    assert placed.status_code == 200, placed.text
    listing = await what_next(client, "F1-WETC01")
    assert listing["rule_set"] == "default"
    mine = {normal["code"], hot["code"], held["code"]}
    assert ranked(listing, mine) == [hot["code"], normal["code"]]
    top = next(r for r in listing["ranked"] if r["lot"] == hot["code"])
    contributions = {c["rule"]: c for c in top["contributions"]}
    assert contributions["priority"]["contribution"] == 500.0
    assert top["score"] == pytest.approx(sum(c["contribution"] for c in top["contributions"]))
    assert top["recipe"] == "WETC_PRECLEAN"
    excluded = {e["lot"]: e for e in listing["excluded"]}
    assert [r["code"] for r in excluded[held["code"]]["reasons"]] == ["lot.on_hold"]
    # Lots of the other fab are not on this fab's tools' lists at all.
    f2 = await start(client, fab="F2")
    assert f2["code"] not in {r["lot"] for r in (await what_next(client, "F1-WETC01"))["ranked"]}


async def test_a_down_tool_offers_nothing_and_says_why(client):
    lot = await start(client)
    version = (await client.get("/api/v1/equipment/F1-WETC02")).json()["version"]
    changed = await client.post(
        "/api/v1/equipment/F1-WETC02/state",
        json={"state": "UDT", "reason": "pump failure", "version": version},
    )
    assert changed.status_code == 200, changed.text
    listing = await what_next(client, "F1-WETC02")
    assert listing["tool_blocked"]["code"] == "tool.not_available"
    assert lot["code"] not in {r["lot"] for r in listing["ranked"]}
    excluded = {e["lot"]: e for e in listing["excluded"]}
    assert [r["code"] for r in excluded[lot["code"]]["reasons"]] == ["tool.not_available"]


async def test_unqualified_tool_excludes_with_tool_not_qualified(client):
    lot = await start(client)
    withdrawn = await client.post(
        "/api/v1/recipes/WETC_PRECLEAN/versions/1/qualifications/F1-WETC02/disqualify",
        json={"reason": "particles on the monitor wafer"},
    )
    assert withdrawn.status_code == 200, withdrawn.text
    listing = await what_next(client, "F1-WETC02")
    excluded = {e["lot"]: e for e in listing["excluded"]}
    assert [r["code"] for r in excluded[lot["code"]]["reasons"]] == ["tool.not_qualified"]
    assert lot["code"] in {r["lot"] for r in (await what_next(client, "F1-WETC01"))["ranked"]}


async def test_rule_sets_are_versioned_scoped_and_validated(client, client_as):
    normal = await start(client)
    hot = await start(client, priority_class="hot")
    fifo_only = {
        "fab": "F1",
        "tool_group": "WET_CLEAN",
        "rules": [{"rule": "fifo", "weight": 1, "params": {"scale_s": 3600}}],
        "note": "plain FIFO on the wet benches",
    }
    engineer = client_as("t-engineer")
    first = await engineer.post("/api/v1/dispatch/rule-sets", json=fifo_only)
    assert first.status_code == 201, first.text
    assert (first.json()["scope"], first.json()["version"]) == ("F1/group/WET_CLEAN", 1)
    listing = await what_next(client, "F1-WETC01")
    assert (listing["rule_set"], listing["rule_set_version"]) == ("F1/group/WET_CLEAN", 1)
    # Same queue time, FIFO only: the tie goes to the lot code, the hot lot has no edge.
    assert ranked(listing, {normal["code"], hot["code"]}) == [normal["code"], hot["code"]]
    assert [c["rule"] for c in listing["ranked"][0]["contributions"]] == ["fifo"]
    # Another fab's tools keep the default.
    assert (await what_next(client, "F2-WETC01"))["rule_set"] == "default"

    second = await engineer.post(
        "/api/v1/dispatch/rule-sets",
        json={**fifo_only, "rules": [{"rule": "priority", "weight": 10}, {"rule": "fifo"}]},
    )
    assert second.json()["version"] == 2
    listing = await what_next(client, "F1-WETC01")
    assert listing["rule_set_version"] == 2
    assert ranked(listing, {normal["code"], hot["code"]}) == [hot["code"], normal["code"]]
    active = (await client.get("/api/v1/dispatch/rule-sets", params={"fab": "F1"})).json()
    assert [(r["scope"], r["version"]) for r in active] == [("F1/group/WET_CLEAN", 2)]
    history = await client.get(
        "/api/v1/dispatch/rule-sets", params={"fab": "F1", "include_history": True}
    )
    assert [(r["version"], r["active"]) for r in history.json()] == [(1, False), (2, True)]

    # A fab default applies to tools with no group or area rule set.
    await engineer.post(
        "/api/v1/dispatch/rule-sets", json={"fab": "F1", "rules": [{"rule": "edd"}]}
    )
    assert (await what_next(client, "F1-ETPO01"))["rule_set"] == "F1"

    bad = await engineer.post(
        "/api/v1/dispatch/rule-sets", json={"fab": "F1", "rules": [{"rule": "magic"}]}
    )
    assert_problem(bad, 422, "dispatch.invalid_rule_set")
    both = await engineer.post(
        "/api/v1/dispatch/rule-sets",
        json={"fab": "F1", "area": "WET", "tool_group": "WET_CLEAN", "rules": []},
    )
    assert_problem(both, 422, "dispatch.invalid_scope")
    denied = await client_as("t-operator").post("/api/v1/dispatch/rule-sets", json=fifo_only)
    assert denied.status_code == 403
    trail = await client.get("/api/v1/audit", params={"operation": "dispatch.publish_rule_set"})
    assert trail.status_code == 200, trail.text
    assert trail.json()["total"] >= 3
    catalogue = (await client.get("/api/v1/dispatch/rules")).json()
    assert {r["rule"] for r in catalogue} >= {"priority", "fifo", "critical_ratio", "setup"}


async def test_where_next_finds_the_only_qualified_tool_in_the_other_fab(client, client_as):
    # IMPL_MC (step 80 of LOGIC28) exists only in F1; a lot in F2 at that step must travel.
    lot = await start(client, fab="F2")
    code = lot["code"]
    jumped = await client.post(
        f"/api/v1/lots/{code}/jump", json={"to_sequence": 80, "signature": SIGNED}
    )
    assert jumped.status_code == 200, jumped.text
    set_time = await client_as("t-engineer").put(
        "/api/v1/dispatch/transfer-times", json={"from_fab": "F2", "to_fab": "F1", "time_s": 7200}
    )
    assert set_time.status_code == 200, set_time.text
    response = await client.get(f"/api/v1/dispatch/lots/{code}/where-next")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["fab"], answer["step_sequence"]) == ("F2", 80)
    assert [(o["tool"], o["fab"]) for o in answer["options"]] == [("F1-IMMC01", "F1")]
    option = answer["options"][0]
    assert option["transfer_s"] == 7200
    assert option["start_in_s"] >= 7200
    # Nothing in F2 can run it: the lot never shows on an F2 list either.
    assert answer["refused"] == []

    nowhere = await client_as("t-operator").post(
        f"/api/v1/dispatch/lots/{code}/where-next", json={"to_fab": "F2"}
    )
    assert_problem(nowhere, 409, "dispatch.no_option")
    sent = await client_as("t-operator").post(
        f"/api/v1/dispatch/lots/{code}/where-next", json={"to_fab": "F1"}
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["state"] == "InTransit"
    history = (await client.get(f"/api/v1/lots/{code}/history")).json()["items"]
    assert history[-1]["event_type"] == "SHIP"
    # A travelling lot gets an answer that says so, not a 404.
    again = (await client.get(f"/api/v1/dispatch/lots/{code}/where-next")).json()
    assert again["lot_blocked"]["code"] == "lot.in_transit"
    assert again["options"] == []


async def test_where_next_compares_fabs_by_load(client):
    lot = await start(client, fab="F2")
    answer = (await client.get(f"/api/v1/dispatch/lots/{lot['code']}/where-next")).json()
    # WET_CLEAN exists in both fabs: the home tool first (no transfer), then F1's two.
    fabs = [o["fab"] for o in answer["options"]]
    assert fabs[0] == "F2"
    assert sorted(fabs[1:]) == ["F1", "F1"]
    assert all(o["transfer_s"] == 4 * 3600 for o in answer["options"][1:])


async def test_unknown_tool_and_lot(client):
    assert_problem(await client.get("/api/v1/dispatch/tools/NOPE/list"), 404, "tool.not_found")
    missing = await client.get("/api/v1/dispatch/lots/L99-9999/where-next")
    assert_problem(missing, 404, "lot.not_found")


async def test_setup_data_is_engineer_edited_and_used(client, client_as):
    engineer = client_as("t-engineer")
    one = await engineer.put(
        "/api/v1/dispatch/setups/changes",
        json={"from_setup": "GATE", "to_setup": "CONTACT", "time_s": 900},
    )
    assert one.status_code == 200, one.text
    anyone = await engineer.put(
        "/api/v1/dispatch/setups/changes", json={"to_setup": "CONTACT", "time_s": 1800}
    )
    assert anyone.status_code == 200, anyone.text
    await engineer.put(
        "/api/v1/dispatch/setups/changes", json={"to_setup": "CONTACT", "time_s": 1200}
    )
    run = await engineer.put(
        "/api/v1/dispatch/setups/min-runs", json={"setup": "GATE", "min_run": 4}
    )
    assert run.status_code == 200, run.text
    data = (await client.get("/api/v1/dispatch/setups")).json()
    assert {(c["from_setup"], c["to_setup"]): c["time_s"] for c in data["changes"]} == {
        ("GATE", "CONTACT"): 900,
        (None, "CONTACT"): 1200,
    }
    assert data["min_runs"] == [{"setup": "GATE", "min_run": 4}]
    denied = await client_as("t-operator").put(
        "/api/v1/dispatch/setups/min-runs", json={"setup": "GATE", "min_run": 1}
    )
    assert denied.status_code == 403


async def test_a_batch_run_under_a_context_rule_takes_lots_resolving_to_the_same_recipe(client):
    """On F1-FUOX01 the pad oxide step's logical recipe FUOX_PADOX runs as FUOX_GATEOX (a
    context rule): a second lot at the step resolves to the same recipe and may join the
    batch — the comparison is between what runs and what would run, not a logical name."""
    rule = await client.post(
        "/api/v1/recipes/context-rules",
        json={"logical_recipe": "FUOX_PADOX", "recipe": "FUOX_GATEOX", "tool": "F1-FUOX01"},
    )
    assert rule.status_code == 201, rule.text
    first, second = (await start(client))["code"], (await start(client))["code"]
    for code in (first, second):
        moved = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01"})
        assert moved.status_code == 200, moved.text
        assert (await client.post(f"/api/v1/lots/{code}/track-out", json={})).status_code == 200
    tin = await client.post(f"/api/v1/lots/{first}/track-in", json={"tool": "F1-FUOX01"})
    assert tin.status_code == 200, tin.text
    assert tin.json()["recipe"]["name"] == "FUOX_GATEOX"
    listing = await what_next(client, "F1-FUOX01")
    excluded = {e["lot"]: [r["code"] for r in e["reasons"]] for e in listing["excluded"]}
    assert second not in excluded, excluded.get(second)
    offered = next(r for r in listing["ranked"] if r["lot"] == second)
    assert offered["recipe"] == "FUOX_GATEOX"
