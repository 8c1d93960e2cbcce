"""Leader failover of the automatic dispatcher: two dispatchers, each with its own engine on one
PostgreSQL database (real commits, system clock), as two replicas would run. Only the lease
holder requests jobs; when it dies (no release), the standby takes over after the TTL; no lot
ever gets two jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind
from mes.auth.service import Principal
from mes.check.invariants import check_database
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.dispatch.models import DispatchDecision
from mes.dispatch.scheduler import Dispatcher, Mode
from mes.equipment.models import Equipment
from mes.jobs.models import EquipmentJob
from mes.jobs.states import JobStatus
from mes.lots import service as lots_service
from mes.lots.states import PriorityClass
from mes.seed import loader
from tests.conftest import START
from tests.databases import BACKEND, create_database, drop_database

pytestmark = pytest.mark.skipif(
    BACKEND != "postgresql",
    reason="leader failover needs two engines committing concurrently: PostgreSQL only "
    "(set MES_TEST_DATABASE_URL)",
)
TTL_S = 1.0


def _audit(session, clock) -> None:
    bind(session, AuditContext(actor="test", role="system", operation="test.setup", at=clock.now()))


async def _set_state(db: Database, clock: SystemClock, tool: str, state: str) -> None:
    async with unit_of_work(db) as session:
        _audit(session, clock)
        await session.execute(
            update(Equipment).where(Equipment.code == tool).values(e10_state=state)
        )


async def _wait_for(predicate) -> None:
    async with asyncio.timeout(15.0):
        while not await predicate():  # noqa: ASYNC110 - polling another engine's commits
            await asyncio.sleep(0.1)


async def test_standby_takes_over_after_the_leader_dies_and_no_lot_gets_two_jobs(
    tmp_path: Path,
) -> None:
    from mes.clock import FixedClock
    from mes.seed.loader import read_example

    url = await create_database(tmp_path, "leader")
    settings = Settings(database_url=url)
    admin = Database.from_settings(settings)
    clock = SystemClock()
    replicas: list[Database] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await migrate.upgrade(admin.engine)
        async with unit_of_work(admin) as session:
            await loader.load(session, read_example(), clock=FixedClock(START))
        async with unit_of_work(admin) as session:
            _audit(session, clock)
            await lots_service.start_lots(
                session,
                product_code="LOGIC28",
                fab_code="F1",
                route_code=None,
                count=4,
                wafer_count=5,
                priority_class=PriorityClass.NORMAL,
                due_at=None,
                code=None,
                carrier_code=None,
                actor=Principal(0, "test", AccountKind.SERVICE, frozenset(), None),
                clock=clock,
            )
        await _set_state(admin, clock, "F1-WETC02", "UDT")  # one wet bench to start with

        replicas = [Database.from_settings(settings) for _ in range(2)]
        a, b = (
            Dispatcher(db, clock, {"F1": Mode.AUTO}, owner=name, interval_s=0.1, lease_ttl_s=TTL_S)
            for db, name in zip(replicas, ("replica-a", "replica-b"), strict=True)
        )

        async def jobs() -> list[EquipmentJob]:
            async with unit_of_work(admin, write=False) as session:
                return list(await session.scalars(select(EquipmentJob)))

        async def owners() -> set[str]:
            async with unit_of_work(admin, write=False) as session:
                return set(
                    await session.scalars(
                        select(DispatchDecision.owner).where(
                            DispatchDecision.outcome == "requested"
                        )
                    )
                )

        tasks = [asyncio.create_task(d.run()) for d in (a, b)]

        # The wet bench takes one job; while it is requested (no adapter sends it here) the
        # bench counts as committed, so no later cycle of either replica offers it a second.
        async def bench_committed() -> bool:
            return len(await jobs()) == 1

        await _wait_for(bench_committed)
        await asyncio.sleep(0.5)  # both keep cycling: still one job, one leader
        assert len(await jobs()) == 1
        (leader_name,) = await owners()
        leader, standby = (a, b) if leader_name == a.owner else (b, a)
        standby_task = tasks[1] if leader is a else tasks[0]
        leader_task = tasks[0] if leader is a else tasks[1]

        # Kill the leader: its loop stops and it never releases the lease.
        async def no_release() -> None:
            return None

        leader.release = no_release  # type: ignore[method-assign]
        leader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leader_task
        killed_at = asyncio.get_running_loop().time()
        await _set_state(admin, clock, "F1-WETC02", "SBY")

        async def second_bench_busy() -> bool:
            return len(await jobs()) == 2

        await _wait_for(second_bench_busy)
        took_over_after = asyncio.get_running_loop().time() - killed_at
        assert await owners() == {leader.owner, standby.owner}
        assert not standby_task.done()
        # The standby waited for the dead leader's lease to expire (give or take a cycle).
        assert took_over_after >= TTL_S * 0.5

        all_jobs = await jobs()
        live = Counter(
            (j.lot_id, j.step_id, j.attempt) for j in all_jobs if j.status != JobStatus.FAILED
        )
        assert max(live.values()) == 1
        assert len({j.lot_id for j in all_jobs}) == len(all_jobs)
        report = await check_database(admin)
        assert report.ok, [v.as_dict() for v in report.violations]
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for db in replicas:
            await db.dispose()
        await admin.dispose()
        await drop_database(url)
