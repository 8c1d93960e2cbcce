"""What data collection and SPC add to a track-out.

    python bench/edc_track_out.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python bench/edc_track_out.py --database-url sqlite+aiosqlite:///var/bench-edc.db

On a throw-away database (PostgreSQL: beside the given one; SQLite: the given file, replaced)
with the example fab, one client moves lots of 25 wafers through step 10 (track-in, then
track-out; through the services, in one unit of work each, audited as in the service):

- ``no plan``: the step has no data collection plan for the lot's product (what every
  track-out pays: looking for a plan and for tool watches);
- ``plan``: an approved plan at the step measures 9 sites on every wafer (225 values), and an
  individuals chart per tool judges each wafer (25 points per lot, limits frozen after the
  first 25 points, Western Electric rules).

The two kinds of lots alternate, so that both see the same load on the machine.

Prints the track-out latency of each phase (median, p95) and the ratio; the last line is one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from mes.audit import recorder
from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind
from mes.auth.roles import Role
from mes.auth.service import Principal
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import migrate, throwaway
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.lots import service as lots
from mes.lots.commands import Reading, TrackIn, TrackOut
from mes.lots.states import PriorityClass
from mes.quality import charts, collection, plans
from mes.quality.schemas import ChartCreate, ParameterIn, PlanBody, PlanCreate
from mes.seed import loader

TOOL, WAFERS, SITES = "F1-WETC01", 25, 9
ACTOR = Principal(0, "bench", AccountKind.SERVICE, frozenset({Role.EQUIPMENT}), None)


def _context(session: Any, operation: str) -> None:
    bind(
        session,
        AuditContext(actor="bench", role="system", operation=operation, at=SystemClock().now()),
    )


async def _lots(db: Database, count: int, product: str) -> list[str]:
    async with unit_of_work(db) as session:
        _context(session, "bench.start")
        started = await lots.start_lots(
            session,
            product_code=product,
            fab_code="F1",
            route_code=None,
            count=count,
            wafer_count=WAFERS,
            priority_class=PriorityClass.NORMAL,
            due_at=None,
            code=None,
            carrier_code=None,
            actor=ACTOR,
            clock=SystemClock(),
        )
        return [lot.code for lot in started]


async def _move(db: Database, code: str, readings: tuple[Reading, ...]) -> float:
    async with unit_of_work(db) as session:
        _context(session, "bench.track_in")
        await lots.track_in(session, code, TrackIn(tool=TOOL), actor=ACTOR, clock=SystemClock())
    began = time.perf_counter()
    async with unit_of_work(db) as session:
        _context(session, "bench.track_out")
        await lots.track_out(
            session,
            code,
            TrackOut(readings=readings, by_tool=True),
            actor=ACTOR,
            clock=SystemClock(),
        )
    return time.perf_counter() - began


def _readings(rng: random.Random) -> tuple[Reading, ...]:
    return tuple(
        Reading("metrology", round(rng.gauss(100.0, 1.0), 4), slot=slot, site=site)
        for slot in range(1, WAFERS + 1)
        for site in range(1, SITES + 1)
    )


async def _arrange(db: Database) -> None:
    async with unit_of_work(db) as session:
        _context(session, "bench.plan")
        thk = ParameterIn(name="THK", unit="nm", source="metrology", sites=SITES, lsl=80, usl=120)
        await plans.create_plan(
            session,
            PlanCreate(
                name="BENCH",
                operation="PAD_OX_CLEAN",
                product="LOGIC28",
                body=PlanBody(parameters=[thk]),
            ),
            actor="eng-a",
        )
        await plans.approve_version(session, "BENCH", 1, actor="eng-b", clock=SystemClock())
        await charts.create_chart(
            session,
            ChartCreate(code="BENCH-THK", plan="BENCH", parameter="THK", context={"tool": TOOL}),
            actor="eng-a",
        )


def _figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    recorder.install()
    collection.install()
    url = args.database_url
    sqlite = make_url(url).get_backend_name() == "sqlite"
    if sqlite:
        await asyncio.to_thread(Path(make_url(url).database or "").unlink, missing_ok=True)
    else:
        url = await throwaway.create_database(args.database_url, prefix="mes_bench_edc")
    db = Database.from_settings(Settings(database_url=url))
    try:
        await migrate.upgrade(db.engine)
        async with unit_of_work(db) as session:
            await loader.load(session, loader.read_example(), clock=SystemClock())
        rng = random.Random(7)
        results: dict[str, Any] = {"backend": "sqlite" if sqlite else "postgresql"}
        await _arrange(db)
        # Alternating, so both phases see the same machine load: ANALOG180 lots have no plan
        # at the step, LOGIC28 lots have the plan (it is attached to that product).
        plain, measured = [], []
        pairs = zip(
            await _lots(db, args.lots, "ANALOG180"),
            await _lots(db, args.lots, "LOGIC28"),
            strict=True,
        )
        for without, with_plan in pairs:
            plain.append(await _move(db, without, ()))
            measured.append(await _move(db, with_plan, _readings(rng)))
        results["no_plan"] = _figures(plain)
        results["plan_225_values_25_points"] = _figures(measured)
        results["ratio_median"] = round(
            results["plan_225_values_25_points"]["median_ms"] / results["no_plan"]["median_ms"], 2
        )
        results["lots_per_phase"] = args.lots
        return results
    finally:
        await db.dispose()
        if not sqlite:
            await throwaway.drop_database(url, beside=args.database_url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="sqlite+aiosqlite:///var/bench-edc.db")
    parser.add_argument("--lots", type=int, default=40)
    found = asyncio.run(main(parser.parse_args()))
    for phase in ("no_plan", "plan_225_values_25_points"):
        median, p95 = found[phase]["median_ms"], found[phase]["p95_ms"]
        print(f"{phase:28s} median {median:8.2f} ms   p95 {p95:8.2f} ms")
    print(f"track-out with data collection and SPC / without: {found['ratio_median']:.2f}x")
    print(json.dumps(found))
