"""Console page times and live-update delay on a full SMT2020 fab.

    python bench/console.py --data /work/shared/data/smt2020/SMT2020_HVLM
    python bench/console.py --data ... --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test

1. Creates a throw-away database (SQLite in a temporary folder, or PostgreSQL beside the given
   one, dropped at the end), migrates it, imports the SMT2020 folder as fab ``HV`` (the code of
   ``mes import smt2020``), adds one account with every human role and a PM plan per tool group
   (a running fab's boards show PM status; the import brings no plans).
2. Signs in through the console's form and requests each main page ``--rounds`` times through the
   service's ASGI app in this process (server time: routing, reads, rendering; no network):
   network overview, fab board, one tool tile, tool pages and lot pages (round-robin over tools and
   lots), holds, recipes, audit.
3. Live updates: a change feed like the service's (polling every second) follows the database;
   a tool state change is committed and the time until its event comes out of a page's stream is
   measured, ``--changes`` times.
4. Prints figures; the last line is one JSON object with every figure.

Targets (issue 15): every page ≤ 300 ms server time at p95; live updates ≤ 2 s after the change.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydantic import SecretStr
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mes.audit import recorder  # noqa: E402
from mes.audit.context import AuditContext, bind  # noqa: E402
from mes.auth.models import AccountKind, User, UserRole  # noqa: E402
from mes.auth.passwords import hash_password  # noqa: E402
from mes.auth.roles import HUMAN_ROLES  # noqa: E402
from mes.cli import import_smt2020_into  # noqa: E402
from mes.clock import FixedClock  # noqa: E402
from mes.config import Settings  # noqa: E402
from mes.console.feed import ChangeFeed, Interest  # noqa: E402
from mes.db import migrate, throwaway  # noqa: E402
from mes.db.engine import Database  # noqa: E402
from mes.db.transaction import unit_of_work  # noqa: E402
from mes.equipment import pm  # noqa: E402
from mes.equipment import service as equipment_service  # noqa: E402
from mes.equipment.models import Equipment  # noqa: E402
from mes.equipment.pm_rules import PmTrigger  # noqa: E402
from mes.equipment.schemas import PmPlanCreate, StateChange  # noqa: E402
from mes.equipment.states import E10State  # noqa: E402
from mes.fabs.models import ToolGroup  # noqa: E402
from mes.lots.models import Lot  # noqa: E402
from mes.main import create_app, settle_heap  # noqa: E402

recorder.install()  # the benchmark's own writes are audited as in the service

FAB = "HV"
USER, PASSWORD = "bench", "bench-password-0123"
TARGET_P95_MS, TARGET_LIVE_S = 300.0, 2.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _account(db: Database, clock: FixedClock) -> None:
    async with unit_of_work(db) as session:
        bind(session, AuditContext(actor="bench", role="system", operation="bench", at=clock.now()))
        session.add(
            User(
                username=USER,
                display_name=USER,
                kind=AccountKind.HUMAN,
                roles=[UserRole(role=r) for r in sorted(HUMAN_ROLES)],
                password_hash=hash_password(PASSWORD),
                certifications=[],
            )
        )


async def _activity(db: Database, clock: FixedClock) -> int:
    """PM plans as a running fab has them (SMT2020's calendars are not imported as plans): one
    per tool group, calendar or wafer count, started at staggered past times so that boards show
    some tools due and some upcoming, and a few process-hours plans (those read tool history)."""
    async with unit_of_work(db) as session:
        bind(session, AuditContext(actor="bench", role="system", operation="bench", at=clock.now()))
        groups = list(await session.scalars(select(ToolGroup.code).order_by(ToolGroup.code)))
        for i, group in enumerate(groups):
            trigger = (PmTrigger.PROCESS_HOURS, PmTrigger.WAFERS, PmTrigger.CALENDAR)[
                0 if i % 20 == 0 else 1 if i % 3 == 0 else 2
            ]
            interval, warning = {
                PmTrigger.CALENDAR: (7.0, 1.0),
                PmTrigger.WAFERS: (5000.0, 500.0),
                PmTrigger.PROCESS_HOURS: (100.0, 10.0),
            }[trigger]
            plan = PmPlanCreate(
                code=f"PM-{i:03d}",
                name=f"PM of {group}",
                tool_group=group,
                trigger=trigger,
                interval=interval,
                warning=warning,
                starts_at=clock.now() - timedelta(days=i % 9),
            )
            await pm.create_plan(session, plan, actor="bench", clock=clock)
    return len(groups)


async def _sign_in(web: httpx.AsyncClient) -> None:
    page = await web.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    answer = await web.post(
        "/console/login", data={"username": USER, "password": PASSWORD, "csrf": token.group(1)}
    )
    assert answer.status_code == 303, answer.text


async def _pages(
    web: httpx.AsyncClient,
    db: Database,
    rounds: int,
    only: list[str],
    slow: dict[str, str],
    cpu: dict[str, list[float]],
) -> dict[str, list[float]]:
    async with unit_of_work(db, write=False) as session:
        tools = list(await session.scalars(select(Equipment.code).order_by(Equipment.code)))
        lots = list(await session.scalars(select(Lot.code).order_by(Lot.code)))
    paths = {
        "overview": lambda i: "/console",
        "board": lambda i: f"/console/fabs/{FAB}",
        "tile": lambda i: f"/console/fabs/{FAB}?tool={tools[i * 7 % len(tools)]}",
        "tool": lambda i: f"/console/tools/{tools[i * 13 % len(tools)]}",
        "lot": lambda i: f"/console/lots/{lots[i * 17 % len(lots)]}",
        "holds": lambda i: "/console/holds",
        "recipes": lambda i: "/console/recipes",
        "audit": lambda i: "/console/audit",
    }
    if only:
        paths = {name: path for name, path in paths.items() if name in only}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for name, path in paths.items():
        await web.get(path(0))  # warm-up
        cpu[name] = []
        for i in range(rounds):
            began, cpu_began = time.perf_counter(), time.process_time()
            answer = await web.get(path(i))
            took = (time.perf_counter() - began) * 1000
            # CPU of this process (the app runs in it): against wall time, what the load cost.
            cpu[name].append((time.process_time() - cpu_began) * 1000)
            if took > max(times[name], default=0.0):
                slow[name] = path(i)
            times[name].append(took)
            assert answer.status_code == 200, (name, answer.status_code, answer.text[:300])
    return times


async def _live(db: Database, changes: int) -> list[float]:
    """Seconds from a committed tool state change to its event on a board's stream."""
    feed = ChangeFeed(db, interval_s=1.0)
    stream = feed.stream(Interest(prefixes=("tool-",), fabs=frozenset({FAB})), heartbeat_s=30)
    assert (await anext(stream)).startswith("retry")
    await asyncio.sleep(1.5)  # the feed's first look
    async with unit_of_work(db, write=False) as session:
        tools = list(await session.scalars(select(Equipment.code).order_by(Equipment.code)))
    delays = []
    clock = FixedClock(datetime.now(UTC))
    for i in range(changes):
        code = tools[i * 11 % len(tools)]
        state = E10State.ENG if i % 2 == 0 else E10State.SBY
        async with unit_of_work(db) as session:
            bind(
                session,
                AuditContext(actor="bench", role="system", operation="bench", at=clock.now()),
            )
            tool = await equipment_service.get_equipment(session, code)
            change = StateChange(version=tool.version, state=state, reason="bench")
            await equipment_service.change_state(session, code, change, actor="bench", clock=clock)
        committed = time.perf_counter()
        while True:
            chunk = await asyncio.wait_for(anext(stream), 10)
            if f"event: tool-{code}\n" in chunk:
                break
        delays.append(time.perf_counter() - committed)
        await asyncio.sleep(0.3 + (i % 4) * 0.2)  # changes land at different points of a poll
    await stream.aclose()
    await feed.stop()
    return delays


async def run(args: argparse.Namespace) -> dict[str, object]:
    if args.database_url:
        url = await throwaway.create_database(args.database_url, prefix="mes_bench_console")
    else:
        url = throwaway.sqlite_database(Path(tempfile.mkdtemp()), "bench_console")
    settings = Settings(database_url=url, jwt_secret=SecretStr("bench-" + "k" * 40))
    db = Database.from_settings(settings)
    try:
        await migrate.upgrade(db.engine)
        clock = FixedClock(datetime.now(UTC))
        began = time.perf_counter()
        counts = await import_smt2020_into(db, args.data, FAB, None, clock=clock)
        import_s = time.perf_counter() - began
        await _account(db, clock)
        plans = await _activity(db, clock)
        async with unit_of_work(db, write=False) as session:
            n_tools = len(list(await session.scalars(select(Equipment.id))))
            n_lots = len(list(await session.scalars(select(Lot.id))))
        print(f"imported {n_tools} tools and {n_lots} lots in {import_s:.1f} s ({counts})")
        print(f"added {plans} PM plans (one per tool group)")
        app = create_app(settings, database=db, background=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as web:
            await _sign_in(web)
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            slow: dict[str, str] = {}
            cpu: dict[str, list[float]] = {}
            if not args.no_freeze:
                settle_heap()  # as `mes serve` does once started (the app here is handed its db)
            times = await _pages(web, db, args.rounds, args.pages, slow, cpu)
            if profiler is not None:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
        delays = await _live(db, args.changes)
    finally:
        await db.dispose()
        if args.database_url:
            await throwaway.drop_database(url, beside=args.database_url)
    figures: dict[str, object] = {
        "backend": "postgresql" if args.database_url else "sqlite",
        # Page times are CPU-bound here: on a shared machine read them against its load.
        "load_average_1m": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
        "tools": n_tools,
        "lots": n_lots,
        "rounds": args.rounds,
    }
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'page':10} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'cpu p50':>8} {'cpu p95':>8}")
    worst = 0.0
    for name, values in times.items():
        p50, p95 = statistics.median(values), percentile(values, 0.95)
        worst = max(worst, p95)
        c50, c95 = statistics.median(cpu[name]), percentile(cpu[name], 0.95)
        print(
            f"{name:10} {p50:8.1f} {p95:8.1f} {max(values):8.1f} {c50:8.1f} {c95:8.1f}"
            f"  slowest: {slow[name]}"
        )
        figures[f"{name}_p50_ms"] = round(p50, 1)
        figures[f"{name}_p95_ms"] = round(p95, 1)
        figures[f"{name}_cpu_p95_ms"] = round(c95, 1)
    live_p95 = percentile(delays, 0.95)
    print(
        f"live update: median {statistics.median(delays):.2f} s, p95 {live_p95:.2f} s, "
        f"max {max(delays):.2f} s over {len(delays)} changes"
    )
    figures.update(
        worst_page_p95_ms=round(worst, 1),
        live_median_s=round(statistics.median(delays), 2),
        live_p95_s=round(live_p95, 2),
        pages_meet_target=worst <= TARGET_P95_MS,
        live_meets_target=live_p95 <= TARGET_LIVE_S,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an SMT2020-format folder")
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default: SQLite)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--changes", type=int, default=12)
    parser.add_argument("--pages", nargs="*", default=[], help="only these pages (names above)")
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave the heap to the collector (gc.freeze() is what `mes serve` does)",
    )
    parser.add_argument(
        "--profile", type=int, default=0, help="print the N costliest calls (cProfile)"
    )
    figures = asyncio.run(run(parser.parse_args()))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
