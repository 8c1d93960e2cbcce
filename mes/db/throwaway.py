"""Throwaway databases for the tests and the benchmarks.

PostgreSQL: a new database on the server of a given one ("beside" it: that database's own
tables are never touched), empty or copied from a template database, named
``<prefix>_<10 hex digits>`` so that concurrent runs never collide, and dropped with every
session still connected to it (``WITH (FORCE)``, PostgreSQL 13+). SQLite: a file in a given
folder, empty or a copy of a template database's file.

The administrative statements run over asyncpg, whatever driver the given URL names.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


def unique_name(prefix: str) -> str:
    """``<prefix>_<10 random hex digits>``."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def create_database(beside: str, *, prefix: str, template: str | None = None) -> str:
    """A new PostgreSQL database on the server of ``beside``, empty or a copy of the database
    at the URL ``template`` (which nobody may be connected to); returns its URL."""
    name = unique_name(prefix)
    statement = f"CREATE DATABASE {_quoted(name)}"
    if template is not None:
        statement += f" TEMPLATE {_quoted(_database_of(template))}"
    await _execute_beside(beside, statement)
    return make_url(beside).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str, *, beside: str) -> None:
    """Drop the PostgreSQL database at ``url``, ending its sessions; connects to ``beside``."""
    await _execute_beside(
        beside, f"DROP DATABASE IF EXISTS {_quoted(_database_of(url))} WITH (FORCE)"
    )


def sqlite_database(folder: Path, name: str, *, template: str | None = None) -> str:
    """The URL of the SQLite file ``<folder>/<name>.db``: new (created on first connection),
    or a copy of the file of the SQLite database at the URL ``template``."""
    path = folder / f"{name}.db"
    if template is not None:
        shutil.copyfile(_database_of(template), path)
    return f"sqlite+aiosqlite:///{path}"


async def _execute_beside(beside: str, statement: str) -> None:
    """Run one statement outside a transaction (as CREATE/DROP DATABASE must) on ``beside``."""
    url = make_url(beside).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _database_of(url: str) -> str:
    name = make_url(url).database
    if not name:
        raise ValueError(f"no database in {make_url(url).render_as_string()}")
    return name


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
