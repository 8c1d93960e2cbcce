"""Two releasers on one PostgreSQL database, each with its own engine (real commits), as two
service replicas would run them, on one fake clock: the plan's lots are released exactly once
each — by the lease holder, by a standby taking over a dead leader's lease, and even by two
transactions releasing the same plan without any lease."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from mes.audit.context import AuditContext, bind
from mes.clock import FixedClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.lots.models import Lot
from mes.planning import service
from mes.planning.models import StartPlan, StartPlanRelease
from mes.planning.releaser import Releaser
from mes.planning.rules import RatePer
from mes.planning.schemas import StartPlanCreate
from mes.seed import loader
from tests.conftest import START
from tests.databases import BACKEND, create_database, drop_database

pytestmark = pytest.mark.skipif(
    BACKEND != "postgresql",
    reason="concurrent releasers need two engines committing at once: PostgreSQL only "
    "(set MES_TEST_DATABASE_URL)",
)
TTL = timedelta(minutes=5)


@dataclass
class Line:
    admin: Database
    replicas: list[Database]
    clock: FixedClock
    plan: str = ""


@pytest.fixture(scope="module")
async def network(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Line]:
    """The example network (its own plans off) and two more engines for the two releasers;
    one database for the module: each test releases from a plan of its own."""
    url = await create_database(tmp_path_factory.mktemp("releasers"), "releasers")
    settings = Settings(database_url=url)
    admin = Database.from_settings(settings)
    clock = FixedClock(START)
    replicas: list[Database] = []
    try:
        await migrate.upgrade(admin.engine)
        async with unit_of_work(admin) as session:
            await loader.load(session, loader.read_example(), clock=clock)
        replicas = [Database.from_settings(settings) for _ in range(2)]
        yield Line(admin, replicas, clock)
    finally:
        for db in replicas:
            await db.dispose()
        await admin.dispose()
        await drop_database(url)


@pytest.fixture
async def line(network: Line, request: pytest.FixtureRequest) -> Line:
    """A new plan starting now (one lot a minute, catch-up cap 3), the only active one; the
    previous test's leases have run out."""
    network.clock.advance(TTL * 2)
    network.plan = f"T-{request.node.name[5:20]}"
    async with unit_of_work(network.admin) as session:
        bind(session, AuditContext("test", "system", "test.setup", network.clock.now()))
        await session.execute(update(StartPlan).values(active=False))
        await service.create_plan(
            session,
            StartPlanCreate(
                code=network.plan,
                fab="F1",
                product="MONITOR",
                rate=60,
                rate_per=RatePer.HOUR,
                wafer_count=2,
                catch_up_max=3,
                priority_mix={"normal": 1, "hot": 1},
            ),
            actor="test",
            clock=network.clock,
        )
    return network


async def released(line: Line) -> list[tuple[int, str, str]]:
    """(sequence, lot, owner) of every release of the test's plan."""
    async with unit_of_work(line.admin, write=False) as session:
        rows = await session.execute(
            select(StartPlanRelease.sequence, Lot.code, StartPlanRelease.owner)
            .join(Lot, Lot.id == StartPlanRelease.lot_id)
            .join(StartPlan, StartPlan.id == StartPlanRelease.start_plan_id)
            .where(StartPlan.code == line.plan)
            .order_by(StartPlanRelease.sequence)
        )
        return [(r[0], r[1], r[2]) for r in rows.all()]


async def started_lots(line: Line) -> int:
    """Lots started since the test's plan was made (by anyone: a double release would show)."""
    async with unit_of_work(line.admin, write=False) as session:
        plan = await service.get_plan(session, line.plan)
        count = await session.scalar(
            select(func.count()).select_from(Lot).where(Lot.started_at >= plan.starts_at)
        )
        return int(count or 0)


def pair(line: Line) -> tuple[Releaser, Releaser]:
    a, b = (
        Releaser(db, line.clock, owner=name, lease_ttl_s=TTL.total_seconds())
        for db, name in zip(line.replicas, ("replica-a", "replica-b"), strict=True)
    )
    return a, b


async def test_two_releasers_release_each_slot_exactly_once(line: Line) -> None:
    a, b = pair(line)
    await asyncio.gather(a.cycle(), b.cycle())  # slot 1, at the plan's start
    for _ in range(20):  # slots 2..21, one a minute, both releasers racing each time
        line.clock.advance(timedelta(seconds=60))
        await asyncio.gather(a.cycle(), b.cycle())
    line.clock.advance(timedelta(minutes=4))  # slots 22..25 due: the cap releases 23..25
    await asyncio.gather(a.cycle(), b.cycle())

    rows = await released(line)
    assert [r[0] for r in rows] == [*range(1, 22), 23, 24, 25]
    assert len({r[1] for r in rows}) == len(rows) == 24
    assert await started_lots(line) == 24
    assert len({r[2] for r in rows}) == 1  # one leader did it all (the lease never ran out)


async def test_a_standby_takes_over_a_dead_leaders_lease_without_releasing_twice(
    line: Line,
) -> None:
    a, b = pair(line)
    first = await a.cycle()
    assert len(first.released) == 1
    line.clock.advance(timedelta(seconds=60))
    standby = await b.cycle()  # a holds the lease: b releases nothing
    assert (standby.leading, standby.released) == (set(), [])
    assert len((await a.cycle()).released) == 1

    # a dies without giving its lease up; b takes over once the lease has expired.
    line.clock.advance(TTL - timedelta(seconds=1))
    assert (await b.cycle()).released == []
    line.clock.advance(timedelta(seconds=2))
    taken = await b.cycle()  # slots 3..7 are due by now: the catch-up cap releases 5..7
    assert taken.leading
    assert len(taken.released) == 3
    # a comes back from its stall: the lease is b's now, so it releases nothing.
    line.clock.advance(timedelta(seconds=60))
    late = await a.cycle()
    assert (late.leading, late.released) == (set(), [])
    assert len((await b.cycle()).released) == 1

    rows = await released(line)
    assert [r[0] for r in rows] == [1, 2, 5, 6, 7, 8]
    assert [r[2] for r in rows] == ["replica-a"] * 2 + ["replica-b"] * 4
    assert await started_lots(line) == 6


async def test_two_transactions_releasing_one_plan_without_a_lease_never_double_release(
    line: Line,
) -> None:
    # The lease is the first guard; the plan row lock, the idempotency claim and the unique
    # (plan, sequence) are the ones under it. Bypass the lease and race the releases directly.
    async with unit_of_work(line.admin, write=False) as session:
        plan_id = (await service.get_plan(session, line.plan)).id

    async def release(db: Database, owner: str) -> int:
        async with unit_of_work(db) as session:
            context = AuditContext(
                actor="releaser", role="system", operation="test.race", at=line.clock.now()
            )
            bind(session, context)
            return len(await service.release_due(session, plan_id, owner=owner, clock=line.clock))

    total = 0
    for _ in range(8):
        line.clock.advance(timedelta(seconds=150))  # 2-3 slots due each time
        counts = await asyncio.gather(
            *(release(db, f"racer-{n}") for n, db in enumerate(line.replicas * 2))
        )
        assert sorted(counts)[:-1] == [0, 0, 0]  # the first one releases, the others see it
        total += sum(counts)

    rows = await released(line)
    assert [r[0] for r in rows] == list(range(1, total + 1))
    assert total == 21  # slots 1..21 are due after 8 x 150 s = 20 min
    assert await started_lots(line) == total
