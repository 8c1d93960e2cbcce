from datetime import timedelta

from tests.api.problems import assert_problem

NEW_TOOL = {
    "code": "F1-ETPO09",
    "name": "Poly etch 9",
    "fab": "F1",
    "area": "ETCH",
    "tool_group": "ETCH_POLY",
    "opcua_endpoint": "opc.tcp://127.0.0.1:4999/F1-ETPO09",
    "chambers": ["PM1", "PM2"],
    "load_ports": 3,
}


async def test_filters_by_fab_area_group_and_state(client):
    f2 = (await client.get("/api/v1/equipment", params={"fab": "F2", "limit": 100})).json()
    assert f2["total"] == 12
    assert {t["fab"] for t in f2["items"]} == {"F2"}
    litho = (
        await client.get("/api/v1/equipment", params={"fab": "F1", "tool_group": "LITHO_193"})
    ).json()
    assert [t["code"] for t in litho["items"]] == ["F1-LI9301", "F1-LI9302"]
    etch = (await client.get("/api/v1/equipment", params={"area": "ETCH", "limit": 100})).json()
    assert {t["tool_group"] for t in etch["items"]} == {"ETCH_POLY", "ETCH_OXIDE"}
    down = (await client.get("/api/v1/equipment", params={"state": "UDT"})).json()
    assert down["total"] == 0


async def test_cluster_and_batch_tools_carry_their_structure(client):
    etch = (await client.get("/api/v1/equipment/F1-ETPO01")).json()
    assert [c["name"] for c in etch["chambers"]] == ["PM1", "PM2", "PM3", "PM4"]
    assert (etch["e10_state"], etch["e10_substate"]) == ("SBY", "SBY.NO_PRODUCT")
    furnace = (await client.get("/api/v1/equipment/F2-FUOX01")).json()
    assert furnace["max_lots"] == 6
    assert [p["port_number"] for p in furnace["load_ports"]] == [1, 2, 3, 4]
    assert furnace["opcua_endpoint"].startswith("opc.tcp://127.0.0.1:")


async def test_install_tool_records_first_state(client, clock):
    created = await client.post("/api/v1/equipment", json=NEW_TOOL)
    assert created.status_code == 201, created.text
    tool = created.json()
    assert tool["version"] == 1
    assert tool["state_since"] == clock.now().isoformat().replace("+00:00", "Z")
    history = (await client.get("/api/v1/equipment/F1-ETPO09/state-history")).json()
    assert history["total"] == 1
    assert history["items"][0]["to_state"] == "SBY"
    assert history["items"][0]["from_state"] is None
    assert history["items"][0]["actor"] == "tester"


async def test_install_refuses_bad_references(client):
    dup = await client.post("/api/v1/equipment", json={**NEW_TOOL, "code": "F1-ETPO01"})
    assert_problem(dup, 409, "tool.duplicate")
    wrong_area = await client.post("/api/v1/equipment", json={**NEW_TOOL, "area": "NOPE"})
    assert_problem(wrong_area, 404, "area.not_found")
    wrong_group = await client.post("/api/v1/equipment", json={**NEW_TOOL, "tool_group": "NOPE"})
    assert_problem(wrong_group, 404, "tool_group.not_found")
    twin = await client.post("/api/v1/equipment", json={**NEW_TOOL, "chambers": ["PM1", "PM1"]})
    assert_problem(twin, 422, "request.invalid")
    endpoint = await client.post(
        "/api/v1/equipment", json={**NEW_TOOL, "opcua_endpoint": "http://x"}
    )
    assert_problem(endpoint, 422, "request.invalid")


async def test_update_needs_current_version(client):
    tool = (await client.get("/api/v1/equipment/F1-IMHC01")).json()
    ok = await client.patch(
        "/api/v1/equipment/F1-IMHC01", json={"version": tool["version"], "max_lots": 2}
    )
    assert ok.status_code == 200
    assert ok.json()["version"] == tool["version"] + 1
    assert ok.json()["max_lots"] == 2
    stale = await client.patch(
        "/api/v1/equipment/F1-IMHC01", json={"version": tool["version"], "name": "late writer"}
    )
    body = assert_problem(stale, 409, "tool.stale_version")
    assert body["current_version"] == tool["version"] + 1
    assert (await client.get("/api/v1/equipment/F1-IMHC01")).json()["name"] != "late writer"


async def test_state_change_is_recorded_with_history(client, clock):
    tool = (await client.get("/api/v1/equipment/F2-LI9301")).json()
    clock.advance(timedelta(minutes=30))
    changed = await client.post(
        "/api/v1/equipment/F2-LI9301/state",
        json={
            "version": tool["version"],
            "state": "UDT",
            "substate": "UDT.REPAIR",
            "reason": "stage error",
        },
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["e10_state"] == "UDT"
    assert changed.json()["version"] == tool["version"] + 1
    history = (await client.get("/api/v1/equipment/F2-LI9301/state-history")).json()
    latest = history["items"][0]
    assert (latest["from_state"], latest["to_state"], latest["substate"]) == (
        "SBY",
        "UDT",
        "UDT.REPAIR",
    )
    assert (latest["reason"], latest["actor"]) == ("stage error", "tester")
    down = (await client.get("/api/v1/equipment", params={"state": "UDT"})).json()
    assert [t["code"] for t in down["items"]] == ["F2-LI9301"]


async def test_chamber_state_changes_only_the_chamber(client):
    tool = (await client.get("/api/v1/equipment/F1-DCVD01")).json()
    changed = await client.post(
        "/api/v1/equipment/F1-DCVD01/state",
        json={"version": tool["version"], "state": "SDT", "substate": "SDT.PM", "chamber": "PM2"},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["e10_state"] == "SBY"
    assert {c["name"]: c["e10_state"] for c in body["chambers"]} == {
        "PM1": "SBY",
        "PM2": "SDT",
        "PM3": "SBY",
    }
    assert body["version"] == tool["version"] + 1
    history = (await client.get("/api/v1/equipment/F1-DCVD01/state-history")).json()
    assert history["items"][0]["chamber"] == "PM2"


async def test_state_change_refusals(client, clock):
    tool = (await client.get("/api/v1/equipment/F1-METK01")).json()
    url = "/api/v1/equipment/F1-METK01/state"
    v = tool["version"]
    assert_problem(
        await client.post(url, json={"version": v, "state": "PRD", "substate": "SDT.PM"}),
        422,
        "tool.invalid_substate",
    )
    assert_problem(
        await client.post(url, json={"version": v, "state": "SDT", "chamber": "PM9"}),
        404,
        "tool.chamber_not_found",
    )
    future = (clock.now() + timedelta(hours=1)).isoformat()
    assert_problem(
        await client.post(url, json={"version": v, "state": "SDT", "occurred_at": future}),
        422,
        "tool.future_time",
    )
    before = (clock.now() - timedelta(days=30)).isoformat()
    assert_problem(
        await client.post(url, json={"version": v, "state": "SDT", "occurred_at": before}),
        422,
        "tool.time_before_current_state",
    )
    naive = await client.post(
        url, json={"version": v, "state": "SDT", "occurred_at": "2026-01-05T07:00:00"}
    )
    assert_problem(naive, 422, "request.invalid")
    assert_problem(
        await client.post(url, json={"version": v + 5, "state": "SDT"}), 409, "tool.stale_version"
    )
    assert_problem(
        await client.post(url, json={"version": v, "state": "XYZ"}), 422, "request.invalid"
    )
    # None of the refusals changed anything.
    after = (await client.get("/api/v1/equipment/F1-METK01")).json()
    assert (after["version"], after["e10_state"]) == (v, "SBY")


async def test_state_history_since_filter_needs_aware_time(client, clock):
    url = "/api/v1/equipment/F1-METK01/state-history"
    assert_problem(
        await client.get(url, params={"since": "2026-01-01T00:00:00"}), 422, "request.invalid"
    )
    later = (clock.now() + timedelta(days=1)).isoformat()
    assert (await client.get(url, params={"since": later})).json()["total"] == 0


async def test_state_change_retry_with_idempotency_key_applies_once(client):
    tool = (await client.get("/api/v1/equipment/F2-METK01")).json()
    body = {"version": tool["version"], "state": "ENG", "reason": "adapter retry"}
    headers = {"Idempotency-Key": "opcua-F2-METK01-000042"}
    first = await client.post("/api/v1/equipment/F2-METK01/state", json=body, headers=headers)
    retry = await client.post("/api/v1/equipment/F2-METK01/state", json=body, headers=headers)
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    history = (await client.get("/api/v1/equipment/F2-METK01/state-history")).json()
    assert [e["to_state"] for e in history["items"]] == ["ENG", "SBY"]
