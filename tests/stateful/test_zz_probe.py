import asyncio
import time

import pytest


@pytest.fixture
async def loop():
    return asyncio.get_running_loop()


def test_probe(loop, client, connection):
    async def go():
        t = time.perf_counter()
        r = await client.post("/api/v1/lots", json={"product": "LOGIC28", "fab": "F1", "wafer_count": 5})
        code = r.json()["code"]
        t1 = time.perf_counter()
        for _ in range(20):
            await client.get(f"/api/v1/lots/{code}")
        t2 = time.perf_counter()
        for _ in range(20):
            await client.get(f"/api/v1/lots/{code}/history", params={"limit": 500})
        t3 = time.perf_counter()
        for _ in range(20):
            await client.post(f"/api/v1/lots/{code}/priority", json={"priority_class": "hot", "reason": "x"})
        t4 = time.perf_counter()
        sp = await connection.begin_nested()
        await client.post(f"/api/v1/lots/{code}/hold", json={"hold_code": "QUALITY", "reason": "x"})
        await sp.rollback()
        t5 = time.perf_counter()
        print("start", t1 - t, "get", (t2 - t1) / 20, "hist", (t3 - t2) / 20, "prio", (t4 - t3) / 20, "sp", t5-t4)
        print((await client.get("/api/v1/lots")).json()["total"])
        print((await client.get(f"/api/v1/lots/{code}")).json()["state"])
        print((await client.get("/api/v1/equipment", params={"fab": "F1", "tool_group": "WET_CLEAN"})).json())
    loop.run_until_complete(go())
