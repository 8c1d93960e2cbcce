"""Soak: the simulated fab with the dispatcher and API load for a set time; is anything growing
without bound?

Sets up a throw-away database (PostgreSQL beside ``--database-url``, or SQLite) with a small fab
of four simulated tools (wet bench, deposition, metrology, etch) on a four-step route, starts the
tools (``equipment_sims``, fast clock) and ``mes serve`` with the adapters, the dispatcher
(auto, every second) and the retention job pruning dispatch decisions and idempotency records
older than ``--retention`` seconds. ``--clients`` API clients keep about ``--wip`` lots in the
line (starts with an Idempotency-Key) and read WIP, lots and decisions.

Every ``--interval`` seconds it prints a sample: the service's RSS, its open database
connections, the interval's p99 API latency, the tool-event lag (the oldest last event of a
connected tool), the decision-log and other table sizes, lots completed, and whether the
invariant checker passes.

"Bounded": over the second half of the run (after warm-up, and after the retention window has
filled) the least-squares slope of each watched series, times that half's length, stays within
its tolerance (``TOLERANCE``: absolute, or relative to the series' median). Business history
(lot events, audit records) grows with the work by design and is reported, not judged.

Ends with one JSON line; exits 1 if a series is unbounded or an invariant failed.

    .venv/bin/python bench/soak.py --seconds 600        # make soak
    .venv/bin/python bench/soak.py --seconds 90 --interval 5 --retention 20   # the CI test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text

from mes.auth.tokens import issue_access_token
from mes.check.invariants import check_database
from mes.clock import FixedClock, SystemClock
from mes.config import Settings
from mes.db import migrate, throwaway
from mes.db.engine import Database, create_engine, is_sqlite
from mes.db.transaction import unit_of_work
from mes.opcua.models import AdapterLease
from mes.seed import loader

sys.path.insert(0, str(Path(__file__).parent))
from service_process import DEFAULT_DATABASE_URL, free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = "soak-signing-key-" + uuid.uuid4().hex
USER = "soak"
TABLES = (
    "dispatch_decision",
    "idempotency_record",
    "equipment_state_event",
    "lot_event",
    "audit_event",
    "equipment_job",
)
# series -> (absolute tolerance, relative tolerance) of its growth over the judged half.
TOLERANCE: dict[str, tuple[float, float]] = {
    "rss_mb": (25.0, 0.10),
    "db_connections": (3.0, 0.0),
    "p99_ms": (250.0, 1.0),  # latency is noisy: bounded means it does not double
}
# The tables under retention are bounded by design if no row outlives its retention (plus two
# pruning intervals and a margin): checked at every sample, with their growth slope reported.
PRUNED = {"dispatch_decision": "cycle_at", "idempotency_record": "created_at"}
STEPS = (  # sequence, operation, tool group, processing kind, recipe, tool
    (10, "CLEAN", "S_WET", "wet_bench", "S_WET_CLEAN", "S1-WET01"),
    (20, "DEP", "S_DEP", "cluster", "S_DEP_OX", "S1-DEP01"),
    (30, "THK", "S_MET", "single_wafer", "S_MET_THK", "S1-MET01"),
    (40, "ETCH", "S_ETCH", "cluster", "S_ETCH_OX", "S1-ETCH01"),
)


def fab(base_port: int) -> dict[str, Any]:
    return {
        "format": "fab-mes-example/1",
        "fabs": [{"code": "S1", "name": "Soak fab", "timezone": "UTC",
                  "areas": [{"code": "ALL", "name": "all"}]}],
        "tool_groups": [{"code": g, "name": g, "processing_kind": k} for _, _, g, k, _, _ in STEPS],
        "tools": [
            {"code": tool, "name": tool, "fab": "S1", "area": "ALL", "tool_group": g,
             "chambers": ["PM1", "PM2"] if k == "cluster" else [],
             "max_lots": 2 if k == "wet_bench" else 1,
             "opcua_endpoint": f"opc.tcp://127.0.0.1:{base_port + i}/{tool}"}
            for i, (_, _, g, k, _, tool) in enumerate(STEPS)
        ],
        "products": [{"code": "SPROD", "name": "soak product"}],
        "recipes": [
            {"name": r, "tool_group": g, "body": {"parameters": [{"name": "time", "value": 30}]}}
            for _, _, g, _, r, _ in STEPS
        ],
        "routes": [{
            "code": "R-S", "name": "soak route", "product": "SPROD",
            "steps": [
                {"sequence": q, "operation": op, "tool_group": g, "recipe": r,
                 "process_time_s": 300,
                 **({"batch_min": 1, "batch_max": 2} if k == "wet_bench" else {})}
                for q, op, g, k, r, _ in STEPS
            ],
        }],
        "carriers": [],
        "users": [{"username": USER, "display_name": "soak load", "roles": ["engineer", "operator"],
                   "password": "soak-password-" + uuid.uuid4().hex,
                   "certified_for": [g for _, _, g, _, _, _ in STEPS]}],
    }  # fmt: skip


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y)."""
    if len(points) < 2:
        return 0.0
    mt = statistics.fmean(t for t, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def verdict(samples: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Per watched series: growth over the second half (slope x its length) and bounded or not."""
    judged = [s for s in samples if s["t"] >= seconds / 2]
    out: dict[str, Any] = {}
    for table in PRUNED:
        points = [(s["t"], float(s[table])) for s in judged]
        out[table] = {
            "slope_per_min": round(slope(points) * 60, 3),
            "rows_past_retention_max": max((s["past_retention"] for s in samples), default=0),
            "bounded": all(s["past_retention"] == 0 for s in samples),
        }
    for series, (absolute, relative) in TOLERANCE.items():
        points = [(s["t"], float(s[series])) for s in judged if s.get(series) is not None]
        if len(points) < 3:
            out[series] = {"bounded": None, "why": "too few samples"}
            continue
        span = points[-1][0] - points[0][0]
        growth = slope(points) * span
        allowed = max(absolute, relative * statistics.median(y for _, y in points))
        out[series] = {
            "slope_per_min": round(slope(points) * 60, 3),
            "growth": round(growth, 2),
            "allowed": round(allowed, 2),
            "bounded": growth <= allowed,
        }
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def _wait_ports(ports: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"simulated tool on port {port} did not come up")
            time.sleep(0.2)


class Load:
    def __init__(self, base: str, wip: int) -> None:
        self.base, self.wip = base, wip
        self.latencies: list[float] = []
        self.errors = 0
        self.requests = 0
        self.live: set[str] = set()

    def headers(self, key: str | None = None) -> dict[str, str]:
        now = SystemClock().now()
        token = issue_access_token(
            USER, secret=SECRET, now=now, ttl=timedelta(hours=2), auth_time=now
        )
        return {"Authorization": f"Bearer {token}", **({"Idempotency-Key": key} if key else {})}

    async def call(self, http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
        began = time.perf_counter()
        try:
            response = await http.request(method, self.base + url, timeout=30, **kw)
        except httpx.TransportError:
            self.errors += 1
            return None
        self.latencies.append(time.perf_counter() - began)
        self.requests += 1
        if response.status_code >= 500:
            self.errors += 1
        return response.json() if response.status_code < 300 else None

    async def client(
        self, http: httpx.AsyncClient, stop: asyncio.Event, rng: random.Random
    ) -> None:
        while not stop.is_set():
            if len(self.live) < self.wip:
                body = {"product": "SPROD", "fab": "S1", "wafer_count": rng.randint(2, 6)}
                lot = await self.call(http, "POST", "/api/v1/lots", json=body,
                                      headers=self.headers(uuid.uuid4().hex))  # fmt: skip
                if lot is not None:
                    self.live.add(lot["code"])
            roll = rng.random()
            if roll < 0.4:
                await self.call(http, "GET", "/api/v1/lots", params={"fab": "S1", "limit": 50},
                                headers=self.headers())  # fmt: skip
            elif roll < 0.8 and self.live:
                code = rng.choice(sorted(self.live))
                lot = await self.call(http, "GET", f"/api/v1/lots/{code}", headers=self.headers())
                if lot is not None and lot["state"] in ("Completed", "Scrapped", "Terminated"):
                    self.live.discard(code)
            else:
                params = {"fab": "S1", "limit": 20}
                url = "/api/v1/dispatch/decisions"
                await self.call(http, "GET", url, params=params, headers=self.headers())
            await asyncio.sleep(0.05)


async def sample(
    db: Database, pid: int, load: Load, t: float, postgres: bool, outlived: timedelta
) -> dict[str, Any]:
    async with unit_of_work(db, write=False) as session:
        cutoff = SystemClock().now() - outlived
        stale = {
            table: int(
                (
                    await session.execute(
                        text(f"SELECT count(*) FROM {table} WHERE {column} < :cutoff"),
                        {"cutoff": cutoff},
                    )
                ).scalar_one()
            )
            for table, column in PRUNED.items()
        }
        counts = {
            table: int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
            for table in TABLES
        }
        completed = int(
            (
                await session.execute(text("SELECT count(*) FROM lot WHERE state = 'Completed'"))
            ).scalar_one()
        )
        if postgres:
            connections = (
                await session.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                )
            ).scalar_one() - 1  # this sampler's own
        else:
            connections = len(os.listdir(f"/proc/{pid}/fd"))  # open files and sockets
        now = SystemClock().now()
        last = await session.scalar(
            select(func.min(AdapterLease.last_event_at)).where(
                AdapterLease.connection == "connected"
            )
        )
    report = await check_database(db)
    latencies = sorted(load.latencies)
    load.latencies = []
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else None
    lag = None
    if last is not None:
        last = last if last.tzinfo else last.replace(tzinfo=now.tzinfo)
        lag = round((now - last).total_seconds(), 2)
    return {
        "t": round(t, 1),
        "rss_mb": round(_rss_mb(pid), 1),
        "db_connections": int(connections),
        "p99_ms": None if p99 is None else round(p99, 1),
        "requests": len(latencies),
        "tool_event_lag_s": lag,
        "completed_lots": completed,
        **counts,
        "past_retention": sum(stale.values()),
        "invariants": report.ok,
        "violations": [v.message for v in report.violations[:3]],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    postgres = not is_sqlite(args.database_url)
    if postgres:
        url = await throwaway.create_database(args.database_url, prefix="mes_soak")
    else:
        url = throwaway.sqlite_database(tmp, "soak")
    db = Database(create_engine(Settings(database_url=url)))
    base_port = args.base_port or free_port() + 1000
    procs: dict[str, subprocess.Popen[bytes]] = {}
    samples: list[dict[str, Any]] = []
    try:
        await migrate.upgrade(db.engine)
        data = fab(base_port)
        (tmp / "fab.json").write_text(json.dumps(data))
        async with unit_of_work(db) as session:
            await loader.load(session, loader.ExampleData.model_validate(data),
                              clock=FixedClock(SystemClock().now()))  # fmt: skip
        procs["sims"] = _spawn(
            [sys.executable, "-m", "equipment_sims", "--fab", str(tmp / "fab.json"),
             "--no-security", "--shelf-dir", str(tmp / "shelf"), "--speed", str(args.speed),
             "--log-level", "ERROR"], dict(os.environ), tmp / "sims.log",
        )  # fmt: skip
        _wait_ports([base_port + i for i in range(len(STEPS))], 120)
        port = free_port()
        days = args.retention / 86400
        prune_every = max(1.0, args.retention / 4)
        outlived = timedelta(seconds=args.retention + 2 * prune_every + 5)
        env = {
            **os.environ,
            "MES_DATABASE_URL": url,
            "MES_JWT_SECRET": SECRET,
            "MES_LOG_LEVEL": "warning",
            "MES_ADAPTERS_ENABLED": "true",
            "MES_DISPATCH_FABS": "S1",
            "MES_DISPATCH_INTERVAL_S": "1",
            "MES_RETENTION_DISPATCH_DECISIONS_DAYS": f"{days:.9f}",
            "MES_RETENTION_IDEMPOTENCY_DAYS": f"{days:.9f}",
            "MES_RETENTION_INTERVAL_S": str(prune_every),
        }
        procs["mes"] = _spawn(
            [sys.executable, "-m", "mes.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env,
            tmp / "mes.log",
        )
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            for _ in range(1200):
                if procs["mes"].poll() is not None:
                    raise SystemExit(f"the service exited; see {tmp / 'mes.log'}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(base + "/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            load = Load(base, args.wip)
            stop = asyncio.Event()
            rng = random.Random(args.seed)
            clients = [
                asyncio.create_task(load.client(http, stop, random.Random(rng.random())))
                for _ in range(args.clients)
            ]
            began = time.monotonic()
            try:
                while (t := time.monotonic() - began) < args.seconds:
                    await asyncio.sleep(min(args.interval, args.seconds - t))
                    t = time.monotonic() - began
                    s = await sample(db, procs["mes"].pid, load, t, postgres, outlived)
                    samples.append(s)
                    print(json.dumps({k: v for k, v in s.items() if k != "violations"}), flush=True)
                    for message in s["violations"]:
                        print(f"  VIOLATION {message}", flush=True)
            finally:
                stop.set()
                await asyncio.gather(*clients, return_exceptions=True)
        judged = verdict(samples, args.seconds)
        unbounded = [k for k, v in judged.items() if v["bounded"] is False]
        invariants_ok = all(s["invariants"] for s in samples)
        last = samples[-1] if samples else {}
        return {
            "bench": "soak",
            "backend": "postgresql" if postgres else "sqlite",
            "seconds": args.seconds,
            "samples": len(samples),
            "requests": load.requests,
            "server_errors": load.errors,
            "completed_lots": last.get("completed_lots"),
            "rss_mb_first": samples[0]["rss_mb"] if samples else None,
            "rss_mb_last": last.get("rss_mb"),
            "db_connections_max": max((s["db_connections"] for s in samples), default=None),
            "p99_ms_max": max((s["p99_ms"] or 0 for s in samples), default=None),
            "tool_event_lag_s_max": max(
                (s["tool_event_lag_s"] or 0 for s in samples), default=None
            ),
            "tables_last": {t: last.get(t) for t in TABLES},
            "verdict": judged,
            "unbounded": unbounded,
            "invariants_ok": invariants_ok,
            "ok": not unbounded and invariants_ok and load.errors == 0 and bool(samples),
            "logs": str(tmp),
        }
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await db.dispose()
        if postgres:
            await throwaway.drop_database(url, beside=args.database_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--interval", type=float, default=15)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--wip", type=int, default=8)
    parser.add_argument("--retention", type=float, default=60, help="seconds (decisions, keys)")
    parser.add_argument("--speed", type=float, default=600, help="simulated tools' clock")
    parser.add_argument("--base-port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
    )
    result = asyncio.run(run(parser.parse_args()))
    print(
        f"soak {result['seconds']:g} s on {result['backend']}: {result['requests']} requests, "
        f"{result['completed_lots']} lots completed, RSS {result['rss_mb_first']} -> "
        f"{result['rss_mb_last']} MB, p99 max {result['p99_ms_max']} ms, unbounded "
        f"{result['unbounded'] or 'none'}, invariants "
        f"{'hold' if result['invariants_ok'] else 'BROKEN'}"
    )
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
