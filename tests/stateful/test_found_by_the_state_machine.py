"""Regression tests for the bugs the lot state machine test found (shrunk to their essence)."""

from __future__ import annotations

from typing import Any

from tests.api.problems import assert_problem

SIGNED = {"reason": "checked on the floor"}


async def start(client, **extra) -> dict[str, Any]:
    body = {"product": "LOGIC28", "fab": "F1", "wafer_count": 3, **extra}
    response = await client.post("/api/v1/lots", json=body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def wafers_of(client, code: str) -> list[str]:
    detail = (await client.get(f"/api/v1/lots/{code}")).json()
    return [w["scribe_id"] for w in detail["wafers"] if w["state"] == "active"]


async def scrap(client, code: str, wafers: list[str]):
    return await client.post(
        f"/api/v1/lots/{code}/scrap",
        json={"wafers": wafers, "reason_code": "BROKEN", "signature": SIGNED},
    )


async def test_a_travelling_lot_cannot_be_scrapped(client):
    # Scrapping the last wafer ended the lot while it was still InTransit: the database refused
    # the Scrapped lot with a destination (409 db.constraint_violated).
    code = (await start(client))["code"]
    wafers = await wafers_of(client, code)
    shipped = await client.post(f"/api/v1/lots/{code}/ship", json={"to_fab": "F2"})
    assert shipped.status_code == 200, shipped.text
    assert_problem(await scrap(client, code, wafers), 409, "lot.in_transit")
    received = await client.post(f"/api/v1/lots/{code}/receive", json={})
    assert received.json()["state"] == "Waiting"
    scrapped = await scrap(client, code, wafers)
    assert scrapped.status_code == 200, scrapped.text
    assert (scrapped.json()["state"], scrapped.json()["fab"]) == ("Scrapped", "F2")


async def test_scrapping_a_running_lot_to_nothing_frees_its_tool(client):
    # The lot ended but its tool stayed productive (PRD) with no lot on it.
    first, second = (await start(client))["code"], (await start(client))["code"]
    for code in (first, second):  # the wet bench takes two lots
        tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01"})
        assert tin.status_code == 200, tin.text
    assert (await scrap(client, first, await wafers_of(client, first))).json()["state"] == (
        "Scrapped"
    )
    tool = (await client.get("/api/v1/equipment/F1-WETC01")).json()
    assert tool["e10_state"] == "PRD"  # the second lot still runs
    assert (await scrap(client, second, await wafers_of(client, second))).status_code == 200
    tool = (await client.get("/api/v1/equipment/F1-WETC01")).json()
    assert tool["e10_state"] == "SBY"
    # The tool takes the next lot.
    third = (await start(client))["code"]
    tin = await client.post(f"/api/v1/lots/{third}/track-in", json={"tool": "F1-WETC01"})
    assert tin.status_code == 200, tin.text


async def bonus(client, code: str, count: int = 1) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/lots/{code}/bonus", json={"count": count, "reason_code": "FOUND"}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_bonus_wafers_get_unique_scribe_ids_when_their_slot_was_split_off(client):
    # The second bonus wafer for a slot whose wafers had left with splits got the first one's
    # id (both suffixed with the same timestamp): 409 db.constraint_violated.
    code = (await start(client))["code"]
    for expected in (f"{code}-W03B1", f"{code}-W03B2"):
        split = await client.post(f"/api/v1/lots/{code}/split", json={"wafers": [f"{code}-W03"]})
        if split.status_code != 201:  # the second time, slot 3 holds the first bonus wafer
            moving = [w for w in await wafers_of(client, code) if w.startswith(f"{code}-W03")]
            split = await client.post(f"/api/v1/lots/{code}/split", json={"wafers": moving})
        assert split.status_code == 201, split.text
        assert (await bonus(client, code))["wafer_count"] == 3
        assert expected in await wafers_of(client, code)


async def test_long_lot_codes_keep_scribe_ids_within_their_column(client):
    # A lot code of 29-32 characters, or a bonus wafer in a long-named lot, made a scribe id
    # longer than its 32 characters: a 500 on PostgreSQL.
    too_long = await client.post(
        "/api/v1/lots", json={"product": "LOGIC28", "fab": "F1", "code": "K" * 29}
    )
    assert_problem(too_long, 422, "request.invalid")
    code = (await start(client, code="K" * 28))["code"]
    assert all(len(w) == 32 for w in await wafers_of(client, code))
    split = await client.post(f"/api/v1/lots/{code}/split", json={"wafers": [f"{code}-W01"]})
    assert split.status_code == 201, split.text
    child = split.json()["child"]["code"]  # 31 characters
    for lot in (code, child, code):
        grown = await bonus(client, lot, 2)
        scribes = await wafers_of(client, lot)
        assert len(scribes) == grown["wafer_count"]
        assert all(len(w) <= 32 for w in scribes), scribes
