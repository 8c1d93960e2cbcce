"""Verified bearer tokens are trusted for a while (mes.auth.principals), never past a change."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from mes.auth import principals
from mes.auth.models import AccountKind, User
from mes.auth.principals import PrincipalCache
from mes.auth.service import Principal
from tests.api.problems import assert_problem
from tests.conftest import NOW

SIGNED = {"reason": "account administration"}
SOMEONE = Principal(7, "someone", AccountKind.HUMAN, frozenset(), NOW)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_token_is_trusted_for_the_ttl_only() -> None:
    ticks = Ticks()
    cache = PrincipalCache(5.0, monotonic=ticks)
    cache.put("t", SOMEONE, NOW + timedelta(hours=1), principals.generation())
    ticks.now += 4.9
    assert cache.get("t", NOW) == SOMEONE
    ticks.now += 0.1
    assert cache.get("t", NOW) is None  # read from the database again


def test_a_cached_token_still_expires_on_the_service_clock() -> None:
    cache = PrincipalCache(60.0)
    cache.put("t", SOMEONE, NOW + timedelta(seconds=30), principals.generation())
    assert cache.get("t", NOW + timedelta(seconds=29)) == SOMEONE
    assert cache.get("t", NOW + timedelta(seconds=30)) is None


def test_no_cache_at_ttl_zero_and_no_answer_kept_from_before_a_change() -> None:
    off = PrincipalCache(0.0)
    off.put("t", SOMEONE, None, principals.generation())
    assert off.get("t", NOW) is None
    cache = PrincipalCache(60.0)
    cache.put("t", SOMEONE, None, principals.generation() - 1)  # an account changed meanwhile
    assert cache.get("t", NOW) is None


async def test_an_account_change_flushed_anywhere_voids_every_cached_token(session) -> None:
    principals.install()
    cache = PrincipalCache(60.0)
    cache.put("t", SOMEONE, None, principals.generation())
    user = await session.scalar(select(User).where(User.username == "t-operator"))
    user.display_name = "renamed"
    await session.flush()
    assert cache.get("t", NOW) is None


async def test_deactivating_an_account_refuses_its_cached_token_at_once(client, client_as):
    async with client_as("t-supervisor") as supervisor:
        assert (await supervisor.get("/api/v1/fabs")).status_code == 200  # verified, cached
        user = (await client.get("/api/v1/users/t-supervisor")).json()
        changed = await client.patch(
            "/api/v1/users/t-supervisor",
            json={"version": user["version"], "is_active": False, "signature": SIGNED},
        )
        assert changed.status_code == 200, changed.text
        assert_problem(await supervisor.get("/api/v1/fabs"), 401, "auth.invalid_token")


async def test_a_change_this_process_did_not_make_applies_within_the_ttl(shared_app, db, client_as):
    # Another process (a second worker, the CLI) writing the account is, for this one, a write
    # its ORM never saw: here a Core UPDATE on the test's connection.
    ticks = Ticks()
    shared_app.state.principals[db] = PrincipalCache(5.0, monotonic=ticks)
    async with client_as("t-supervisor") as supervisor:
        assert (await supervisor.get("/api/v1/fabs")).status_code == 200
        async with db.write_sessions() as other:
            await other.execute(
                update(User).where(User.username == "t-supervisor").values(is_active=False)
            )
            await other.commit()
        ticks.now += 4.0
        assert (await supervisor.get("/api/v1/fabs")).status_code == 200  # still trusted
        ticks.now += 1.0
        assert_problem(await supervisor.get("/api/v1/fabs"), 401, "auth.invalid_token")
