"""The change feed behind live updates, and the one event stream per console page.

Every process that changes a lot, a tool, a hold, an alarm or a job writes audit records in the
same transaction (``mes.audit.recorder``: no write goes unaudited). The audit table is therefore
a change feed every process already writes and every process can follow: one poller per
console process reads the records committed since its last look (indexed by primary key) and
turns them into named events — ``tool-<code>``, ``lot-<code>``, ``fab-<code>``, ``holds``,
``recipes`` — for the pages' streams. It works the same on SQLite and PostgreSQL, across any
number of processes (the adapter's track-out and the dispatcher's decision reach a console
served elsewhere), with a delay of one poll interval.

On PostgreSQL ids are taken at insert but become visible at commit, so a record with a lower id
can appear after a higher one was read: each poll looks back a window of ids and skips the ones
it has already seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from mes.audit.models import AuditEvent
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.equipment.models import Equipment
from mes.fabs.models import Fab
from mes.lots.models import Lot

log = logging.getLogger(__name__)

FOLLOWED = ("equipment", "lot", "lot_hold", "equipment_alarm", "equipment_job", "recipe_version")
# Columns that change on every heartbeat of a tool, not something a person needs to see.
_NOISE = frozenset({"last_signal_at", "version", "updated_at", "control_state"})
LOOK_BACK = 2000
BATCH = 2000


@dataclass(frozen=True)
class Interest:
    """What one page's stream wants: exact event names, name prefixes, within some fabs."""

    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    fabs: frozenset[str] | None = None  # None: every fab

    def wants(self, name: str, fab: str | None) -> bool:
        if name in self.names:
            return True
        if not any(name.startswith(p) for p in self.prefixes):
            return False
        return self.fabs is None or fab in self.fabs


@dataclass(eq=False)  # hashed by identity: one per open stream
class _Subscriber:
    interest: Interest
    queue: asyncio.Queue[set[str]] = field(default_factory=lambda: asyncio.Queue(maxsize=64))


class ChangeFeed:
    """Follows the audit trail of one database and fans events out to the streams of a process."""

    def __init__(self, db: Database, *, interval_s: float = 1.0) -> None:
        self.db = db
        self.interval_s = interval_s
        self._subscribers: set[_Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._last: int | None = None
        self._seen: set[int] = set()
        self._fabs: dict[int, str] = {}
        self._tools: dict[int, str] = {}
        self._lots: dict[int, str] = {}  # lot codes never change
        self.closing = asyncio.Event()

    # --- reading the feed -------------------------------------------------------------------

    async def _lookups(
        self, fab_ids: Iterable[int], tool_ids: Iterable[int], lot_ids: Iterable[int] = ()
    ) -> None:
        missing_fabs = {i for i in fab_ids if i not in self._fabs}
        missing_tools = {i for i in tool_ids if i not in self._tools}
        missing_lots = {i for i in lot_ids if i not in self._lots}
        if not missing_fabs and not missing_tools and not missing_lots:
            return
        async with unit_of_work(self.db, write=False) as session:
            if missing_fabs:
                self._fabs.update((await session.execute(select(Fab.id, Fab.code))).all())
            if missing_tools:
                rows = await session.execute(
                    select(Equipment.id, Equipment.code).where(Equipment.id.in_(missing_tools))
                )
                self._tools.update(rows.all())
            if missing_lots:
                rows = await session.execute(
                    select(Lot.id, Lot.code).where(Lot.id.in_(missing_lots))
                )
                self._lots.update(rows.all())

    async def poll(self) -> list[tuple[str, str | None]]:
        """The events of the records committed since the last poll: (name, fab code)."""
        async with unit_of_work(self.db, write=False) as session:
            if self._last is None:
                # Start from now: what is already committed is on the pages being opened.
                self._last = int(await session.scalar(select(func.max(AuditEvent.id))) or 0)
                self._seen = set(
                    await session.scalars(
                        select(AuditEvent.id).where(AuditEvent.id > self._last - LOOK_BACK)
                    )
                )
                return []
            # Ids first (cheap), details only of the records not seen yet.
            window = await session.scalars(
                select(AuditEvent.id).where(
                    AuditEvent.id > self._last - LOOK_BACK,
                    AuditEvent.target_type.in_(FOLLOWED),
                )
            )
            unseen = sorted(set(window) - self._seen)[:BATCH]
            if not unseen:
                return []
            rows = (
                await session.execute(
                    select(
                        AuditEvent.id,
                        AuditEvent.target_type,
                        AuditEvent.target_id,
                        AuditEvent.fab_id,
                        AuditEvent.before,
                        AuditEvent.after,
                    )
                    .where(AuditEvent.id.in_(unseen))
                    .order_by(AuditEvent.id)
                )
            ).all()
        fresh = [r for r in rows if r.id not in self._seen]
        if not fresh:
            return []
        self._seen.update(r.id for r in fresh)
        self._last = max(self._last, max(r.id for r in fresh))
        self._seen = {i for i in self._seen if i > self._last - LOOK_BACK}
        tool_ids = {
            v
            for r in fresh
            for image in (r.before, r.after)
            if image
            for v in [image.get("equipment_id")]
            if isinstance(v, int)
        }
        # A hold added to a lot already on hold changes no column of the lot: its record names
        # the lot by id, and the lot's page must hear of it.
        lot_ids = {
            v
            for r in fresh
            if r.target_type == "lot_hold"
            for image in (r.before, r.after)
            if image
            for v in [image.get("lot_id")]
            if isinstance(v, int)
        }
        await self._lookups({r.fab_id for r in fresh if r.fab_id is not None}, tool_ids, lot_ids)
        events: list[tuple[str, str | None]] = []
        for r in fresh:
            events.extend(self._events(r.target_type, r.target_id, r.fab_id, r.before, r.after))
        return list(dict.fromkeys(events))

    def _events(
        self,
        kind: str,
        key: str,
        fab_id: int | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> list[tuple[str, str | None]]:
        fab = self._fabs.get(fab_id) if fab_id is not None else None
        if (
            kind == "equipment"
            and after is not None
            and before is not None
            and set(after) <= _NOISE
        ):
            return []
        found: list[tuple[str, str | None]] = []
        if kind == "equipment":
            found.append((f"tool-{key}", fab))
        elif kind == "lot":
            found.append((f"lot-{key}", fab))
        elif kind == "recipe_version":
            return [("recipes", None)]
        if kind == "lot_hold":
            found.append(("holds", fab))
            for image in (before, after):
                lot_id = image.get("lot_id") if image else None
                if isinstance(lot_id, int) and lot_id in self._lots:
                    found.append((f"lot-{self._lots[lot_id]}", fab))
        for image in (before, after):
            tool_id = image.get("equipment_id") if image else None
            if isinstance(tool_id, int) and tool_id in self._tools:
                found.append((f"tool-{self._tools[tool_id]}", fab))
        if fab is not None:
            found.append((f"fab-{fab}", fab))
        return found

    # --- fan-out ----------------------------------------------------------------------------

    async def run(self) -> None:
        while not self.closing.is_set():
            try:
                events = await self.poll()
            except Exception:  # the feed must outlive a database hiccup
                log.exception("change feed poll failed")
                events = []
            for sub in list(self._subscribers):
                names = {name for name, fab in events if sub.interest.wants(name, fab)}
                if names:
                    with contextlib.suppress(asyncio.QueueFull):
                        sub.queue.put_nowait(names)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), self.interval_s)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="console-change-feed")

    async def stop(self) -> None:
        """End the poller and every open stream (so a server shutdown is not held up)."""
        self.closing.set()
        for sub in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(set())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def stream(self, interest: Interest, *, heartbeat_s: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events for one page: named events whose data is the event name."""
        sub = _Subscriber(interest)
        self._subscribers.add(sub)
        self._ensure_running()
        try:
            yield "retry: 2000\n\n"
            while not self.closing.is_set():
                try:
                    names = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                for name in sorted(names):
                    yield f"event: {name}\ndata: {name}\n\n"
        finally:
            self._subscribers.discard(sub)
