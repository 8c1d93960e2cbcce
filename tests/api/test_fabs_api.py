from tests.api.problems import assert_problem


async def test_example_network_has_two_fabs(client):
    body = (await client.get("/api/v1/fabs")).json()
    assert [f["code"] for f in body["items"]] == ["F1", "F2"]
    assert body["total"] == 2
    assert body["items"][0]["timezone"] == "Europe/Berlin"


async def test_create_read_update_fab(client):
    created = await client.post(
        "/api/v1/fabs", json={"code": "F9", "name": "Fab 9", "timezone": "Asia/Singapore"}
    )
    assert created.status_code == 201, created.text
    updated = await client.patch("/api/v1/fabs/F9", json={"name": "Fab 9 Singapore"})
    assert updated.json()["name"] == "Fab 9 Singapore"
    assert updated.json()["timezone"] == "Asia/Singapore"
    assert (await client.get("/api/v1/fabs/F9")).json()["name"] == "Fab 9 Singapore"


async def test_duplicate_fab_is_a_conflict(client):
    response = await client.post("/api/v1/fabs", json={"code": "F1", "name": "again"})
    assert_problem(response, 409, "fab.duplicate")


async def test_unknown_time_zone_is_refused(client):
    response = await client.post(
        "/api/v1/fabs", json={"code": "F8", "name": "x", "timezone": "Mars/Olympus"}
    )
    body = assert_problem(response, 422, "request.invalid")
    assert body["errors"][0]["loc"] == ["body", "timezone"]


async def test_unknown_fab_is_not_found(client):
    assert_problem(await client.get("/api/v1/fabs/NOPE"), 404, "fab.not_found")
    assert_problem(await client.get("/api/v1/fabs/NOPE/areas"), 404, "fab.not_found")


async def test_areas_belong_to_their_fab(client):
    areas = (await client.get("/api/v1/fabs/F1/areas")).json()
    assert areas["total"] == 7
    assert {a["fab"] for a in areas["items"]} == {"F1"}
    created = await client.post("/api/v1/fabs/F2/areas", json={"code": "CMP", "name": "Polish"})
    assert created.status_code == 201
    assert created.json() == {"fab": "F2", "code": "CMP", "name": "Polish"}
    # The same code may exist in another fab, but not twice in one.
    assert (
        await client.post("/api/v1/fabs/F1/areas", json={"code": "CMP", "name": "P"})
    ).status_code == 201
    dup = await client.post("/api/v1/fabs/F2/areas", json={"code": "CMP", "name": "again"})
    assert_problem(dup, 409, "area.duplicate")
    assert_problem(await client.get("/api/v1/fabs/F1/areas/NOPE"), 404, "area.not_found")
    renamed = await client.patch("/api/v1/fabs/F2/areas/CMP", json={"name": "CMP bay"})
    assert renamed.json()["name"] == "CMP bay"


async def test_tool_groups_are_shared_capabilities(client):
    listed = (await client.get("/api/v1/tool-groups", params={"processing_kind": "batch"})).json()
    assert {g["code"] for g in listed["items"]} == {"FURN_OX", "FURN_ANNEAL"}
    created = await client.post(
        "/api/v1/tool-groups",
        json={"code": "CMP_OXIDE", "name": "Oxide CMP", "processing_kind": "single_wafer"},
    )
    assert created.status_code == 201
    assert_problem(
        await client.post(
            "/api/v1/tool-groups",
            json={"code": "CMP_OXIDE", "name": "x", "processing_kind": "single_wafer"},
        ),
        409,
        "tool_group.duplicate",
    )
    bad_kind = await client.post(
        "/api/v1/tool-groups", json={"code": "X1", "name": "x", "processing_kind": "quantum"}
    )
    assert_problem(bad_kind, 422, "request.invalid")
    renamed = await client.patch("/api/v1/tool-groups/CMP_OXIDE", json={"name": "Oxide polish"})
    assert renamed.json() == {
        "code": "CMP_OXIDE",
        "name": "Oxide polish",
        "processing_kind": "single_wafer",
    }


async def test_pagination_reports_total_and_window(client):
    first = (await client.get("/api/v1/equipment", params={"limit": 7})).json()
    second = (await client.get("/api/v1/equipment", params={"limit": 7, "offset": 7})).json()
    assert first["total"] == second["total"] == 30
    assert len(first["items"]) == len(second["items"]) == 7
    assert not {t["code"] for t in first["items"]} & {t["code"] for t in second["items"]}
    assert (first["limit"], first["offset"], second["offset"]) == (7, 0, 7)
