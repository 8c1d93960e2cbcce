"""The morning reports on a large generated history: how long each report takes.

    python bench/reports.py                                   # SQLite file under var/
    python bench/reports.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test

1. A throw-away database with the example fab and one long route (``--steps`` steps over the
   example's tool groups: SMT2020's routes have 240-583 steps).
2. A generated history of ``--lots`` lots started evenly over ``--days`` days, ``--hours-per-step``
   hours per step on average (exponential, seeded): per step a track-in and a track-out
   (2 % of them rework back one step), 1 % of the track-outs followed by a scrap of one wafer,
   5 % of the lots held once (half of those holds still open). Written with bulk inserts, the
   way the service writes them (the same columns and snapshot fields), not through the API.
3. Each report (moves, WIP, holds, scrap, delivery) for fab F1, for the last day and for the
   last 30 days, timed (best of ``--repeat``), in process.
4. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mes.audit import recorder  # noqa: E402
from mes.audit.context import AuditContext, bind  # noqa: E402
from mes.clock import FixedClock  # noqa: E402
from mes.config import Settings  # noqa: E402
from mes.db import migrate, throwaway  # noqa: E402
from mes.db.engine import Database  # noqa: E402
from mes.db.transaction import unit_of_work  # noqa: E402
from mes.fabs.models import Fab, ToolGroup  # noqa: E402
from mes.lots.models import HoldCode, Lot, LotEvent, LotHold  # noqa: E402
from mes.lots.states import LotState, PriorityClass  # noqa: E402
from mes.products.models import Product  # noqa: E402
from mes.reports import morning  # noqa: E402
from mes.routes import service as routes_service  # noqa: E402
from mes.routes.models import Route, RouteVersion, Step  # noqa: E402
from mes.routes.schemas import RouteCreate, StepIn  # noqa: E402
from mes.seed import loader  # noqa: E402

END = datetime(2026, 6, 1, tzinfo=UTC)
CHUNK = 5000


async def _master_data(db: Database, steps: int) -> tuple[int, int, int, list[int], list[int]]:
    async with unit_of_work(db) as session:
        await loader.load(
            session, loader.read_example(), clock=FixedClock(END - timedelta(days=400))
        )
    async with unit_of_work(db) as session:
        bind(session, AuditContext(actor="bench", role="system", operation="bench.route", at=END))
        groups = list(await session.scalars(select(ToolGroup.code).order_by(ToolGroup.code)))
        body = RouteCreate(
            code="R-BENCH",
            name="bench",
            product="LOGIC28",
            steps=[
                StepIn(
                    sequence=10 * (i + 1),
                    operation=f"OP{i + 1:04d}",
                    tool_group=groups[i % len(groups)],
                    process_time_s=3600,
                )
                for i in range(steps)
            ],
        )
        await routes_service.create_route(session, body, actor="bench")
    async with unit_of_work(db, write=False) as session:
        version_id = int(
            await session.scalar(
                select(RouteVersion.id)
                .join(Route, Route.id == RouteVersion.route_id)
                .where(Route.code == "R-BENCH")
            )
            or 0
        )
        fab_id = int(await session.scalar(select(Fab.id).where(Fab.code == "F1")) or 0)
        product_id = int(
            await session.scalar(select(Product.id).where(Product.code == "LOGIC28")) or 0
        )
        step_ids = list(
            await session.scalars(
                select(Step.id).where(Step.route_version_id == version_id).order_by(Step.sequence)
            )
        )
        codes = list(await session.scalars(select(HoldCode.id).order_by(HoldCode.code)))
    return fab_id, product_id, version_id, step_ids, codes


def _history(
    args: argparse.Namespace, fab_id: int, product_id: int, version_id: int, steps: list[int],
    hold_codes: list[int],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    rng = random.Random(args.seed)
    start_of_history = END - timedelta(days=args.days)
    lots, events, holds = [], [], []
    mean_step_s = args.hours_per_step * 3600
    for n in range(args.lots):
        lot_id = n + 1
        started = start_of_history + timedelta(seconds=n * args.days * 86400 / args.lots)
        t, i, wafers, reworks = started, 0, 25, 0
        priority = rng.choice(["normal", "normal", "normal", "hot", "super_hot"])
        due = started + timedelta(seconds=len(steps) * mean_step_s * rng.uniform(0.8, 1.6))

        def event(kind: str, at: datetime, step: int, after_step: int | None, state: str,
                  before_wafers: int, wafers: int, lot_id: int = lot_id,
                  priority: str = priority, **extra: Any) -> None:  # fmt: skip
            events.append(
                {
                    "lot_id": lot_id, "fab_id": fab_id, "event_type": kind, "occurred_at": at,
                    "actor": "bench", "step_id": step,
                    "before": {"wafer_count": before_wafers},
                    "after": {"state": state, "step_id": after_step, "wafer_count": wafers,
                              "fab_id": fab_id, "priority_class": priority, **extra},
                }
            )  # fmt: skip

        event("START", t, steps[0], steps[0], "Waiting", 0, wafers)
        ended: datetime | None = None
        while True:
            t_in = t + timedelta(seconds=rng.expovariate(1 / (mean_step_s * 0.7)))
            t_out = t_in + timedelta(seconds=rng.expovariate(1 / (mean_step_s * 0.3)))
            if t_out >= END:
                break
            event("TRACK_IN", t_in, steps[i], steps[i], "Running", wafers, wafers)
            rework = i > 0 and reworks < 3 and rng.random() < 0.02
            nxt = i - 1 if rework else i + 1
            done = nxt >= len(steps)
            event(
                "TRACK_OUT", t_out, steps[i], None if done else steps[nxt],
                "Completed" if done else "Waiting", wafers, wafers, wafers_processed=wafers,
                outcome="rework" if rework else "pass",
            )  # fmt: skip
            reworks += rework
            t = t_out
            if not done and wafers > 1 and rng.random() < 0.01:
                wafers -= 1
                event("SCRAP", t, steps[nxt], steps[nxt], "Waiting", wafers + 1, wafers,
                      reason_code=rng.choice(["BROKEN", "PARTICLES", "PARAMETRIC"]))  # fmt: skip
            if done:
                ended = t_out
                break
            i = nxt
        if rng.random() < 0.05 and ended is None:
            placed = t
            released = placed + timedelta(hours=rng.uniform(1, 96)) if rng.random() < 0.5 else None
            if released is not None and released >= END:
                released = None
            holds.append(
                {
                    "lot_id": lot_id, "fab_id": fab_id, "hold_code_id": rng.choice(hold_codes),
                    "step_id": steps[i], "reason": "bench", "placed_by": "bench",
                    "placed_at": placed, "released_at": released,
                    "released_by": "bench" if released else None,
                }
            )  # fmt: skip
        on_hold = bool(holds) and holds[-1]["lot_id"] == lot_id and holds[-1]["released_at"] is None
        lots.append(
            {
                "id": lot_id, "code": f"B{lot_id:07d}", "fab_id": fab_id, "product_id": product_id,
                "route_version_id": version_id,
                "current_step_id": None if ended else steps[min(i, len(steps) - 1)],
                "state": LotState.COMPLETED if ended else (
                    LotState.ON_HOLD if on_hold else LotState.WAITING
                ),
                "priority_class": PriorityClass(priority), "due_at": due, "wafer_count": wafers,
                "started_at": started, "step_entered_at": t, "ended_at": ended, "version": 1,
            }
        )  # fmt: skip
    return lots, events, holds


async def _write(db: Database, table: Any, rows: list[dict[str, Any]]) -> None:
    for first in range(0, len(rows), CHUNK):
        async with unit_of_work(db) as session:
            await session.execute(insert(table), rows[first : first + CHUNK])


async def _timed(work: Any, repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = await work()
        best = min(best, time.perf_counter() - began)
    return round(best * 1000, 1), result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    recorder.install()
    url = args.database_url
    sqlite = make_url(url).get_backend_name() == "sqlite"
    if sqlite:
        path = Path(make_url(url).database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(path.unlink, missing_ok=True)
    else:
        url = await throwaway.create_database(args.database_url, prefix="mes_bench_reports")
    db = Database.from_settings(Settings(database_url=url))
    try:
        await migrate.upgrade(db.engine)
        fab_id, product_id, version_id, steps, codes = await _master_data(db, args.steps)
        began = time.perf_counter()
        lots, events, holds = _history(args, fab_id, product_id, version_id, steps, codes)
        await _write(db, Lot.__table__, lots)
        await _write(db, LotEvent.__table__, events)
        await _write(db, LotHold.__table__, holds)
        results: dict[str, Any] = {
            "backend": "sqlite" if sqlite else "postgresql",
            "lots": len(lots),
            "lot_events": len(events),
            "holds": len(holds),
            "steps": len(steps),
            "wip_lots_at_end": sum(1 for lot in lots if lot["ended_at"] is None),
            "load_s": round(time.perf_counter() - began, 1),
        }
        if not sqlite:
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql("ANALYZE")
        last_day = (END - timedelta(days=1)).date()
        for label, first in (("1_day", last_day), ("30_days", last_day - timedelta(days=29))):
            async with unit_of_work(db, write=False) as session:
                w = await morning.window(session, "F1", first, last_day, END)

                async def holds_report(session: Any = session, w: Any = w) -> Any:
                    return await morning.holds(session, w, 24.0)

                reports = {
                    "moves": lambda session=session, w=w: morning.moves(session, w),
                    "wip": lambda session=session, w=w: morning.wip(session, w),
                    "holds": holds_report,
                    "scrap": lambda session=session, w=w: morning.scrap_and_rework(session, w),
                    "delivery": lambda session=session, w=w: morning.delivery(session, w),
                }
                for name, work in reports.items():
                    ms, found = await _timed(work, args.repeat)
                    size = len(found[0]) if isinstance(found, tuple) else len(found)
                    results[f"{name}_{label}_ms"] = ms
                    results[f"{name}_{label}_rows"] = size
        return results
    finally:
        await db.dispose()
        if not sqlite:
            await throwaway.drop_database(url, beside=args.database_url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="sqlite+aiosqlite:///var/bench-reports.db")
    parser.add_argument("--lots", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--hours-per-step", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    found = asyncio.run(main(parser.parse_args()))
    for key, value in found.items():
        print(f"{key:>28}: {value}")
    print(json.dumps(found))
