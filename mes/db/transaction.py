"""One business operation = one transaction.

HTTP requests get their session from the dependencies below; CLI commands, OPC UA events and
dispatch cycles use ``unit_of_work``. Services only flush: the commit happens here, and for
HTTP it finishes before the response is sent (dependency scope "function"), so a client never
sees a success for a change that then fails to commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from mes.db.engine import Database

# Where a write session keeps the request's state: the route guard leaves the audit context
# (who, which operation) there, and the audit recorder finds it at flush.
REQUEST_STATE_KEY = "mes.request_state"


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


@asynccontextmanager
async def unit_of_work(db: Database, *, write: bool = True) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on any error.

    An error that says ``keep_changes`` (a refusal that must leave a trace, such as the hold put
    on a lot whose Q-time expired) is raised after the commit instead. An error may also carry
    ``after_rollback`` work (each a function of the database): it runs once the operation is
    rolled back, each in a transaction of its own — e.g. counting a wrong password, which
    must stick although the operation it was given for does not (and SQLite's one writer
    could not take a second transaction while the first is open).
    """
    factory = db.write_sessions if write else db.read_sessions
    async with factory() as session:
        await session.begin()
        try:
            yield session
        except BaseException as exc:
            if getattr(exc, "keep_changes", False):
                await session.commit()
            else:
                await session.rollback()
            for work in getattr(exc, "after_rollback", ()):
                await work(db)
            raise
        await session.commit()


async def _write_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(database(request), write=True) as session:
        # The route guard leaves the audit context (who, which operation) on request.state.
        session.info[REQUEST_STATE_KEY] = request.state
        yield session


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(database(request), write=False) as session:
        yield session


WriteSession = Annotated[AsyncSession, Depends(_write_session, scope="function")]
ReadSession = Annotated[AsyncSession, Depends(_read_session, scope="function")]
