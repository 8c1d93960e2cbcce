"""Shared fixtures. The same suite runs on SQLite (default) and on PostgreSQL when
MES_TEST_DATABASE_URL is set.

The schema is built once per run by ``alembic upgrade head`` and the example fab is loaded once;
every test then runs inside an outer transaction that is rolled back, with the service's own
sessions joining it through SAVEPOINTs, so tests see the example data and leave no trace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from mes.audit import recorder
from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind, Certification, User, UserRole
from mes.auth.passwords import hash_password
from mes.auth.roles import HUMAN_ROLES, Role
from mes.auth.tokens import issue_access_token
from mes.clock import FixedClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.fabs.models import ToolGroup
from mes.main import create_app
from mes.quality import collection
from mes.seed import loader
from tests.contract import ContractCheck, contract_summary
from tests.databases import BACKEND, create_database, drop_database

# Every session in the tests writes its audit records at flush, as in the service, and every
# track-out runs data collection and SPC.
recorder.install()
collection.install()

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
NOW = START.replace(hour=8)  # the `clock` fixture's time
JWT_SECRET = "test-signing-key-not-for-production-0123456789"
TESTER = "tester"
TESTER_PASSWORD = "correct horse battery staple"
# One account per role, for the role-matrix tests (service roles have no password).
ROLE_USERS = {role: f"t-{role.value}" for role in Role}
ROLE_PASSWORD = "role-account-password"


def access_token(username: str, *, auth_time: datetime = NOW) -> str:
    """A valid access token (one day long, so tests may move the clock)."""
    return issue_access_token(
        username, secret=JWT_SECRET, now=auth_time, ttl=timedelta(days=1), auth_time=auth_time
    )


def bearer(username: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token(username, **kwargs)}"}


async def _create_test_accounts(session: AsyncSession) -> None:
    bind(session, AuditContext(actor="test", role="system", operation="test.accounts", at=START))
    accounts = [(TESTER, sorted(HUMAN_ROLES), TESTER_PASSWORD)]
    accounts += [
        (name, [role], ROLE_PASSWORD if role in HUMAN_ROLES else None)
        for role, name in ROLE_USERS.items()
    ]
    groups = list(await session.scalars(select(ToolGroup)))
    for username, roles, password in accounts:
        session.add(
            User(
                username=username,
                display_name=username,
                kind=AccountKind.HUMAN if password else AccountKind.SERVICE,
                roles=[UserRole(role=r) for r in roles],
                password_hash=hash_password(password) if password else None,
                # The all-roles tester may run every tool; the role accounts are uncertified.
                certifications=[
                    Certification(tool_group=g, certified_at=START, certified_by="test")
                    for g in groups
                ]
                if username == TESTER
                else [],
            )
        )
    await session.flush()


def pytest_report_header(config: pytest.Config) -> str:
    return f"MES test backend: {BACKEND}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    summary = contract_summary()
    if summary:
        terminalreporter.write_line(summary)


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
    return Settings(database_url=database_url, jwt_secret=SecretStr(JWT_SECRET))


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    await migrate.upgrade(engine)
    async with unit_of_work(Database(engine)) as session:
        await loader.load(session, loader.read_example(), clock=FixedClock(START))
    async with unit_of_work(Database(engine)) as session:
        await _create_test_accounts(session)
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
    """A session in the test's transaction, for arranging data the API cannot create yet."""
    async with db.write_sessions() as session:
        bind(session, AuditContext(actor="test", role="system", operation="test.setup", at=NOW))
        yield session


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture(scope="session")
def shared_app(settings: Settings, engine: AsyncEngine) -> FastAPI:
    return create_app(settings, database=Database(engine), background=False)


@pytest.fixture(scope="session")
def contract_check(shared_app: FastAPI) -> ContractCheck:
    """Checks every problem the API tests receive against /openapi.json (see the hook)."""
    return ContractCheck(shared_app.openapi())


@pytest.fixture
async def client(
    shared_app: FastAPI, db: Database, clock: FixedClock, contract_check: ContractCheck
) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client signed in as ``tester`` (every human role; e-signatures fresh for 5 min)."""
    app = shared_app
    # Building the app costs ~0.1 s; tests run one at a time, so they share one and swap in
    # their own database session binding and clock.
    app.state.db, app.state.clock = db, clock
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://mes.test",
        headers=bearer(TESTER),
        event_hooks={"response": [contract_check]},
    ) as client:
        yield client


@pytest.fixture
def anonymous(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The same app without credentials (a fresh client sharing the transport)."""
    return httpx.AsyncClient(
        transport=client._transport,
        base_url="http://mes.test",
        event_hooks=client.event_hooks,
    )


@pytest.fixture
def client_as(client: httpx.AsyncClient) -> Callable[[str], httpx.AsyncClient]:
    """``client_as("t-operator")``: the same app, signed in as another account."""

    def make(username: str, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=client._transport,
            base_url="http://mes.test",
            headers=bearer(username, **kwargs),
            event_hooks=client.event_hooks,
        )

    return make
