"""The PostgreSQL pool keeps the connections it opens: a steady load just above its size must
not open and close connections over and over (each a new backend, every statement prepared
again). With SQLAlchemy's old default here (10 kept + 10 overflow closed at every return), two
service workers with 16 clients each opened a connection every few hundred milliseconds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, text

from mes.config import Settings
from mes.db.engine import create_engine


async def test_connections_are_kept_under_a_steady_load(settings: Settings, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite's pool is not sized by these settings")
    engine = create_engine(settings)
    opened = 0

    @event.listens_for(engine.sync_engine.pool, "connect")
    def _opened(*_args: Any) -> None:
        nonlocal opened
        opened += 1

    in_flight = 12  # more than the old pool size of 10, within the default peak

    async def transaction(held: asyncio.Event) -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await held.wait()

    try:
        for _wave in range(3):
            held = asyncio.Event()
            tasks = [asyncio.create_task(transaction(held)) for _ in range(in_flight)]
            await asyncio.sleep(0.2)
            held.set()
            await asyncio.gather(*tasks)
        assert opened == in_flight  # the first wave opened them; the others reused them
    finally:
        await engine.dispose()


def test_the_peak_is_the_pool_size_by_default() -> None:
    settings = Settings(database_url="postgresql+asyncpg://u@127.0.0.1:1/x")
    engine = create_engine(settings)
    pool = engine.sync_engine.pool
    assert pool.size() == settings.database_pool_size == 20  # type: ignore[attr-defined]
    assert pool._max_overflow == 0  # type: ignore[attr-defined]
