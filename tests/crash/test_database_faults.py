"""The database refuses, stalls or drops connections (a TCP proxy in front of PostgreSQL that
the test controls): requests fail fast with 503 problem+json and Retry-After, change nothing,
/readyz says not ready, and the service recovers by itself once the database is back. SQLite: a
locked database gives a retryable 503 ``db.locked``, not a crash."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from mes.auth.tokens import issue_access_token
from mes.check.invariants import check_database
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import migrate, throwaway
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.lots.models import Lot
from mes.main import create_app
from mes.seed import loader
from tests.crash.proxy import Proxy

DATABASE_URL = os.environ.get("MES_TEST_DATABASE_URL", "")
SECRET = "faults-signing-key-0123456789abcdef"
# What the service may take to give up on an unavailable database (connect 1 s, statement 2 s,
# pool 1 s in these tests), with room for a loaded machine.
FAIL_FAST_S = 10.0
START_LOT = {"product": "LOGIC28", "fab": "F1", "wafer_count": 5}


def _headers(key: str | None = None) -> dict[str, str]:
    now = SystemClock().now()
    token = issue_access_token(
        "engineer", secret=SECRET, now=now, ttl=timedelta(hours=1), auth_time=now
    )
    return {"Authorization": f"Bearer {token}", **({"Idempotency-Key": key} if key else {})}


async def _prepared(url: str) -> Database:
    db = Database(create_engine(Settings(database_url=url)))
    await migrate.upgrade(db.engine)
    async with unit_of_work(db) as session:
        await loader.load(session, loader.read_example(), clock=SystemClock())
    return db


async def _lots(db: Database) -> int:
    async with unit_of_work(db, write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(Lot)) or 0)


def _settings(url: str, **extra: Any) -> Settings:
    return Settings(
        database_url=url,
        jwt_secret=SecretStr(SECRET),
        database_connect_timeout_s=1,
        database_command_timeout_s=2,
        database_pool_timeout_s=1,
        **extra,
    )


async def _timed(coro: Any) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = await coro
    return response, time.monotonic() - began


def _assert_unavailable(response: httpx.Response, elapsed: float, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert elapsed < FAIL_FAST_S, elapsed


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[Database, Proxy, httpx.AsyncClient]]:
    if not DATABASE_URL.startswith("postgresql"):
        pytest.skip("the proxy stands in front of PostgreSQL (MES_TEST_DATABASE_URL)")
    url = await throwaway.create_database(DATABASE_URL, prefix="mes_faults")
    direct = await _prepared(url)
    target = make_url(url)
    proxy = Proxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    through = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = create_app(_settings(through), background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://mes.test") as http:
            yield direct, proxy, http
    finally:
        await app.state.db.dispose()
        await proxy.close()
        await direct.dispose()
        await throwaway.drop_database(url, beside=DATABASE_URL)


async def _recovery(http: httpx.AsyncClient, key: str) -> tuple[httpx.Response, float]:
    """Seconds from now until the start with ``key`` succeeds (polled every 50 ms)."""
    began = time.monotonic()
    while True:
        response = await http.post("/api/v1/lots", json=START_LOT, headers=_headers(key))
        if response.status_code != 503:
            return response, time.monotonic() - began
        assert time.monotonic() - began < 60, "the service did not recover within 60 s"
        await asyncio.sleep(0.05)


async def test_refused_stalled_and_dropped_database_fail_fast_and_recover(proxied) -> None:
    direct, proxy, http = proxied
    figures: dict[str, float] = {}
    assert (await http.post("/api/v1/lots", json=START_LOT, headers=_headers())).status_code == 201
    assert (await http.get("/readyz")).status_code == 200
    lots = await _lots(direct)

    for fault in ("refuse", "stall"):
        if fault == "refuse":
            await proxy.refuse()
        else:
            proxy.stall()
        key = f"fault-{fault}-{uuid.uuid4().hex[:8]}"
        response, elapsed = await _timed(
            http.post("/api/v1/lots", json=START_LOT, headers=_headers(key))
        )
        _assert_unavailable(response, elapsed, "db.unavailable")
        figures[f"{fault}_request_s"] = round(elapsed, 2)
        ready, elapsed = await _timed(http.get("/readyz"))
        assert ready.status_code == 503, ready.text
        assert elapsed < FAIL_FAST_S
        figures[f"{fault}_readyz_s"] = round(elapsed, 2)
        assert await _lots(direct) == lots, "a refused request changed something"
        await proxy.restore()
        # The same request again, same key: applied once the database is back.
        response, recovered = await _recovery(http, key)
        assert response.status_code == 201, response.text
        figures[f"{fault}_recovery_s"] = round(recovered, 2)
        lots += 1
        replay = await http.post("/api/v1/lots", json=START_LOT, headers=_headers(key))
        assert replay.headers.get("idempotent-replayed") == "true"
        assert await _lots(direct) == lots
        assert (await http.get("/readyz")).status_code == 200

    # A restart of the database: every open connection dropped under load, then back.
    unanswered: list[str] = []

    async def load(n: int) -> None:
        for i in range(10):
            key = f"load-{n}-{i}"
            r = await http.post("/api/v1/lots", json=START_LOT, headers=_headers(key))
            assert r.status_code in (201, 503), r.text
            if r.status_code == 503:
                unanswered.append(key)
            await asyncio.sleep(0.02)

    runners = [asyncio.create_task(load(n)) for n in range(4)]
    await asyncio.sleep(0.2)
    await proxy.refuse()  # drops every open connection and refuses new ones
    await asyncio.sleep(1.0)
    await proxy.restore()
    response, recovered = await _recovery(http, f"after-restart-{uuid.uuid4().hex[:8]}")
    figures["restart_recovery_s"] = round(recovered, 2)
    await asyncio.gather(*runners)
    assert response.status_code == 201
    # A 503 may come from a connection dropped during COMMIT, after the database committed: the
    # client cannot know, and sends again with the same key — applied now, or replayed.
    replayed = 0
    for key in unanswered:
        again = await http.post("/api/v1/lots", json=START_LOT, headers=_headers(key))
        assert again.status_code == 201, again.text
        replayed += again.headers.get("idempotent-replayed") == "true"
    figures["answers_lost_to_the_drop"] = replayed
    # Every request applied exactly once: nothing lost, nothing twice.
    assert await _lots(direct) == lots + 40 + 1, "a request was lost or applied twice"
    report = await check_database(direct)
    assert report.ok, [v.as_dict() for v in report.violations]
    print("database faults: " + json.dumps(figures))


async def test_a_locked_sqlite_database_is_a_retryable_503(tmp_path: Path) -> None:
    url = throwaway.sqlite_database(tmp_path, "locked")
    db = await _prepared(url)
    await db.dispose()
    app = create_app(_settings(url, sqlite_busy_timeout_ms=200), background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    blocker = sqlite3.connect(make_url(url).database or "", isolation_level=None)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://mes.test") as http:
            blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
            response, elapsed = await _timed(
                http.post("/api/v1/lots", json=START_LOT, headers=_headers("locked-1"))
            )
            _assert_unavailable(response, elapsed, "db.locked")
            blocker.execute("ROLLBACK")
            again = await http.post("/api/v1/lots", json=START_LOT, headers=_headers("locked-1"))
            assert again.status_code == 201, again.text
    finally:
        blocker.close()
        await app.state.db.dispose()
