"""Every creating operation takes an ``Idempotency-Key``: a retry with the same key creates
nothing more and answers the first result; the same key with another body is refused.

The operations come from /openapi.json (every POST that answers 201), so a new creating
endpoint is checked without editing this file's logic: it must declare the header, and it
fails ``test_every_creating_operation_has_a_sample`` until it gets a valid request below.
"Creates nothing more" is measured on the database itself: the row count of every table
(audit trail included) is the same after the retry as after the first request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mes.all_models import Base
from mes.db.engine import Database
from tests.api.problems import assert_problem

KEY = "Idempotency-Key"
SIGNED = {"reason": "idempotency check"}
PLAN_PARAMETER = {"name": "THK", "unit": "nm", "wafers": [1], "sites": 1, "lsl": 80.0, "usl": 120}
NEW_TOOL = {"code": "F1-IDEM01", "name": "t", "fab": "F1", "area": "WET", "tool_group": "WET_CLEAN"}
STEP = {"sequence": 10, "operation": "CLEAN", "tool_group": "WET_CLEAN", "process_time_s": 60}

Request = tuple[str, dict[str, Any]]
Sample = Callable[[httpx.AsyncClient, Any], Awaitable[Request]]


async def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 300, response.text
    return dict(response.json())


async def _lot(client: httpx.AsyncClient) -> str:
    body = {"product": "LOGIC28", "fab": "F1", "wafer_count": 4}
    return str((await _ok(await client.post("/api/v1/lots", json=body)))["code"])


async def _route(client: httpx.AsyncClient) -> str:
    body = {"code": "R-IDEM", "name": "r", "product": "MONITOR", "steps": [STEP]}
    await _ok(await client.post("/api/v1/routes", json=body))
    return "/api/v1/routes/R-IDEM"


async def _plan(client: httpx.AsyncClient) -> None:
    body = {"name": "P-IDEM", "operation": "PAD_OX_CLEAN", "body": {"parameters": [PLAN_PARAMETER]}}
    await _ok(await client.post("/api/v1/quality/plans", json=body))


async def _chart(client: httpx.AsyncClient, client_as: Any) -> int:
    await _plan(client)
    async with client_as("t-engineer") as second:
        signed = {"signature": SIGNED}
        await _ok(await second.post("/api/v1/quality/plans/P-IDEM/versions/1/approve", json=signed))
    body = {"code": "C-IDEM", "plan": "P-IDEM", "parameter": "THK"}
    return int((await _ok(await client.post("/api/v1/quality/charts", json=body)))["id"])


async def _recipe(client: httpx.AsyncClient) -> None:
    body = {
        "name": "R_IDEM",
        "tool_group": "WET_CLEAN",
        "body": {"parameters": [{"name": "t", "value": 1.0}]},
    }
    await _ok(await client.post("/api/v1/recipes", json=body))


def fixed(path: str, body: dict[str, Any]) -> Sample:
    async def sample(_client: httpx.AsyncClient, _client_as: Any) -> Request:
        return path, body

    return sample


async def _area(client: httpx.AsyncClient, client_as: Any) -> Request:
    return "/api/v1/fabs/F1/areas", {"code": "IDEM", "name": "idempotency"}


async def _correction(client: httpx.AsyncClient, client_as: Any) -> Request:
    return "/api/v1/equipment/F1-WETC01/state-corrections", {
        "start_at": "2026-01-05T06:00:00Z",
        "end_at": "2026-01-05T07:00:00Z",
        "substate": "SDT.FACILITIES",
        "reason": "power work logged late",
    }


async def _route_version(client: httpx.AsyncClient, client_as: Any) -> Request:
    return f"{await _route(client)}/versions", {"copy_from": 1}


async def _route_step(client: httpx.AsyncClient, client_as: Any) -> Request:
    return f"{await _route(client)}/versions/1/steps", {**STEP, "sequence": 20}


async def _recipe_version(client: httpx.AsyncClient, client_as: Any) -> Request:
    await _recipe(client)
    return "/api/v1/recipes/R_IDEM/versions", {"body": {"parameters": [{"name": "t", "value": 2}]}}


async def _qualification(client: httpx.AsyncClient, client_as: Any) -> Request:
    # Every tool of the example fab is qualified: a new wet bench is not yet.
    await _ok(await client.post("/api/v1/equipment", json=NEW_TOOL))
    return "/api/v1/recipes/WETC_PRECLEAN/versions/1/qualifications", {"tool": NEW_TOOL["code"]}


async def _future_action(client: httpx.AsyncClient, client_as: Any) -> Request:
    body = {"step_sequence": 30, "hold_code": "QUALITY", "reason": "look at it"}
    return f"/api/v1/lots/{await _lot(client)}/future-actions", body


async def _split(client: httpx.AsyncClient, client_as: Any) -> Request:
    lot = await _lot(client)
    detail = await _ok(await client.get(f"/api/v1/lots/{lot}"))
    return f"/api/v1/lots/{lot}/split", {"wafers": [detail["wafers"][0]["scribe_id"]]}


async def _sorter_job(client: httpx.AsyncClient, client_as: Any) -> Request:
    body = {"product": "LOGIC28", "fab": "F1", "wafer_count": 4, "carrier": "F1-FP0010"}
    lot = await _ok(await client.post("/api/v1/lots", json=body))
    detail = await _ok(await client.get(f"/api/v1/lots/{lot['code']}"))
    wafer = detail["wafers"][0]["scribe_id"]
    return "/api/v1/sorter-jobs", {
        "kind": "split",
        "lot": lot["code"],
        "wafers": [wafer],
        "carrier": "F1-FP0011",
    }


async def _job(client: httpx.AsyncClient, client_as: Any) -> Request:
    return f"/api/v1/lots/{await _lot(client)}/jobs", {"tool": "F1-WETC01"}


async def _batch(client: httpx.AsyncClient, client_as: Any) -> Request:
    return "/api/v1/jobs", {"tool": "F1-WETC01", "lots": [await _lot(client), await _lot(client)]}


async def _plan_version(client: httpx.AsyncClient, client_as: Any) -> Request:
    await _plan(client)
    return "/api/v1/quality/plans/P-IDEM/versions", {"parameters": [PLAN_PARAMETER]}


async def _chart_sample(client: httpx.AsyncClient, client_as: Any) -> Request:
    await _plan(client)
    async with client_as("t-engineer") as second:
        signed = {"signature": SIGNED}
        await _ok(await second.post("/api/v1/quality/plans/P-IDEM/versions/1/approve", json=signed))
    return "/api/v1/quality/charts", {"code": "C-IDEM", "plan": "P-IDEM", "parameter": "THK"}


async def _limits(client: httpx.AsyncClient, client_as: Any) -> Request:
    chart = await _chart(client, client_as)
    return f"/api/v1/quality/charts/{chart}/limits", {
        "center": 100.0,
        "sigma": 1.0,
        "reason": "set by hand",
    }


# One valid request per creating operation (path template -> how to build it).
SAMPLES: dict[str, Sample] = {
    "/api/v1/fabs": fixed("/api/v1/fabs", {"code": "F9", "name": "Fab 9"}),
    "/api/v1/fabs/{fab}/areas": _area,
    "/api/v1/tool-groups": fixed(
        "/api/v1/tool-groups",
        {"code": "TG_IDEM", "name": "tg", "processing_kind": "single_wafer"},
    ),
    "/api/v1/equipment": fixed("/api/v1/equipment", NEW_TOOL),
    "/api/v1/equipment/{tool}/state-corrections": _correction,
    "/api/v1/e10-substates": fixed(
        "/api/v1/e10-substates", {"code": "SDT.IDEM_CHECK", "description": "d"}
    ),
    "/api/v1/pm/plans": fixed(
        "/api/v1/pm/plans",
        {
            "code": "PM-IDEM",
            "name": "pm",
            "tool": "F1-WETC01",
            "trigger": "calendar",
            "interval": 7,
        },
    ),
    "/api/v1/products": fixed("/api/v1/products", {"code": "P-IDEM", "name": "p"}),
    "/api/v1/routes": fixed(
        "/api/v1/routes", {"code": "R-IDEM", "name": "r", "product": "MONITOR", "steps": [STEP]}
    ),
    "/api/v1/routes/{route}/versions": _route_version,
    "/api/v1/routes/{route}/versions/{version}/steps": _route_step,
    "/api/v1/recipes/context-rules": fixed(
        "/api/v1/recipes/context-rules",
        {"logical_recipe": "WETC_PRECLEAN", "recipe": "WETC_STRIP", "tool": "F1-WETC01"},
    ),
    "/api/v1/recipes": fixed(
        "/api/v1/recipes",
        {
            "name": "R_IDEM",
            "tool_group": "WET_CLEAN",
            "body": {"parameters": [{"name": "t", "value": 1}]},
        },
    ),
    "/api/v1/recipes/{recipe}/versions": _recipe_version,
    "/api/v1/recipes/{recipe}/versions/{version}/qualifications": _qualification,
    "/api/v1/lots": fixed("/api/v1/lots", {"product": "LOGIC28", "fab": "F1"}),
    "/api/v1/lots/bulk-start": fixed(
        "/api/v1/lots/bulk-start", {"product": "LOGIC28", "fab": "F1", "count": 3}
    ),
    "/api/v1/lots/{lot}/future-actions": _future_action,
    "/api/v1/lots/{lot}/split": _split,
    "/api/v1/lots/{lot}/jobs": _job,
    "/api/v1/jobs": _batch,
    "/api/v1/sorter-jobs": _sorter_job,
    "/api/v1/start-plans": fixed(
        "/api/v1/start-plans",
        {"code": "SP-IDEM", "fab": "F1", "product": "LOGIC28", "rate": 2, "active": False},
    ),
    "/api/v1/dispatch/rule-sets": fixed(
        "/api/v1/dispatch/rule-sets",
        {"fab": "F1", "rules": [{"rule": "fifo", "weight": 1}], "note": "idempotency"},
    ),
    "/api/v1/hold-codes": fixed(
        "/api/v1/hold-codes",
        {"code": "IDEM_HOLD", "description": "d", "release_role": "supervisor"},
    ),
    "/api/v1/carriers": fixed("/api/v1/carriers", {"code": "F1-IDEM", "fab": "F1"}),
    "/api/v1/durables": fixed(
        "/api/v1/durables", {"code": "RT-IDEM-A", "design": "RT-IDEM", "fab": "F1"}
    ),
    "/api/v1/users": fixed(
        "/api/v1/users",
        {
            "username": "idem-user",
            "display_name": "Idem",
            "roles": ["operator"],
            "password": "a long enough passphrase",
            "signature": SIGNED,
        },
    ),
    "/api/v1/users/{username}/certifications": fixed(
        "/api/v1/users/t-operator/certifications",
        {"tool_group": "LITHO_193", "signature": SIGNED},
    ),
    "/api/v1/users/{username}/tokens": fixed(
        "/api/v1/users/t-equipment/tokens", {"name": "idempotency"}
    ),
    "/api/v1/quality/plans": fixed(
        "/api/v1/quality/plans",
        {"name": "P-IDEM", "operation": "PAD_OX_CLEAN", "body": {"parameters": [PLAN_PARAMETER]}},
    ),
    "/api/v1/quality/plans/{plan}/versions": _plan_version,
    "/api/v1/quality/charts": _chart_sample,
    "/api/v1/quality/charts/{chart_id}/limits": _limits,
}


def _creating_operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        path: item["post"]
        for path, item in document["paths"].items()
        if "post" in item and "201" in item["post"]["responses"]
    }


async def _row_counts(db: Database) -> dict[str, int]:
    async with db.read_sessions() as session:
        return {
            table.name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await client.get("/openapi.json")).json())


async def test_every_creating_operation_declares_the_key_and_its_refusal(client):
    operations = _creating_operations(await _document(client))
    assert len(operations) >= 30  # the walk reads the real document, not an empty one
    for path, operation in operations.items():
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert KEY in headers, f"POST {path} creates but takes no {KEY}"
        codes = operation["responses"].get("422", {}).get("x-problem-codes", [])
        assert "idempotency.key_reused" in codes, f"POST {path} does not declare key reuse"


async def test_every_creating_operation_has_a_sample(client):
    operations = set(_creating_operations(await _document(client)))
    assert operations - set(SAMPLES) == set(), "add a valid request for each to SAMPLES"
    assert set(SAMPLES) - operations == set(), "SAMPLES names operations that no longer create"


@pytest.mark.parametrize("template", sorted(SAMPLES))
async def test_a_retry_with_the_same_key_creates_one_thing(client, client_as, db, template):
    path, body = await SAMPLES[template](client, client_as)
    headers = {KEY: f"idem-{abs(hash(template)):x}"[:64]}
    before = await _row_counts(db)
    first = await client.post(path, json=body, headers=headers)
    assert first.status_code == 201, first.text
    after_first = await _row_counts(db)
    assert after_first != before, "the first request created nothing"

    retry = await client.post(path, json=body, headers=headers)
    if retry.status_code == 409:
        # An answer holding a secret (an API token) is not stored: the retry is told so.
        assert_problem(retry, 409, "idempotency.answer_withheld")
    else:
        assert retry.status_code == 201, retry.text
        assert retry.headers.get("idempotent-replayed") == "true"
        assert retry.json() == first.json()
    assert await _row_counts(db) == after_first, "the retry changed the database"

    # Another body under the same key (the key is bound to the bytes it first came with).
    other = json.dumps(body, indent=2).encode()
    reused = await client.post(
        path, content=other, headers={**headers, "content-type": "application/json"}
    )
    assert_problem(reused, 422, "idempotency.key_reused")
    assert await _row_counts(db) == after_first

    # Without a key the same request is a new request (refused here as a duplicate, or
    # creating a second thing): the key, not the body, makes a retry.
    again = await client.post(path, json=body)
    assert again.status_code != 500, again.text


async def test_a_token_retry_does_not_reveal_the_secret_twice(client):
    headers = {KEY: "token-idem-0001"}
    url = "/api/v1/users/t-equipment/tokens"
    first = await client.post(url, json={"name": "once"}, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["token"]
    retry = await client.post(url, json={"name": "once"}, headers=headers)
    problem = assert_problem(retry, 409, "idempotency.answer_withheld")
    assert first.json()["token"] not in retry.text
    assert "token" not in problem
    listed = (await client.get(url)).json()
    assert [t["name"] for t in listed].count("once") == 1


async def test_a_key_is_per_caller(client, client_as, clock):
    # Two callers may pick the same key: each gets their own operation.
    headers = {KEY: "shared-key-0001"}
    body = {"code": "P-MINE", "name": "mine"}
    assert (await client.post("/api/v1/products", json=body, headers=headers)).status_code == 201
    clock.advance(timedelta(seconds=1))
    async with client_as("t-engineer") as other:
        theirs = await other.post(
            "/api/v1/products", json={"code": "P-THEIRS", "name": "t"}, headers=headers
        )
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["code"] == "P-THEIRS"
