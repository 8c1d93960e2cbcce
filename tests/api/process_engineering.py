"""Helpers of the process engineering API tests (``test_process_engineering_*.py``): route
steps, a sound three-step route, lots and track-in, and recipes approved by a second engineer.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import TESTER_PASSWORD

NOW = "2026-01-05T08:00:00Z"  # the `clock` fixture
SIGNED = {"signature": {"reason": "release the new flow"}}
# Once the clock has moved past the login, a signature needs the password again.
SIGNED_WITH_PASSWORD = {"signature": {"reason": "release later", "password": TESTER_PASSWORD}}
ENGINEER_B = "t-engineer"  # engineer role only; `client` (tester) is engineer A


def step(
    sequence: int,
    operation: str | None = None,
    tool_group: str = "WET_CLEAN",
    recipe: str | None = "WETC_PRECLEAN",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "sequence": sequence,
        "operation": operation or f"OP{sequence}",
        "tool_group": tool_group,
        "recipe": recipe,
        "process_time_s": 600,
        **extra,
    }


# A sound three-step route: Q-time 10 -> 20, rework 30 -> 20; every recipe approved and
# qualified for its tool group.
STEPS = [
    step(10, "CLEAN", qtime_to_sequence=20, qtime_max_s=3600),
    step(20, "OXIDE", "FURN_OX", "FUOX_PADOX", batch_min=1, batch_max=6),
    step(30, "MEASURE", "METRO_THK", "METK_MEASURE", rework_to_sequence=20),
]


async def new_route(client: httpx.AsyncClient, code: str, steps=STEPS, product="MONITOR") -> str:
    body = {"code": code, "name": code, "product": product, "steps": steps}
    response = await client.post("/api/v1/routes", json=body)
    assert response.status_code == 201, response.text
    return f"/api/v1/routes/{code}/versions/1"


def sequences(version: dict[str, Any]) -> list[int]:
    return [s["sequence"] for s in version["steps"]]


async def start_lot(client: httpx.AsyncClient, product="LOGIC28", **extra: Any) -> dict[str, Any]:
    body = {"product": product, "fab": "F1", "wafer_count": 2, **extra}
    response = await client.post("/api/v1/lots", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def track_in(client: httpx.AsyncClient, lot: str, tool: str) -> httpx.Response:
    return await client.post(f"/api/v1/lots/{lot}/track-in", json={"tool": tool})


async def approved_recipe(
    author: httpx.AsyncClient,
    approver: httpx.AsyncClient,
    name: str,
    tool_group: str = "WET_CLEAN",
    tools: tuple[str, ...] = (),
    value: float = 60,
) -> dict[str, Any]:
    """A recipe written by one engineer, approved by another, qualified on ``tools``."""
    body = {"parameters": [{"name": "time_s", "value": value, "unit": "s"}]}
    created = await author.post(
        "/api/v1/recipes", json={"name": name, "tool_group": tool_group, "body": body}
    )
    assert created.status_code == 201, created.text
    approved = await approver.post(f"/api/v1/recipes/{name}/versions/1/approve", json=SIGNED)
    assert approved.status_code == 200, approved.text
    for tool in tools:
        qualified = await author.post(
            f"/api/v1/recipes/{name}/versions/1/qualifications", json={"tool": tool}
        )
        assert qualified.status_code == 201, qualified.text
    return approved.json()
