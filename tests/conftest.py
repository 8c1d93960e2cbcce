"""Shared fixtures. The same suite runs on SQLite (default) and on PostgreSQL when
MES_TEST_DATABASE_URL is set.

The schema is built once per run by ``alembic upgrade head`` and the example fab is loaded once;
every test then runs inside an outer transaction that is rolled back, with the service's own
sessions joining it through SAVEPOINTs, so tests see the example data and leave no trace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from mes.clock import FixedClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.main import create_app
from mes.seed import loader
from tests.databases import BACKEND, create_database, drop_database

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def pytest_report_header(config: pytest.Config) -> str:
    return f"MES test backend: {BACKEND}"


@pytest.fixture(scope="session")
def backend() -> str:
    return BACKEND


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    url = await create_database(Path(tmp_path_factory.mktemp("db")), "suite")
    yield url
    await drop_database(url)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    await migrate.upgrade(engine)
    async with unit_of_work(Database(engine)) as session:
        await loader.load(session, loader.read_example(), clock=FixedClock(START))
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        outer = await conn.begin()
        yield conn
        await outer.rollback()


@pytest.fixture
def db(engine: AsyncEngine, connection: AsyncConnection) -> Database:
    return Database(engine, bind=connection)


@pytest.fixture
async def session(db: Database) -> AsyncIterator[AsyncSession]:
    async with db.write_sessions() as session:
        yield session


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START.replace(hour=8))


@pytest.fixture
async def client(
    settings: Settings, db: Database, clock: FixedClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, database=db, clock=clock)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mes.test") as client:
        yield client
