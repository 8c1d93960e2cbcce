async def test_health(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["schema_revision"] == ready.json()["expected_revision"]


async def test_example_tools_listed(client):
    response = await client.get("/api/v1/equipment", params={"limit": 100})
    assert response.status_code == 200
    assert response.json()["total"] == 30
