"""Carriers (FOUPs) through the HTTP API, against the example fab's 40 + 30 carriers."""

from __future__ import annotations

import pytest

from tests.api.problems import assert_problem


@pytest.mark.parametrize(("fab", "count"), [("F1", 40), ("F2", 30)])
async def test_list_carriers_of_one_fab(client, fab, count):
    response = await client.get("/api/v1/carriers", params={"fab": fab, "limit": 100})
    assert response.status_code == 200
    page = response.json()
    assert page["total"] == count
    assert [c["code"] for c in page["items"]] == [f"{fab}-FP{n:04d}" for n in range(1, count + 1)]
    assert {c["fab"] for c in page["items"]} == {fab}
    assert page["items"][0] == {
        "code": f"{fab}-FP0001",
        "fab": fab,
        "capacity": 25,
        "state": "available",
        "uses_since_clean": 0,
        "last_cleaned_at": None,
        "cleanings": 0,
        "location": "stocker",
        "stocker": f"{fab}-STK01",
        "tool": None,
        "port_number": None,
    }


async def test_list_all_carriers_paginated(client):
    page = (await client.get("/api/v1/carriers")).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (70, 50, 0, 50)
    page = (await client.get("/api/v1/carriers", params={"offset": 35, "limit": 10})).json()
    assert (page["total"], page["limit"], page["offset"]) == (70, 10, 35)
    assert [c["code"] for c in page["items"]] == [
        "F1-FP0036",
        "F1-FP0037",
        "F1-FP0038",
        "F1-FP0039",
        "F1-FP0040",
        "F2-FP0001",
        "F2-FP0002",
        "F2-FP0003",
        "F2-FP0004",
        "F2-FP0005",
    ]


async def test_list_filters(client):
    for params, total in (
        ({"state": "available"}, 70),
        ({"state": "dirty"}, 0),
        ({"fab": "F2", "state": "available"}, 30),
        ({"fab": "F9"}, 0),
    ):
        page = (await client.get("/api/v1/carriers", params=params)).json()
        assert page["total"] == total, params


async def test_list_refuses_malformed_filters(client):
    for params in ({"state": "broken"}, {"fab": "F 1"}, {"limit": 501}):
        response = await client.get("/api/v1/carriers", params=params)
        assert_problem(response, 422, "request.invalid")


async def test_get_one_carrier(client):
    response = await client.get("/api/v1/carriers/F2-FP0030")
    assert response.status_code == 200
    assert (response.json()["code"], response.json()["fab"]) == ("F2-FP0030", "F2")
    assert_problem(await client.get("/api/v1/carriers/F2-FP0031"), 404, "carrier.not_found")


async def test_create_carrier(client):
    response = await client.post("/api/v1/carriers", json={"code": "F2-FP0100", "fab": "F2"})
    assert response.status_code == 201, response.text
    assert response.json() == {
        "code": "F2-FP0100",
        "fab": "F2",
        "capacity": 25,
        "state": "available",
        "uses_since_clean": 0,
        "last_cleaned_at": None,
        "cleanings": 0,
        "location": "stocker",
        "stocker": None,
        "tool": None,
        "port_number": None,
    }
    assert (await client.get("/api/v1/carriers/F2-FP0100")).json() == response.json()
    page = (await client.get("/api/v1/carriers", params={"fab": "F2"})).json()
    assert page["total"] == 31
    assert (await client.get("/api/v1/carriers", params={"fab": "F1"})).json()["total"] == 40


async def test_create_carrier_with_a_smaller_capacity(client):
    response = await client.post(
        "/api/v1/carriers", json={"code": "F1-SMIF01", "fab": "F1", "capacity": 13}
    )
    assert response.status_code == 201, response.text
    assert response.json()["capacity"] == 13
    assert (await client.get("/api/v1/carriers/F1-SMIF01")).json()["capacity"] == 13


async def test_duplicate_carrier_is_refused(client):
    # Carrier codes are unique across fabs, not only within one.
    response = await client.post("/api/v1/carriers", json={"code": "F1-FP0001", "fab": "F2"})
    assert_problem(response, 409, "carrier.duplicate")
    assert (await client.get("/api/v1/carriers/F1-FP0001")).json()["fab"] == "F1"


async def test_carrier_in_unknown_fab_is_refused(client):
    response = await client.post("/api/v1/carriers", json={"code": "F9-FP0001", "fab": "F9"})
    assert_problem(response, 404, "fab.not_found")
    assert_problem(await client.get("/api/v1/carriers/F9-FP0001"), 404, "carrier.not_found")


async def test_malformed_carrier_is_refused(client):
    for body in (
        {"code": "F1-FP9999", "fab": "F1", "capacity": 0},
        {"code": "F1-FP9999", "fab": "F1", "capacity": 26},
        {"code": "F1 FP9999", "fab": "F1"},
        {"code": "F1-FP9999"},
    ):
        response = await client.post("/api/v1/carriers", json=body)
        assert_problem(response, 422, "request.invalid")
    assert_problem(await client.get("/api/v1/carriers/F1-FP9999"), 404, "carrier.not_found")
