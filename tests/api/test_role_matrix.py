"""Every route of the API is authenticated, and every mutating route is guarded by roles.

The routes are discovered from the application itself, so an endpoint added later without its
guard fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from mes.auth.roles import ALL_PERMISSIONS, Permission, Role
from mes.main import create_app
from tests.api.problems import assert_problem
from tests.conftest import ROLE_USERS

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
PUBLIC = {"/api/v1/auth/token"}


BY_NAME = {p.name: p for p in ALL_PERMISSIONS}


def _permissions(operation: dict) -> Iterator[Permission]:
    """The permissions an operation declares, as OAuth2 scopes in the OpenAPI document."""
    for requirement in operation.get("security", []):
        for scopes in requirement.values():
            yield from (BY_NAME[s] for s in scopes)


def _operations() -> list[tuple[str, str, list[Permission]]]:
    found = []
    for path, item in create_app().openapi()["paths"].items():
        if path.startswith("/api/v1"):
            for method, operation in item.items():
                found.append((method.upper(), path, list(_permissions(operation))))
    return found


OPERATIONS = _operations()
MUTATING_OPERATIONS = [op for op in OPERATIONS if op[0] in MUTATING and op[1] not in PUBLIC]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def test_the_matrix_covers_the_api():
    assert len(OPERATIONS) > 40
    assert len(MUTATING_OPERATIONS) > 25


@pytest.mark.parametrize(("method", "path", "_g"), MUTATING_OPERATIONS, ids=lambda v: str(v))
def test_every_mutating_operation_names_its_roles(method, path, _g):
    assert len(_g) == 1, f"{method} {path} has no RoleGuard (or more than one)"


@pytest.mark.parametrize(
    ("method", "path"),
    [(m, p) for m, p, _ in OPERATIONS if p not in PUBLIC],
    ids=lambda v: str(v),
)
async def test_no_token_is_401(anonymous, method, path):
    response = await anonymous.request(method, _concrete(path), json={})
    body = assert_problem(response, 401, "auth.unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"
    assert body["instance"] == _concrete(path)


async def test_garbage_and_expired_tokens_are_401(client, anonymous, client_as, clock):
    for header in ("Bearer nonsense", "Bearer mes_000000000000_x", "Basic dXNlcjpwdw=="):
        response = await anonymous.get("/api/v1/fabs", headers={"Authorization": header})
        assert response.status_code == 401
    async with client_as("tester") as old:
        from datetime import timedelta

        clock.advance(timedelta(days=2))
        assert_problem(await old.get("/api/v1/fabs"), 401, "auth.invalid_token")


@pytest.mark.parametrize(("method", "path", "guards"), MUTATING_OPERATIONS, ids=lambda v: str(v))
async def test_roles_outside_the_permission_get_403(client_as, method, path, guards):
    permission = guards[0]
    refused = [r for r in Role if r not in permission.roles]
    assert refused, f"{permission.name} is open to every role"
    for role in refused:
        async with client_as(ROLE_USERS[role]) as caller:
            response = await caller.request(method, _concrete(path), json={})
        assert_problem(response, 403, "auth.forbidden")


@pytest.mark.parametrize(("method", "path", "guards"), MUTATING_OPERATIONS, ids=lambda v: str(v))
async def test_roles_of_the_permission_get_past_the_guard(client_as, method, path, guards):
    for role in guards[0].roles:
        async with client_as(ROLE_USERS[role]) as caller:
            response = await caller.request(method, _concrete(path), json={})
        # The guard let them through: what stops the request now is its content.
        assert response.status_code not in (401, 403), (role, response.text)


async def test_any_role_may_read(client_as):
    for name in ROLE_USERS.values():
        async with client_as(name) as caller:
            assert (await caller.get("/api/v1/equipment")).status_code == 200
            assert (await caller.get("/api/v1/users/me")).json()["username"] == name
