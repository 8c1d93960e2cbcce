"""Wake-ups after commit: a transaction that frees a tool or brings a lot to a step asks for
the dispatcher of its fab to run now instead of at its next periodic cycle. The request rides
on the session and fires only if the transaction commits (a rolled-back change wakes nobody).

Within a process, subscribers are called with the fab ids (``Dispatcher.wake``). Across
processes, on PostgreSQL, the same transaction sends ``NOTIFY mes_wakeup`` with the fab ids,
delivered at commit to every process that listens (``listen_for_wakeups``); on SQLite (one
process) the in-process call is all there is. The periodic cycle stays as the safety net: a
lost notification costs at most one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "mes_wakeup"
_KEY = "mes_wakeups"

Subscriber = Callable[[frozenset[int]], None]
_subscribers: list[Subscriber] = []
_installed = False


def request(session: Any, fab_id: int) -> None:
    """Ask for the dispatcher of ``fab_id`` to run once this transaction commits. Takes the
    async session or its sync one."""
    sync = getattr(session, "sync_session", session)
    sync.info.setdefault(_KEY, set()).add(fab_id)


def subscribe(subscriber: Subscriber) -> Callable[[], None]:
    """Call ``subscriber`` with the fab ids of every committed wake-up in this process;
    returns the unsubscribe function."""
    install()
    _subscribers.append(subscriber)
    return lambda: _subscribers.remove(subscriber) if subscriber in _subscribers else None


def install() -> None:
    """Register the session hooks (idempotent)."""
    global _installed
    if not _installed:
        event.listen(Session, "before_commit", _notify_other_processes)
        event.listen(Session, "after_commit", _call_subscribers)
        event.listen(Session, "after_rollback", _forget)
        _installed = True


def _notify_other_processes(session: Session) -> None:
    fabs = session.info.get(_KEY)
    if not fabs or session.bind is None or session.bind.dialect.name != "postgresql":
        return
    payload = ",".join(str(f) for f in sorted(fabs))
    session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
    )


def _call_subscribers(session: Session) -> None:
    fabs = session.info.pop(_KEY, None)
    if not fabs:
        return
    for subscriber in list(_subscribers):
        try:
            subscriber(frozenset(fabs))
        except Exception:  # a subscriber's fault must not reach the committed transaction
            log.exception("wake-up subscriber failed")


def _forget(session: Session) -> None:
    session.info.pop(_KEY, None)


def parse(payload: str) -> frozenset[int]:
    return frozenset(int(p) for p in payload.split(",") if p.strip().isdigit())


async def listen_for_wakeups(
    engine: AsyncEngine, on_wakeup: Callable[[Iterable[int]], None], *, retry_s: float = 5.0
) -> None:
    """Follow ``NOTIFY mes_wakeup`` from other processes (PostgreSQL only) until cancelled,
    reconnecting after a lost connection."""
    if engine.dialect.name != "postgresql":
        return
    while True:
        try:
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver: Any = raw.driver_connection

                def received(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                    on_wakeup(parse(payload))

                closed = asyncio.Event()
                driver.add_termination_listener(lambda _conn, ev=closed: ev.set())
                await driver.add_listener(CHANNEL, received)
                try:
                    while not closed.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(30):
                                await closed.wait()
                        # A connection that died without a word shows here, not in a wait.
                        await driver.execute("SELECT 1")
                finally:
                    with contextlib.suppress(Exception):
                        await driver.remove_listener(CHANNEL, received)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("wake-up listener lost its connection (%s); retrying", exc)
        await asyncio.sleep(retry_s)
