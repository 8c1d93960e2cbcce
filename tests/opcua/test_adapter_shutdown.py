"""Stopping an adapter process is bounded once, not once per tool: the registry cancels every
adapter and waits for them together. Seen in CI: on SQLite an adapter cancelled while its
statement waited for the database's write lock cannot stop before the lock frees (the driver's
thread cannot be interrupted), and one such adapter after another added up to the test's whole
teardown bound."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time

import pytest
from sqlalchemy.engine import make_url

from .conftest import TOOLS, Fab, wait_for
from .test_adapter_faults import _state_is


@pytest.fixture
def sqlite_only(fab: Fab) -> None:
    if make_url(fab.url).get_backend_name() != "sqlite":
        pytest.skip("PostgreSQL's driver interrupts a statement waiting for a lock on cancel")


async def test_the_adapters_stop_together_within_one_timeout_while_the_database_is_locked(
    fab: Fab, sqlite_only: None, caplog: pytest.LogCaptureFixture
) -> None:
    # No tool answers: every adapter retries its connection, saying CONNECTING each time.
    registry = fab.start_adapter()
    for code in TOOLS:
        await wait_for(lambda c=code: _state_is(fab, c, "disconnected"), f"{code} retrying")
    _, task, _db = fab.registries[0]
    timeout_s = registry.settings.timeout_s

    # Another process holds the write lock: each adapter's next CONNECTING waits for it.
    # Taken off the event loop: an adapter may be inside its write transaction, and it needs the
    # loop to commit; waiting for the lock on the loop itself would wait for nobody (seen in CI).
    holder = sqlite3.connect(
        make_url(fab.url).database or "", isolation_level=None, timeout=30, check_same_thread=False
    )
    await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
    try:
        await asyncio.sleep(2.0)  # every adapter has retried (backoff at most 1 s) and waits
        caplog.set_level(logging.ERROR, logger="mes.opcua.registry")
        began = time.time()
        task.cancel()  # the adapter process stops (as on SIGTERM)
        # The registry's own lease refresh may be waiting for the lock too (up to the busy
        # timeout, 10 s) before it gets to stopping its adapters.
        await asyncio.wait({task}, timeout=10 + 2 * timeout_s)
    finally:
        holder.rollback()
        holder.close()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(task, timeout=30)

    stuck = [r for r in caplog.records if "did not stop within" in r.getMessage()]
    # Waited for together: every adapter still stuck is given up at once, one timeout after
    # they were cancelled (one after another, only the first would be by now).
    assert sorted(r.getMessage().split()[2] for r in stuck) == sorted(TOOLS)
    given_up = [r.created - began for r in stuck]
    assert max(given_up) - min(given_up) < 1.0, given_up
    assert min(given_up) >= timeout_s, given_up
