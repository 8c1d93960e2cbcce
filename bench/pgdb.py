"""A throwaway PostgreSQL database beside a given one, for the benchmarks."""

from __future__ import annotations

import uuid

import asyncpg
from sqlalchemy.engine import make_url


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(url: str, prefix: str = "mes_bench") -> str:
    """Create an empty database on ``url``'s server; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def drop_database(given: str, url: str) -> None:
    """Drop the database at ``url`` (connecting through ``given``), sessions and all."""
    admin = await asyncpg.connect(asyncpg_dsn(given))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()
