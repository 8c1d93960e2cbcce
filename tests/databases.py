"""Throw-away test databases: a temporary SQLite file, or a fresh PostgreSQL database created
beside the one named by MES_TEST_DATABASE_URL (so tests never touch that database's tables)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

TEST_DATABASE_URL = os.environ.get("MES_TEST_DATABASE_URL")
BACKEND = "postgresql" if TEST_DATABASE_URL else "sqlite"


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(tmp_dir: Path, label: str) -> str:
    """A new, empty database; returns its SQLAlchemy URL."""
    if TEST_DATABASE_URL is None:
        return f"sqlite+aiosqlite:///{tmp_dir / (label + '.db')}"
    name = f"mes_{label}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_asyncpg_dsn(TEST_DATABASE_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    if TEST_DATABASE_URL is None:
        return
    name = make_url(url).database
    admin = await asyncpg.connect(_asyncpg_dsn(TEST_DATABASE_URL))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
