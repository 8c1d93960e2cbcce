"""/openapi.json declares every error answer of every operation, and it is found in the code.

The other half of the agreement — every problem an API test receives is declared for its
operation — is checked on every response by the test clients' hook (tests/contract.py).
"""

from __future__ import annotations

import httpx
import pytest

from mes import contract
from mes.contract import Refusal, refusals_of
from mes.errors import NotFound, RuleViolation, refuses
from mes.main import create_app
from mes.problems import PROBLEM_JSON
from tests.contract import ContractCheck

DOCUMENT = create_app().openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
]


def _declared(method: str, path: str) -> dict[int, list[str]]:
    operation = DOCUMENT["paths"][path][method.lower()]
    return {
        int(status): response["x-problem-codes"]
        for status, response in operation["responses"].items()
        if status >= "400" and path != "/readyz"
    }


def test_every_error_answer_is_a_problem_with_its_codes():
    assert len(OPERATIONS) > 100
    for method, path, operation in OPERATIONS:
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")) or path == "/readyz":
                continue
            assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)
            schema = response["content"][PROBLEM_JSON]["schema"]
            assert schema["allOf"][0] == {"$ref": "#/components/schemas/Problem"}
            codes = response["x-problem-codes"]
            assert codes, (method, path, status)
            assert schema["allOf"][1]["properties"]["code"]["enum"] == codes
    assert "HTTPValidationError" not in DOCUMENT["components"]["schemas"]
    problem = DOCUMENT["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code", "instance"}


def test_authenticated_operations_declare_401_and_guarded_ones_403():
    for method, path, operation in OPERATIONS:
        declared = _declared(method, path)
        if path.startswith("/api/v1") and path != "/api/v1/auth/token":
            assert "auth.unauthenticated" in declared[401], (method, path)
            assert "auth.invalid_token" in declared[401], (method, path)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        if operation.get("security") and any(s for r in operation["security"] for s in r.values()):
            assert "auth.forbidden" in declared[403], (method, path)
        if path != "/readyz":
            assert "request.invalid" in declared[422], (method, path)
        if operation.get("requestBody"):
            assert declared[413] == ["request.too_large"], (method, path)


def test_refusals_are_read_through_the_calls_of_the_endpoint():
    track_in = _declared("POST", "/api/v1/lots/{lot}/track-in")
    # Raised by pure rules (lots.rules), by the lookups (kit.lookup with a literal code), by
    # the equipment PM rules and by the idempotency helper, all below the endpoint.
    assert {"lot.on_hold", "tool.not_available", "tool.wrong_group", "tool.pm_due"} <= set(
        track_in[409]
    )
    assert {"lot.not_found", "tool.not_found"} <= set(track_in[404])
    assert "idempotency.key_reused" in track_in[422]
    assert "mes.stale_version" in track_in[409]
    # A read answers no write conflicts and needs no role.
    get_lot = _declared("GET", "/api/v1/lots/{lot}")
    assert 409 not in get_lot
    assert 403 not in get_lot
    assert get_lot[404] == ["http.not_found", "lot.not_found"]  # the router's own, for "/" in {lot}


def test_codes_computed_at_run_time_are_declared_with_refuses():
    send = _declared("POST", "/api/v1/dispatch/lots/{lot}/where-next")
    assert {"lot.on_hold", "lot.running", "lot.in_transit", "lot.finished"} <= set(send[409])
    scrap = _declared("POST", "/api/v1/lots/{lot}/scrap")
    assert "lot.unknown_scrap_code" in scrap[422]


def _pick(code: str) -> None:
    raise RuleViolation(code, "computed", status=422)


def _caller() -> None:
    _pick("x.literal_passed")
    raise NotFound("no such thing", code="x.not_found")


@refuses("x.declared", status=409)
def _declared_codes() -> None:
    raise RuleViolation(str(object()), "unreadable")


def test_refusals_of_follows_literals_parameters_and_declarations(monkeypatch):
    monkeypatch.setattr(contract, "READ_PACKAGES", ("mes.", "tests."))
    assert refusals_of(_caller) == {Refusal(422, "x.literal_passed"), Refusal(404, "x.not_found")}
    assert refusals_of(_declared_codes) == {Refusal(409, "x.declared")}
    # A computed code that reaches no literal is not guessed.
    assert refusals_of(_pick) == frozenset()


def test_every_route_of_the_app_is_analysed():
    routes = list(contract.api_routes(create_app()))
    assert len(routes) == len(OPERATIONS)
    for route in routes:
        assert contract.VALIDATION in contract.operation_refusals(route), route.path_format


async def test_an_undeclared_problem_fails_the_test_that_received_it():
    check = ContractCheck(DOCUMENT)

    def answer(status: int, code: str) -> httpx.Response:
        request = httpx.Request("GET", "http://mes.test/api/v1/lots/L1")
        body = {"type": "t", "title": "t", "status": status, "detail": "d", "code": code}
        return httpx.Response(
            status, json=body, headers={"content-type": PROBLEM_JSON}, request=request
        )

    await check(answer(404, "lot.not_found"))
    with pytest.raises(AssertionError, match=r"not among its declared codes"):
        await check(answer(404, "tool.not_found"))
    with pytest.raises(AssertionError, match=r"does not declare"):
        await check(answer(409, "lot.on_hold"))
    wrong_type = httpx.Response(
        404, json={}, request=httpx.Request("GET", "http://mes.test/api/v1/lots/L1")
    )
    with pytest.raises(AssertionError, match="error as application/json"):
        await check(wrong_type)


def test_created_answers_declare_location_and_lot_moves_are_linked():
    for method, path, operation in OPERATIONS:
        created = operation["responses"].get("201")
        if created is not None:
            assert created["headers"]["Location"]["required"], (method, path)
    links = DOCUMENT["paths"]["/api/v1/lots"]["post"]["responses"]["201"]["links"]
    targets = {link["operationId"] for link in links.values()}
    ids = {
        (method, path): op["operationId"]
        for path, item in DOCUMENT["paths"].items()
        for method, op in item.items()
    }
    assert ids[("post", "/api/v1/lots/{lot}/track-in")] in targets
    chain = [
        ("/api/v1/lots/{lot}/track-in", "200", "/api/v1/lots/{lot}/track-out"),
        ("/api/v1/lots/{lot}/track-out", "200", "/api/v1/lots/{lot}/hold"),
        ("/api/v1/lots/{lot}/hold", "200", "/api/v1/lots/{lot}/release"),
    ]
    for source, status, target in chain:
        found = DOCUMENT["paths"][source]["post"]["responses"][status]["links"]
        assert ids[("post", target)] in found, (source, target)


async def test_created_resources_are_where_location_says(client):
    started = await client.post(
        "/api/v1/lots", json={"product": "LOGIC28", "fab": "F1", "wafer_count": 5}
    )
    assert started.status_code == 201, started.text
    lot = started.json()["code"]
    assert started.headers["location"] == f"/api/v1/lots/{lot}"
    assert (await client.get(started.headers["location"])).json()["code"] == lot
    fab = await client.post("/api/v1/fabs", json={"code": "F9", "name": "Fab 9"})
    area = await client.post("/api/v1/fabs/F9/areas", json={"code": "ETCH", "name": "Etch"})
    assert fab.headers["location"] == "/api/v1/fabs/F9"
    assert area.headers["location"] == "/api/v1/fabs/F9/areas/ETCH"
    assert (await client.get(area.headers["location"])).status_code == 200
