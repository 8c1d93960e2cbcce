"""Tool idle time between a tool being freed and its next job, with the dispatcher cycling
every interval only, and event-driven (woken by the committed change).

    python bench/dispatch_wakeup.py [--interval 5] [--rounds 8] [--database-url URL]

1. A throw-away database (SQLite file by default, or a PostgreSQL one beside ``URL``),
   migrated and seeded with the example fab; 20 lots waiting at their first step (wet clean).
2. The automatic dispatcher of fab F1 runs (``MES_DISPATCH_INTERVAL_S`` = ``--interval``) and
   sends lots to the wet benches (jobs requested; no adapter here, so they stay requested).
3. One round: the job on F1-WETC01 is withdrawn (``POST /jobs/{id}/abort`` before it is sent:
   the lot goes back to Waiting and the tool is free, as when a tool's job ends), and the
   time until the dispatcher has requested the next job for F1-WETC01 is the tool's idle time.
4. The same rounds with the periodic cycle only (the baseline) and event-driven; prints mean,
   p50 and p95 idle seconds of each and the ratio; the last line is one JSON object.

Here the tool is freed just after the cycle that gave it its job, so the periodic baseline
waits about one whole interval (the worst case; freed at random moments it is interval / 2
on average); event-driven waits for one cycle's own time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mes.audit import recorder  # noqa: E402
from mes.audit.context import AuditContext, bind  # noqa: E402
from mes.clock import SystemClock  # noqa: E402
from mes.config import Settings  # noqa: E402
from mes.db import migrate, throwaway  # noqa: E402
from mes.db.engine import Database  # noqa: E402
from mes.db.transaction import unit_of_work  # noqa: E402
from mes.dispatch.scheduler import PRINCIPAL, Dispatcher, Mode  # noqa: E402
from mes.equipment.models import Equipment  # noqa: E402
from mes.jobs import service as jobs_service  # noqa: E402
from mes.jobs.models import EquipmentJob  # noqa: E402
from mes.jobs.states import FINAL, JobCommand  # noqa: E402
from mes.lots import service as lots_service  # noqa: E402
from mes.lots.states import PriorityClass  # noqa: E402
from mes.seed import loader  # noqa: E402

recorder.install()
TOOL = "F1-WETC01"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def audited(session: Any, operation: str) -> None:
    at = SystemClock().now()
    bind(session, AuditContext(actor="bench", role="supervisor", operation=operation, at=at))


async def open_job(db: Database) -> EquipmentJob | None:
    async with unit_of_work(db, write=False) as session:
        return (
            await session.scalars(
                select(EquipmentJob)
                .join(Equipment, Equipment.id == EquipmentJob.equipment_id)
                .where(Equipment.code == TOOL, EquipmentJob.status.not_in(FINAL))
                .order_by(EquipmentJob.id.desc())
                .limit(1)
            )
        ).first()


async def wait_for_job(db: Database, newer_than: int, timeout_s: float) -> int:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        job = await open_job(db)
        if job is not None and job.id > newer_than:
            return job.id
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no job for {TOOL} within {timeout_s} s")


async def rounds(db: Database, *, event_driven: bool, interval: float, n: int) -> list[float]:
    clock = SystemClock()
    dispatcher = Dispatcher(
        db,
        clock,
        {"F1": Mode.AUTO},
        owner=f"bench-{event_driven}",
        interval_s=interval,
        lease_ttl_s=600,
        min_gap_s=0.0,
        event_driven=event_driven,
    )
    task = asyncio.create_task(dispatcher.run())
    idle: list[float] = []
    try:
        job_id = await wait_for_job(db, 0, interval * 3)
        for _ in range(n):
            async with unit_of_work(db) as session:
                audited(session, "bench.withdraw")
                job = await session.get(EquipmentJob, job_id)
                assert job is not None
                await jobs_service.request_command(
                    session, job.job_order_id, JobCommand.ABORT, principal=PRINCIPAL, clock=clock
                )
            freed = time.perf_counter()
            job_id = await wait_for_job(db, job_id, interval * 3)
            idle.append(time.perf_counter() - freed)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return idle


async def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = tempfile.TemporaryDirectory()
    if args.database_url:
        url = await throwaway.create_database(args.database_url, prefix="mes_bench_wakeup")
    else:
        url = f"sqlite+aiosqlite:///{tmp.name}/bench.db"
    db = Database.from_settings(Settings(database_url=url))
    try:
        await migrate.upgrade(db.engine)
        clock = SystemClock()
        async with unit_of_work(db) as session:
            audited(session, "bench.seed")
            await loader.load(session, loader.read_example(), clock=clock)
        async with unit_of_work(db) as session:
            audited(session, "bench.start")
            await lots_service.start_lots(
                session,
                product_code="LOGIC28",
                fab_code="F1",
                route_code=None,
                count=20,
                wafer_count=25,
                priority_class=PriorityClass.NORMAL,
                due_at=None,
                code=None,
                carrier_code=None,
                actor=PRINCIPAL,
                clock=clock,
            )
        periodic = await rounds(db, event_driven=False, interval=args.interval, n=args.rounds)
        woken = await rounds(db, event_driven=True, interval=args.interval, n=args.rounds)
    finally:
        await db.engine.dispose()
        if args.database_url:
            await throwaway.drop_database(url, beside=args.database_url)
        tmp.cleanup()

    def figures(xs: list[float]) -> dict[str, float]:
        return {
            "mean_s": round(statistics.fmean(xs), 4),
            "p50_s": round(percentile(xs, 0.5), 4),
            "p95_s": round(percentile(xs, 0.95), 4),
        }

    out: dict[str, object] = {
        "bench": "dispatch_wakeup",
        "backend": db.engine.dialect.name,
        "interval_s": args.interval,
        "rounds": args.rounds,
        "periodic": figures(periodic),
        "event_driven": figures(woken),
        "idle_ratio": round(statistics.fmean(woken) / statistics.fmean(periodic), 4),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    for mode in ("periodic", "event_driven"):
        f = result[mode]
        assert isinstance(f, dict)
        print(
            f"{mode:>13}: tool idle mean {f['mean_s']:.3f} s, p50 {f['p50_s']:.3f} s, "
            f"p95 {f['p95_s']:.3f} s"
        )
    print(f"event-driven / periodic idle time: {result['idle_ratio']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
