"""Bad input gets a problem+json answer with a stable code, never a 500."""

from __future__ import annotations

import random
import re

import pytest

from tests.api.problems import assert_problem

NASTY_IDS = [
    "x" * 33,
    "%00",
    "a b",
    "ä",
    "..",
    "-leading-dash",
    "' OR 1=1 --",
    "9" * 40,
]
NASTY_BODIES = [
    {},
    [],
    "text",
    None,
    17,
    {"code": "x" * 5000, "name": "n"},
    {"code": None},
    {"version": 2**70},
    {"version": -1, "state": "PRD"},
    {"steps": [{"sequence": 2**63}]},
    {"body": {"parameters": [{"name": "a", "value": {"deep": [1, 2]}}]}},
    {"limit": "∞"},
]


async def test_malformed_json_body(client):
    response = await client.post(
        "/api/v1/fabs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "request.invalid")


async def test_unknown_path_and_method(client):
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "http.not_found")
    assert_problem(await client.delete("/api/v1/fabs/F1"), 405, "http.method_not_allowed")


async def test_path_ids_are_bounded(client):
    assert_problem(await client.get("/api/v1/equipment/" + "A" * 33), 422, "request.invalid")
    assert_problem(
        await client.get("/api/v1/routes/R-LOGIC28/versions/99999999999999999999"),
        422,
        "request.invalid",
    )
    assert_problem(
        await client.get("/api/v1/lots", params={"offset": 10**12}), 422, "request.invalid"
    )


def _operations(app) -> list[tuple[str, str]]:
    ops = []
    for path, item in app.openapi()["paths"].items():
        for method in item:
            ops.append((method.upper(), path))
    return ops


@pytest.mark.parametrize("seed", [1, 2])
async def test_no_operation_answers_500_to_garbage(client, seed):
    """Every operation of the API, with hostile ids and bodies: 4xx problem+json only."""
    rng = random.Random(seed)
    operations = _operations(client._transport.app)
    assert len(operations) > 30
    for method, path in operations:
        for _ in range(3):
            concrete = re.sub(r"\{[^}]+\}", lambda _m: rng.choice([*NASTY_IDS, "F1"]), path)
            body = rng.choice(NASTY_BODIES)
            response = await client.request(method, concrete, json=body)
            assert response.status_code < 500, (method, concrete, body, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
                assert re.fullmatch(r"[a-z_]+\.[a-z_0-9]+", response.json()["code"])
