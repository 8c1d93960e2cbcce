"""Throw-away test databases: a temporary SQLite file, or a fresh PostgreSQL database created
beside the one named by MES_TEST_DATABASE_URL (so tests never touch that database's tables).
The work is done by ``mes.db.throwaway``; this module knows which backend the run tests."""

from __future__ import annotations

import os
from pathlib import Path

from mes.db import throwaway

TEST_DATABASE_URL = os.environ.get("MES_TEST_DATABASE_URL")
BACKEND = "postgresql" if TEST_DATABASE_URL else "sqlite"


async def create_database(tmp_dir: Path, label: str, *, template: str | None = None) -> str:
    """A new database, empty or a copy of ``template`` (a database made here); returns its
    SQLAlchemy URL."""
    if TEST_DATABASE_URL is None:
        return throwaway.sqlite_database(tmp_dir, label, template=template)
    return await throwaway.create_database(
        TEST_DATABASE_URL, prefix=f"mes_{label}", template=template
    )


async def drop_database(url: str) -> None:
    if TEST_DATABASE_URL is None:
        return
    await throwaway.drop_database(url, beside=TEST_DATABASE_URL)
