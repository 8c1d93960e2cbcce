"""Process exchange: export → import into an empty database → export gives the same document;
imports are all-or-nothing and idempotent."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from mes.clock import FixedClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.main import create_app
from mes.products.models import Product
from mes.recipes.models import Recipe, RecipeVersion
from mes.recipes.rules import body_checksum
from mes.routes.models import RouteVersion
from mes.seed import loader
from tests.api.problems import assert_problem
from tests.conftest import JWT_SECRET, NOW, START, TESTER, _create_test_accounts, bearer
from tests.databases import create_database, drop_database

SIGNATURE = {"reason": "copy-exact from the source fab"}


@pytest.fixture
async def empty_fab(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    """A second MES with the same fabs and tools but no process definitions at all."""
    url = await create_database(tmp_path, "exchange")
    engine = create_engine(Settings(database_url=url, jwt_secret=SecretStr(JWT_SECRET)))
    try:
        await migrate.upgrade(engine)
        bare = loader.read_example().model_copy(
            update={
                "products": [],
                "recipes": [],
                "routes": [],
                "carriers": [],
                "users": [],
                "start_plans": [],
            }
        )
        async with unit_of_work(Database(engine)) as session:
            await loader.load(session, bare, clock=FixedClock(START))
        async with unit_of_work(Database(engine)) as session:
            await _create_test_accounts(session)
        database = Database(engine)
        app = create_app(
            Settings(database_url=url, jwt_secret=SecretStr(JWT_SECRET)),
            database=database,
            clock=FixedClock(NOW),
            background=False,
        )
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://other.fab", headers=bearer(TESTER)
        ) as client:
            yield client, database
    finally:
        await engine.dispose()
        await drop_database(url)


def _definitions(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in ("exported_at", "exported_by")}


async def _export(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/v1/process/export")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    # Only the example's tools exist in the other fab; concurrency tests commit private tools
    # into the shared database, and qualifications on those cannot travel.
    example_tools = {t.code for t in loader.read_example().tools}
    document["qualifications"] = [
        q for q in document["qualifications"] if q["tool"] in example_tools
    ]
    return document


async def _import(client: httpx.AsyncClient, document: dict[str, Any], **extra: Any) -> Any:
    return await client.post(
        "/api/v1/process/import", json={"document": document, "signature": SIGNATURE, **extra}
    )


async def _counts(database: Database) -> tuple[int, int, int, int]:
    async with unit_of_work(database, write=False) as session:
        return (
            await session.scalar(select(func.count()).select_from(Product)) or 0,
            await session.scalar(select(func.count()).select_from(Recipe)) or 0,
            await session.scalar(select(func.count()).select_from(RecipeVersion)) or 0,
            await session.scalar(select(func.count()).select_from(RouteVersion)) or 0,
        )


async def test_round_trip_into_an_empty_database_reproduces_the_definitions(client, empty_fab):
    # A context rule and a withdrawn qualification, so that every section has content.
    response = await client.post(
        "/api/v1/recipes/context-rules",
        json={"logical_recipe": "LI93_GATE", "recipe": "LI93_CONTACT", "tool": "F2-LI9301"},
    )
    assert response.status_code == 201, response.text
    response = await client.post(
        "/api/v1/recipes/LI93_GATE/versions/1/qualifications/F1-LI9302/disqualify",
        json={"reason": "overlay drift after lens service"},
    )
    assert response.status_code == 200, response.text
    source = await _export(client)
    assert source["format"] == "mes-process/1"
    assert {len(source[k]) > 0 for k in ("products", "recipes", "routes", "context_rules")} == {
        True
    }

    other, database = empty_fab
    assert await _counts(database) == (0, 0, 0, 0)
    response = await _import(other, source)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["products"] == {"created": len(source["products"]), "unchanged": 0}
    assert summary["recipe_versions"]["created"] == sum(
        len(r["versions"]) for r in source["recipes"]
    )
    assert summary["qualifications"]["created"] == len(source["qualifications"])

    copied = await _export(other)
    assert _definitions(copied) == _definitions(source)

    # The copy runs exactly what the source approved: same checksums, same approvers.
    gate = next(r for r in copied["recipes"] if r["name"] == "LI93_GATE")
    assert gate["versions"][0]["approved_by"] == "seed.approver"
    assert gate["versions"][0]["checksum"] == body_checksum(gate["versions"][0]["body"])

    # Importing the same document again changes nothing.
    again = (await _import(other, source)).json()
    assert all(kind["created"] == 0 for key, kind in again.items() if key != "dry_run")
    assert again["recipe_versions"]["unchanged"] == summary["recipe_versions"]["created"]


async def test_import_validates_everything_and_applies_nothing_on_a_bad_document(client, empty_fab):
    source = await _export(client)
    other, database = empty_fab
    damaged = copy.deepcopy(source)
    parameter = damaged["recipes"][0]["versions"][0]["body"]["parameters"][0]
    parameter["value"] = parameter["min"]  # still a valid body, but not the one checksummed
    last = damaged["routes"][0]["versions"][0]["steps"][-1]
    last["rework_to_sequence"] = last["sequence"] - 1  # sequences go in tens: no such step
    problem = assert_problem(await _import(other, damaged), 422, "import.invalid")
    messages = [e["msg"] for e in problem["errors"]]
    assert any("checksum does not match" in m for m in messages)
    assert f"rework step {last['sequence'] - 1} does not exist" in messages
    assert await _counts(database) == (0, 0, 0, 0)


async def test_a_version_that_differs_here_is_a_conflict_and_nothing_is_applied(client, empty_fab):
    source = await _export(client)
    other, database = empty_fab
    assert (await _import(other, source)).status_code == 200
    before = await _counts(database)

    changed = copy.deepcopy(source)
    version = changed["recipes"][0]["versions"][0]
    parameter = version["body"]["parameters"][0]
    parameter["value"] = parameter["max"] if parameter["value"] != parameter["max"] else 0
    version["checksum"] = body_checksum(version["body"])
    changed["products"].append({"code": "NEWPROD", "name": "would be new"})
    problem = assert_problem(await _import(other, changed), 409, "import.conflict")
    assert problem["errors"] == [
        {
            "item": f"recipe {changed['recipes'][0]['name']} v1",
            "msg": "exists here with other parameters",
        }
    ]
    assert await _counts(database) == before  # not even the new product


async def test_dry_run_reports_without_applying(client, empty_fab):
    source = await _export(client)
    other, database = empty_fab
    response = await _import(other, source, dry_run=True)
    assert response.status_code == 200, response.text
    assert response.json()["dry_run"] is True
    assert response.json()["route_versions"]["created"] > 0
    assert await _counts(database) == (0, 0, 0, 0)


async def test_import_needs_the_engineer_role_and_a_signature(client, client_as, empty_fab):
    source = await _export(client)
    async with client_as("t-operator") as operator:
        response = await operator.post(
            "/api/v1/process/import", json={"document": source, "signature": SIGNATURE}
        )
        assert response.status_code == 403
    response = await client.post("/api/v1/process/import", json={"document": source})
    assert response.status_code == 422


async def test_export_of_one_product_holds_only_what_it_needs(client):
    response = await client.get("/api/v1/process/export", params={"product": "LOGIC28"})
    assert response.status_code == 200, response.text
    document = response.json()
    assert [p["code"] for p in document["products"]] == ["LOGIC28"]
    assert {r["product"] for r in document["routes"]} == {"LOGIC28"}
    named = {s["recipe"] for r in document["routes"] for v in r["versions"] for s in v["steps"]}
    assert {r["name"] for r in document["recipes"]} == named
    assert (await client.get("/api/v1/process/schema")).json()["title"] == "ProcessDocument"
