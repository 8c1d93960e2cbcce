"""Engine and session factory for one database, with the SQLite settings an MES needs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as exc_module
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)

from mes.config import Settings
from mes.db.memo import SESSION_KEY as MEMO_KEY
from mes.db.memo import Memo
from mes.observability import instruments

# Execution option set on the writing engine: SQLite then opens transactions with
# BEGIN IMMEDIATE, taking the write lock up front instead of failing at the first write
# ("database is locked" on lock upgrade cannot be retried by busy_timeout).
WRITE_OPTION = "mes_write"


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_directory(url: str | URL) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _install_sqlite_behaviour(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (which skips BEGIN before
        # SELECT and SAVEPOINT) and issue BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    kwargs: dict[str, Any] = {"echo": settings.database_echo}
    if is_sqlite(url):
        ensure_sqlite_directory(url)
    else:
        kwargs.update(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_pre_ping=settings.database_ping_idle_s <= 0,
            pool_timeout=settings.database_pool_timeout_s,
        )
        if make_url(url).get_driver_name() == "asyncpg":
            # asyncpg: ``timeout`` bounds the connect, ``command_timeout`` every statement.
            kwargs["connect_args"] = {
                "timeout": settings.database_connect_timeout_s,
                "command_timeout": settings.database_command_timeout_s,
            }
    # Through the module: OpenTelemetry's SQLAlchemy instrumentation (when tracing is on,
    # mes.observability.tracing) wraps the module's function, not a name imported earlier.
    engine = sqlalchemy_asyncio.create_async_engine(url, **kwargs)
    if is_sqlite(url):
        _install_sqlite_behaviour(engine, settings.sqlite_busy_timeout_ms)
    elif settings.database_ping_idle_s > 0:
        _ping_when_idle(engine, settings.database_ping_idle_s)
    return engine


_IDLE_SINCE = "mes.idle_since"


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Ping a pooled connection at checkout only when it sat idle for ``idle_s`` or longer.

    ``pool_pre_ping`` pings at every checkout, and the asyncpg dialect's ping is three round
    trips (BEGIN, ``;``, ROLLBACK): under load that was a tenth of a lot move's round trips,
    spent on connections used a millisecond before. A connection idle long enough to have
    been cut (database restart, firewall) is still checked; a failed ping makes the pool
    replace it (DisconnectionError: SQLAlchemy retries the checkout with a new connection).
    """
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "connect")
    def _fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkin")
    def _back(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_IDLE_SINCE, 0.0) < idle_s:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


class Database:
    """The engine of one database plus session factories for reading and for writing."""

    def __init__(self, engine: AsyncEngine, *, bind: AsyncConnection | None = None) -> None:
        self.engine = engine
        # What never changes once committed, remembered for this database (mes.db.memo).
        self.memo = Memo()
        info = {MEMO_KEY: self.memo}
        self.read_sessions: async_sessionmaker[AsyncSession]
        self.write_sessions: async_sessionmaker[AsyncSession]
        if bind is None:
            instruments.watch_database(self)  # its pool, in mes_db_pool_connections
            self.read_sessions = async_sessionmaker(engine, expire_on_commit=False, info=info)
            self.write_sessions = async_sessionmaker(
                engine.execution_options(**{WRITE_OPTION: True}),
                expire_on_commit=False,
                info=info,
            )
        else:
            # Bound to an outer connection (tests): sessions join its transaction through
            # SAVEPOINTs, so whatever they "commit" is rolled back with it.
            self.read_sessions = self.write_sessions = async_sessionmaker(
                bind, expire_on_commit=False, join_transaction_mode="create_savepoint", info=info
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(create_engine(settings))

    async def dispose(self) -> None:
        await self.engine.dispose()


# --- the database being unavailable --------------------------------------------------------

_LOCKED = ("database is locked", "database table is locked", "database is busy")
# SQLSTATEs of a server that is not there for us just now: 08 connection exception, 57P
# operator intervention (57P01 shut down by the administrator, 57P03 "the database system is
# starting up" — met during a real restart, which answered 500 before), 53300 too many
# connections.
_UNAVAILABLE_SQLSTATE = ("08", "57P", "53300")


def outage_code(exc: BaseException) -> str | None:
    """``db.locked`` (SQLite's writer lock not had in time) or ``db.unavailable`` (the database
    refused, dropped or stalled the connection; the pool had no connection in time) if ``exc``
    says the database could not be worked with just now, else None: both are worth a retry, not
    a 500."""
    if isinstance(exc, exc_module.OperationalError) and any(
        text in str(exc.orig).lower() for text in _LOCKED
    ):
        return "db.locked"
    if isinstance(exc, exc_module.DBAPIError) and (
        exc.connection_invalidated
        or isinstance(exc, exc_module.OperationalError | exc_module.InterfaceError)
        or isinstance(exc.orig, OSError | TimeoutError)
        or "connection" in type(exc.orig).__name__.lower()
        or str(getattr(exc.orig, "sqlstate", None) or "").startswith(_UNAVAILABLE_SQLSTATE)
    ):
        return "db.unavailable"
    if isinstance(exc, exc_module.TimeoutError | TimeoutError | ConnectionError | OSError):
        return "db.unavailable"
    return None
