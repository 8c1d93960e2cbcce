"""Alembic environment: async engines, the models' naming convention, batch mode for SQLite.

Called two ways: from ``mes.db.migrate`` with an open connection in ``config.attributes``
(service start, CLI, tests), or by the ``alembic`` command, which builds its own engine from
the service settings.
"""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy.engine import Connection

from mes.all_models import metadata
from mes.config import Settings
from mes.db.engine import create_engine
from mes.db.schema_history import record_step, step_facts

config = context.config


def _record(ctx: MigrationContext, step: MigrationInfo, heads: object, run_args: object) -> None:
    """Each step applied or undone goes into ``schema_history`` (readiness across versions)."""
    facts = step_facts(step)
    if facts is not None and ctx.connection is not None:
        record_step(ctx.connection, **facts)


def _configure(connection: Connection) -> None:
    context.configure(
        on_version_apply=_record,
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=False,
    )


def _run_with_connection(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    engine = create_engine(Settings())
    async with engine.connect() as connection:
        await connection.run_sync(_run_with_connection)
        await connection.commit()
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with_connection(connection)
    else:
        asyncio.run(_run_with_own_engine())


if context.is_offline_mode():
    context.configure(
        url=Settings().database_url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
