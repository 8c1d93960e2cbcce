"""Migrations: head equals the models (no autogenerate drift) and they round-trip."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from mes.all_models import metadata
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import create_engine
from tests.databases import create_database, drop_database


def _drift(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_matches_models_and_round_trips(tmp_path: Path) -> None:
    url = await create_database(tmp_path, "migrations")
    engine = create_engine(Settings(database_url=url))
    try:
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_drift) == []
            assert await conn.run_sync(_tables) == set(metadata.tables) | {"alembic_version"}
        assert await migrate.current_revision(engine) == migrate.head_revision()

        await migrate.downgrade(engine, "base")
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) <= {"alembic_version"}
        assert await migrate.current_revision(engine) is None

        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_drift) == []
    finally:
        await engine.dispose()
        await drop_database(url)


def test_migration_files_follow_the_naming_scheme() -> None:
    files = sorted(p.name for p in migrate.MIGRATIONS_DIR.joinpath("versions").glob("*.py"))
    assert files, "no migrations found"
    for name in files:
        # YYYY-MM-DD-HHMM_slug.py keeps them in creation order in a directory listing.
        stamp, _, slug = name.partition("_")
        assert len(stamp) == 15, name
        assert stamp[4] == stamp[7] == stamp[10] == "-", name
        assert slug.endswith(".py"), name
        assert slug[:-3].replace("_", "").isalnum(), name
