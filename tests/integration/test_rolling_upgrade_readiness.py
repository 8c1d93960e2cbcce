"""/readyz during a rolling upgrade: the migration job of the next release has run, the old
build's processes still serve (only-adding migrations) or step back (a breaking one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from sqlalchemy import insert, select, text

from mes.config import Settings
from mes.db import migrate
from mes.db.engine import create_engine
from mes.db.schema_history import SchemaStep
from mes.main import create_app
from tests.databases import create_database, drop_database


async def _next_release_migrated(engine, *, breaking: bool) -> None:
    """What the next release's migration job leaves: its revision in alembic_version and in the
    history (this build does not know the revision)."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(SchemaStep).values(
                revision="f0next000001",
                down_revision=migrate.head_revision(),
                breaks_older_builds=breaking,
                applied_at=text("CURRENT_TIMESTAMP"),
            )
        )
        await conn.execute(text("UPDATE alembic_version SET version_num = 'f0next000001'"))


async def _probe(url: str) -> httpx.Response:
    app = create_app(Settings(database_url=url), background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mes") as client:
        response = await client.get("/readyz")
    await app.state.db.dispose()
    return response


@asynccontextmanager
async def _database(tmp_path: Path, label: str) -> AsyncIterator[tuple[str, object]]:
    """A throwaway database and an engine on it (migrated by the test itself)."""
    url = await create_database(tmp_path, label)
    engine = create_engine(Settings(database_url=url))
    try:
        yield url, engine
    finally:
        await engine.dispose()
        await drop_database(url)


async def test_every_applied_migration_is_recorded(tmp_path: Path) -> None:
    async with _database(tmp_path, "history") as (url, engine):
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            recorded = list(await conn.scalars(select(SchemaStep.revision)))
        # The table arrives with its own migration: that one and every later one are recorded.
        assert recorded[-1] == migrate.head_revision()
        assert (await _probe(url)).status_code == 200


async def test_an_old_build_keeps_serving_a_schema_that_only_added(tmp_path: Path) -> None:
    async with _database(tmp_path, "rolling") as (url, engine):
        await migrate.upgrade(engine)
        await _next_release_migrated(engine, breaking=False)
        answer = await _probe(url)
        assert answer.status_code == 200, answer.text
        assert answer.json()["schema_revision"] == "f0next000001"
        assert "newer" in answer.json()["detail"]


async def test_an_old_build_steps_back_from_a_breaking_schema(tmp_path: Path) -> None:
    async with _database(tmp_path, "breaking") as (url, engine):
        await migrate.upgrade(engine)
        await _next_release_migrated(engine, breaking=True)
        answer = await _probe(url)
        assert answer.status_code == 503, answer.text
        assert "breaks older builds" in answer.json()["detail"]


async def test_a_build_ahead_of_the_database_is_not_ready(tmp_path: Path) -> None:
    async with _database(tmp_path, "behind") as (url, engine):
        # The database one migration behind this build (its migration job has not run yet).
        scripts = migrate.ScriptDirectory.from_config(migrate.alembic_config())
        previous = scripts.get_revision(migrate.head_revision()).down_revision
        await migrate.upgrade(engine, str(previous))
        answer = await _probe(url)
        assert answer.status_code == 503, answer.text
        assert "behind" in answer.json()["detail"]
