"""The ``mes`` command: serve the API, migrate the database, load example data."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

import typer
import uvicorn

from mes.clock import SystemClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.seed import loader

app = typer.Typer(help="Fab MES service and administration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
seed_app = typer.Typer(help="Example data.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(seed_app, name="seed")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
) -> None:
    """Serve the REST API (and /docs) with uvicorn."""
    settings = Settings()
    from mes.main import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
    )


async def _upgrade(settings: Settings, revision: str) -> str | None:
    database = Database.from_settings(settings)
    try:
        await migrate.upgrade(database.engine, revision)
        return await migrate.current_revision(database.engine)
    finally:
        await database.dispose()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database to ``revision`` (default: the newest)."""
    settings = Settings()
    current = asyncio.run(_upgrade(settings, revision))
    typer.echo(f"database at revision {current}")


async def _downgrade(settings: Settings, revision: str) -> None:
    database = Database.from_settings(settings)
    try:
        await migrate.downgrade(database.engine, revision)
    finally:
        await database.dispose()


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Migrate the database back to ``revision`` ("base" empties it)."""
    asyncio.run(_downgrade(Settings(), revision))
    typer.echo(f"database at revision {revision}")


async def _seed_example(settings: Settings, *, if_empty: bool) -> dict[str, int] | None:
    database = Database.from_settings(settings)
    try:
        async with unit_of_work(database) as session:
            if not await loader.database_is_empty(session):
                if if_empty:
                    return None
                raise typer.BadParameter(
                    "the database already holds data; the example loads only into an empty one"
                )
            return await loader.load(session, loader.read_example(), clock=SystemClock())
    finally:
        await database.dispose()


@seed_app.command("example")
def seed_example(
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="do nothing if the database holds data")
    ] = False,
) -> None:
    """Load the example two-fab network (fabs, tools, recipes, routes, carriers)."""
    logging.basicConfig(level=logging.WARNING)
    counts = asyncio.run(_seed_example(Settings(), if_empty=if_empty))
    if counts is None:
        typer.echo("database already holds data; example not loaded")
    else:
        typer.echo("loaded example fab: " + json.dumps(counts))


if __name__ == "__main__":
    app()
