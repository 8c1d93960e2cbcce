"""Lot moves per second through the whole service, against what the database alone can do.

    python bench/lot_moves.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        --clients 32 --seconds 20

1. Creates a throw-away database beside the given one (dropped at the end), migrates it and
   loads the example fab, plus a private set of tools per client (a copy of one F1 tool of every
   tool group on the LOGIC28 route, qualified like the rest): clients never queue for each
   other's tools, so the figures measure the service, not the capacity of the example fab.
2. Baseline: the writes of one move done as raw SQL over asyncpg (lock the lot row and the tool
   row, update both, insert the tool's E10 history record, the lot event and the two audit
   records the service writes: lot and tool changed), by as many concurrent workers as there are
   clients: the ceiling of the database on this machine. (The service's audit sealer, which
   later hashes each audit record into the chain, has no counterpart here.)
3. Starts the real service in a subprocess (``mes serve --workers N``, N = 1 then 2) with
   its shipped settings (audit on, audit sealer running, log level info), bulk-starts lots
   through the API, logs every client in once as the demo operator and loops track-in →
   track-out over HTTP for the given time. A track-in and a track-out are two moves.
4. Prints moves/s, latency percentiles per move, errors, and the CPU the service, PostgreSQL and
   this client process used; the last line of the output is one JSON object with every figure.

``--profile DIR`` samples the single-worker service with py-spy during its measured window
(``pip install py-spy``) and prints where its CPU time goes.

The parts, beside this script: ``lot_moves_fixture`` (1), ``lot_moves_raw`` (2),
``service_process`` and ``lot_moves_http`` (3), ``measuring`` and ``lot_moves_report`` (4),
``py_spy_profile`` (``--profile``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from lot_moves_fixture import ROUTE, prepare
from lot_moves_http import http_phase
from lot_moves_raw import asyncpg_dsn, raw_phase
from lot_moves_report import describe
from py_spy_profile import describe_profile
from sqlalchemy.engine import make_url

from mes.db import throwaway

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TARGET_MOVES_PER_S, TARGET_P99_MS = 400.0, 150.0


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if make_url(args.database_url).get_backend_name() != "postgresql":
        raise SystemExit("the benchmark needs PostgreSQL (the baseline talks to it with asyncpg)")
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    url = await throwaway.create_database(args.database_url, prefix="mes_bench")
    print(f"throw-away database {make_url(url).database} on {make_url(url).host}")
    try:
        fixture = await prepare(url, args.clients)
        print(
            f"seeded in {fixture.seed_s:.1f} s: example fab + {len(fixture.tools[0])} private "
            f"tools per client; route {ROUTE}: {len(fixture.steps)} steps"
        )
        result: dict[str, Any] = {
            "benchmark": "lot_moves",
            "clients": args.clients,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "postgres": await _server_version(args.database_url),
            "target": {"moves_per_s": TARGET_MOVES_PER_S, "p99_ms": TARGET_P99_MS},
        }
        raw = await raw_phase(url, fixture, args.clients, args.warmup, args.seconds)
        result["raw_sql"] = raw
        print(*describe(f"raw SQL ({args.clients} asyncpg workers)", raw), sep="\n")
        result["http"] = {}
        for n in workers:
            figures = await http_phase(url, fixture, n, args, None)
            result["http"][str(n)] = figures
            ratio = figures["moves_per_s"] / raw["moves_per_s"] if raw["moves_per_s"] else 0.0
            figures["ratio_to_raw"] = round(ratio, 3)
            met = figures["moves_per_s"] >= TARGET_MOVES_PER_S and figures["p99_ms"] < TARGET_P99_MS
            figures["target_met"] = met
            print(*describe(f"HTTP, {n} worker(s), {args.clients} clients", figures), sep="\n")
            print(
                f"    HTTP/raw = {ratio:.3f}; target ≥ {TARGET_MOVES_PER_S:g} moves/s with p99 < "
                f"{TARGET_P99_MS:g} ms: {'met' if met else 'MISSED'}"
            )
        result["profiled_run"] = None
        if args.profile is not None:
            # A run of its own: py-spy takes CPU from the machine, so its figures are not the
            # measurement; they show where the service's time goes.
            figures = await http_phase(url, fixture, 1, args, args.profile)
            result["profiled_run"] = figures
            label = f"HTTP, 1 worker, {args.clients} clients, under py-spy (not the measurement)"
            print(*describe(label, figures), sep="\n")
            if figures.get("profile"):
                print(*describe_profile(figures["profile"]), sep="\n")
        return result
    finally:
        if args.keep_database:
            print(f"kept database {make_url(url).database}")
        else:
            await throwaway.drop_database(url, beside=args.database_url)


async def _server_version(url: str) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("MES_BENCH_DATABASE_URL", DEFAULT_URL),
        help="a PostgreSQL database; the benchmark creates and drops its own beside it",
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--workers", default="1,2", help="service worker counts to run, e.g. 1,2")
    parser.add_argument("--lots-per-client", type=int, default=0, help="0: enough for the run")
    parser.add_argument("--profile", type=Path, help="py-spy the 1-worker service into DIR")
    parser.add_argument("--keep-database", action="store_true")
    return parser.parse_args(argv)


def run(awaitable: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    try:
        import uvloop  # keeps the client's own overhead small
    except ImportError:
        return asyncio.run(awaitable())
    return uvloop.run(awaitable())


if __name__ == "__main__":
    arguments = parse()
    figures = run(lambda: main(arguments))
    print(json.dumps(figures, sort_keys=True))
