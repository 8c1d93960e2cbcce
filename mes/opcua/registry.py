"""The tools one adapter process serves: leases, take-over, and the outbox poll.

Every ``lease_ttl_s / 3`` the registry lists the tools of its fab and shard, renews the leases
it holds, stamps the tools it hears as signalling (for the silence watchdog), takes free or
expired ones (a dead adapter's tools come over within one TTL) and stops the adapters of tools
whose lease it lost. Every ``poll_s`` one query finds outbox work (requested jobs, operator
commands) for all its tools and hands it to their adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from mes.clock import Clock
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.jobs.models import EquipmentJob
from mes.jobs.states import JobStatus
from mes.observability import instruments
from mes.opcua import service as opcua_service
from mes.opcua.adapter import AdapterSettings, ToolAdapter
from mes.opcua.mapping import ProcessValueBuffer
from mes.opcua.models import ConnectionState
from mes.opcua.service import ToolRef

log = logging.getLogger(__name__)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class AdapterRegistry:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: AdapterSettings,
        *,
        fab: str | None = None,
        shard: tuple[int, int] = (0, 1),
        lease_ttl_s: float = 15.0,
        poll_s: float = 0.5,
        connect_parallel: int = 32,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.fab = fab
        self.shard = shard
        self.ttl = timedelta(seconds=lease_ttl_s)
        self.poll_s = poll_s
        self.adapters: dict[int, ToolAdapter] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        # Session setups (connect, browse, subscribe, resync) in flight at once: a take-over of
        # a hundred tools runs in parallel, yet bounded, so no connect times out while a busy
        # loop serves a hundred others (a timeout costs a backoff, seconds to minutes).
        self.setup_slots = asyncio.Semaphore(connect_parallel)
        # Per tool, per job: process values sampled so far (outlive an adapter's restart).
        self._process_values: dict[int, dict[str, ProcessValueBuffer]] = {}

    @property
    def owner(self) -> str:
        return self.settings.owner

    def session_states(self) -> dict[str, int]:
        """How many of this registry's tool sessions are in each state (for the metrics)."""
        counts = dict.fromkeys((s.value for s in ConnectionState), 0)
        for adapter in list(self.adapters.values()):
            counts[adapter.state.value] += 1
        return counts

    async def run(self) -> None:
        """Serve until cancelled; releases the leases on the way out."""
        loop = asyncio.get_running_loop()
        next_lease = 0.0
        instruments.watch_adapters(self)
        try:
            while True:
                if loop.time() >= next_lease:
                    next_lease = loop.time() + self.ttl.total_seconds() / 3
                    try:
                        foreign = await self.refresh()
                    except Exception:
                        log.exception("lease refresh failed; retrying")
                        foreign = None
                    if foreign is not None:  # take a dead adapter's tools as their lease ends
                        wait = (foreign - self.clock.now()).total_seconds() + 0.05
                        next_lease = min(next_lease, loop.time() + max(wait, self.poll_s))
                try:
                    await self.poll_outbox()
                except Exception:
                    log.exception("outbox poll failed; retrying")
                self._reap()
                await asyncio.sleep(self.poll_s)
        finally:
            instruments.unwatch_adapters(self)
            await self.stop()

    async def refresh(self) -> datetime | None:
        """Renew, stop, take over; returns when the soonest lease of a tool of ours held by
        another adapter runs out (None: there is none)."""
        now = self.clock.now()
        async with unit_of_work(self.db) as session:
            last = {i: a.last_event_at for i, a in self.adapters.items() if a.last_event_at}
            held = await opcua_service.renew(
                session, self.owner, self.adapters, now, self.ttl, last
            )
            alive = [i for i, a in self.adapters.items() if a.state is ConnectionState.CONNECTED]
            await opcua_service.stamp_signals(session, [i for i in alive if i in held], now)
            tools = await opcua_service.tools_to_serve(session, fab=self.fab, shard=self.shard)
        lost = sorted(set(self.adapters) - held)
        for equipment_id in lost:
            log.warning(
                "lease of tool %s lost: stopping its adapter", self.adapters[equipment_id].tool.code
            )
        await self._stop_adapters(lost)
        for tool in tools:
            if tool.id in self.adapters:
                continue
            async with unit_of_work(self.db) as session:
                taken = await opcua_service.acquire(session, tool.id, self.owner, now, self.ttl)
            if taken:
                self._start_adapter(tool)
        others = [tool.id for tool in tools if tool.id not in self.adapters]
        if not others:
            return None
        async with unit_of_work(self.db, write=False) as session:
            return await opcua_service.next_expiry(session, self.owner, others)

    def _start_adapter(self, tool: ToolRef) -> None:
        adapter = ToolAdapter(
            self.db,
            tool,
            self.settings,
            self.clock,
            self.setup_slots,
            process_values=self._process_values.setdefault(tool.id, {}),
        )
        self.adapters[tool.id] = adapter
        self.tasks[tool.id] = asyncio.create_task(adapter.run(), name=f"adapter-{tool.code}")
        log.info("%s: serving tool %s at %s", self.owner, tool.code, tool.endpoint)

    async def _stop_adapters(self, equipment_ids: list[int]) -> None:
        """Cancel the adapters and wait for them together, once bounded: one adapter stuck in
        a library call (or on a locked database as it says DISCONNECTED) must not keep the
        others, or the service's shutdown, waiting — nor may a hundred slow ones add up to a
        hundred timeouts. A stuck adapter's lease then simply runs out."""
        stopping: dict[asyncio.Task[None], str] = {}
        for equipment_id in equipment_ids:
            task = self.tasks.pop(equipment_id, None)
            adapter = self.adapters.pop(equipment_id, None)
            if task is not None:
                task.cancel()
                stopping[task] = adapter.tool.code if adapter else str(equipment_id)
        if not stopping:
            return
        done, left = await asyncio.wait(stopping, timeout=self.settings.timeout_s)
        for task in done:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
        for task in left:
            log.error(
                "adapter of %s did not stop within %.0f s; left behind: %s",
                stopping[task],
                self.settings.timeout_s,
                task,
            )

    def _reap(self) -> None:
        """An adapter task that ended (lease lost mid-event) gives the tool up until the next
        refresh takes it again if the lease is still ours."""
        for equipment_id, task in list(self.tasks.items()):
            if task.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
                self.tasks.pop(equipment_id, None)
                self.adapters.pop(equipment_id, None)

    async def poll_outbox(self) -> None:
        if not self.adapters:
            instruments.outbox_depth(0)
            return
        async with unit_of_work(self.db, write=False) as session:
            rows = (
                await session.execute(
                    select(EquipmentJob.equipment_id, EquipmentJob.job_order_id).where(
                        EquipmentJob.equipment_id.in_(list(self.adapters)),
                        (EquipmentJob.status == JobStatus.REQUESTED)
                        | EquipmentJob.command.is_not(None),
                    )
                )
            ).all()
        instruments.outbox_depth(len(rows))
        for equipment_id, job_order_id in rows:
            adapter = self.adapters.get(equipment_id)
            if adapter is not None:
                adapter.submit(job_order_id)

    async def stop(self) -> None:
        ids = list(self.adapters)
        await self._stop_adapters(ids)
        if ids:
            with contextlib.suppress(Exception):
                async with unit_of_work(self.db) as session:
                    await opcua_service.release(session, self.owner, ids, self.clock.now())
