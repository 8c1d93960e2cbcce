"""Schema migrations through Alembic's API, on the service's own engine (same SQLite pragmas)."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mes.db.schema_history import Readiness, SchemaStep, readiness

# The repository keeps migrations beside the package; the service is installed editable.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _with_connection(connection: Connection, action: str, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    if action == "upgrade":
        command.upgrade(cfg, revision)
    elif action == "downgrade":
        command.downgrade(cfg, revision)
    else:  # pragma: no cover - internal misuse
        raise ValueError(action)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_with_connection, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_with_connection, "downgrade", revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    def _current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_current)


@functools.cache
def build_revisions() -> frozenset[str]:
    """Every revision this build ships (read once: the files do not change under a process)."""
    scripts = ScriptDirectory.from_config(alembic_config()).walk_revisions()
    return frozenset(script.revision for script in scripts)


async def schema_readiness(engine: AsyncEngine) -> tuple[str | None, Readiness]:
    """The database's revision and whether this build may serve it (see ``schema_history``)."""

    def _read(connection: Connection) -> tuple[str | None, list[tuple[str, bool]]]:
        current = MigrationContext.configure(connection).get_current_revision()
        applied: list[tuple[str, bool]] = []
        if current != head_revision() and inspect(connection).has_table("schema_history"):
            applied = [
                (revision, bool(breaks))
                for revision, breaks in connection.execute(
                    select(SchemaStep.revision, SchemaStep.breaks_older_builds).order_by(
                        SchemaStep.id
                    )
                )
            ]
        return current, applied

    async with engine.connect() as connection:
        current, applied = await connection.run_sync(_read)
    return current, readiness(current, head_revision(), build_revisions(), applied)
