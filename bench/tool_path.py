"""CPU per job on the tools' path: the dispatcher's job request and the OPC UA adapter's events.

An operator's move comes through HTTP (``bench/lot_moves.py``); most moves of a fab come from
the dispatcher (decide, track in, write the job order) and the OPC UA adapters (send the job to
the tool, follow its state and wafers, track out at its end). Both call the same lot service as
the API. This benchmark runs them as deployed, each role in its own process, and measures what
each process spends per job:

* the simulated tools of fab ``S1`` (``equipment_sims``, four tools on a four-step route, the
  crash run's line) in their own process, their clock sped up so a job takes about a second;
* ``mes serve`` (only for the feeder, which starts lots over HTTP and polls them),
  ``mes adapters run --fab S1`` and ``mes dispatcher run --fab S1`` (auto mode), each a process.

First the line idles (tools connected, no lots) for ``--idle`` seconds: what the adapter and the
dispatcher cost doing nothing (subscriptions, lease renewals, dispatch cycles) is measured as a
rate and taken off. Then a feeder keeps ``--wip`` lots in the line and, after a warm-up, the CPU
of each process, PostgreSQL's, and the jobs the MES completed are counted over ``--seconds``.
A job's events are counted from the tools' journal (every job state change a tool made).

    .venv/bin/python bench/tool_path.py --seconds 60

The last line of the output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).parent))
import crash_tools
from crash import SECRET, Load
from fleet_kill import Apis, _ready
from measuring import cpu_snapshot
from py_spy_profile import Profiler, describe_profile
from scale_out import _leader, _leases, _spawn, _until
from service_process import DEFAULT_DATABASE_URL, free_port, stop_processes

from mes.config import Settings
from mes.db import throwaway
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.jobs.models import EquipmentJob
from mes.jobs.states import JobStatus

ROLES = ("adapter", "dispatcher", "api")


def _serves(pid: int, database: str) -> bool:
    """Whether a PostgreSQL process is a backend of ``database`` (its title names it): other
    sessions' work on the same server must not count."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return f" {database} " in title


def _cpu_seconds(pids: dict[str, int], database: str) -> dict[str, float]:
    """CPU seconds so far of each role's process tree, and of the backends of our database."""
    out: dict[str, float] = {}
    for role, pid in pids.items():
        tree = cpu_snapshot(pid)["server"]
        out[role] = sum(u + k for u, k in tree.values())
    backends = cpu_snapshot(None)["postgres"]
    out["postgres"] = sum(u + k for p, (u, k) in backends.items() if _serves(p, database))
    return out


async def _jobs(db: Database) -> dict[str, int]:
    """Job orders so far, and the transactions our database has committed (every process's;
    PostgreSQL's statistics lag by up to half a second, the same at both ends of a window)."""
    async with unit_of_work(db, write=False) as session:
        rows = await session.execute(
            select(EquipmentJob.status, func.count()).group_by(EquipmentJob.status)
        )
        counts = {str(status): int(n) for status, n in rows}
        commits = await session.scalar(
            text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        )
    return {
        "requested": sum(counts.values()),
        "completed": counts.get(str(JobStatus.COMPLETED), 0),
        "commits": int(commits or 0),
    }


def _journal_lines(journal: Path) -> int:
    return len(crash_tools.read_journal(journal))


async def _window(
    pids: dict[str, int], db: Database, journal: Path, seconds: float
) -> dict[str, Any]:
    database = str(db.engine.url.database)
    cpu0, jobs0, events0 = _cpu_seconds(pids, database), await _jobs(db), _journal_lines(journal)
    began = time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, jobs1, events1 = _cpu_seconds(pids, database), await _jobs(db), _journal_lines(journal)
    elapsed = time.monotonic() - began
    return {
        "seconds": round(elapsed, 2),
        "cpu_s": {k: round(cpu1[k] - cpu0[k], 3) for k in cpu1},
        "jobs_requested": jobs1["requested"] - jobs0["requested"],
        "jobs_completed": jobs1["completed"] - jobs0["completed"],
        "tool_events": events1 - events0,
        "commits": jobs1["commits"] - jobs0["commits"],
    }


def _per_job(idle: dict[str, Any], busy: dict[str, Any]) -> dict[str, Any]:
    """CPU ms per job of each role: gross, and net of the role's idle rate over the window."""
    out: dict[str, Any] = {}
    jobs = {"dispatcher": busy["jobs_requested"], "adapter": busy["jobs_completed"]}
    for role in ("adapter", "dispatcher", "postgres"):
        n = jobs.get(role, busy["jobs_completed"])
        gross = busy["cpu_s"][role]
        idle_rate = idle["cpu_s"][role] / idle["seconds"]
        net = gross - idle_rate * busy["seconds"]
        out[role] = {
            "cores": round(gross / busy["seconds"], 3),
            "idle_cores": round(idle_rate, 3),
            "cpu_ms_per_job": round(1000 * gross / n, 2) if n else None,
            "net_cpu_ms_per_job": round(1000 * net / n, 2) if n else None,
        }
    if busy["tool_events"] and busy["jobs_completed"]:
        per_event = out["adapter"]["net_cpu_ms_per_job"] * busy["jobs_completed"]
        out["adapter"]["net_cpu_ms_per_tool_event"] = round(per_event / busy["tool_events"], 2)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tool-path-"))
    url = await throwaway.create_database(args.database_url, prefix="mes_toolpath")
    db = Database(create_engine(Settings(database_url=url)))
    base_port = free_port() + 1000
    procs: dict[str, Any] = {}
    try:
        await crash_tools.prepare_database(db, base_port)
        procs["sims"], journal = crash_tools.start_sims(tmp, base_port, args.speed)
        env = {
            **os.environ,
            "MES_DATABASE_URL": url,
            "MES_JWT_SECRET": SECRET,
            "MES_LOG_LEVEL": "info",
            "MES_DISPATCH_INTERVAL_S": str(args.cycle),
        }
        mes = [sys.executable, "-m", "mes.cli"]
        apis = Apis([free_port()])
        fab = crash_tools.FAB
        procs["api"] = _spawn(
            [*mes, "serve", "--host", "127.0.0.1", "--port", str(apis.ports[0])],
            env,
            tmp / "api.log",
        )
        procs["adapter"] = _spawn(
            [*mes, "adapters", "run", "--fab", fab, "--owner", "A0"], env, tmp / "adapter.log"
        )
        procs["dispatcher"] = _spawn(
            [*mes, "dispatcher", "run", "--fab", fab, "--owner", "D0"], env, tmp / "dispatcher.log"
        )
        pids = {role: procs[role].pid for role in ROLES}
        async with httpx.AsyncClient() as http:
            await _ready(http, apis.ports[0], args.timeout)

            async def connected_and_led() -> bool:
                leases = await _leases(db)
                return (
                    len(leases) == crash_tools.TOOLS
                    and all(state == "connected" for _, state in leases)
                    and await _leader(db) is not None
                )

            if await _until(connected_and_led, args.timeout, poll=0.5) is None:
                raise SystemExit(f"the tools did not connect within {args.timeout} s; see {tmp}")
            await asyncio.sleep(2.0)  # let start-up work (first reads, caches) settle
            idle = await _window(pids, db, journal, args.idle)
            load = Load(apis, http)  # type: ignore[arg-type]  # Apis has the Service's ``base``
            load.up.set()
            feeder = asyncio.create_task(
                crash_tools.feeder(load, args.wip, random.Random(args.seed))
            )

            async def line_runs() -> bool:
                return (await _jobs(db))["completed"] >= args.wip

            if await _until(line_runs, args.timeout, poll=0.5) is None:
                raise SystemExit(f"no job completed within {args.timeout} s; see {tmp}")
            await asyncio.sleep(args.warmup)
            profiler = Profiler(args.profile) if args.profile else None
            if profiler is not None:
                await profiler.start(pids[args.profile_role], args.seconds, args.profile_role)
            busy = await _window(pids, db, journal, args.seconds)
            profile = await profiler.finish() if profiler is not None else None
            load.stop.set()
            await asyncio.wait_for(feeder, timeout=60)
            tools = await crash_tools.settled(db, journal, 60)
        faults = {k: len(v) for k, v in tools.items() if isinstance(v, list)}
        return {
            "bench": "tool_path",
            "database": db.engine.dialect.name,
            "wip": args.wip,
            "speed": args.speed,
            "idle": idle,
            "busy": busy,
            "jobs_per_s": round(busy["jobs_completed"] / busy["seconds"], 2),
            "tool_events_per_job": round(busy["tool_events"] / busy["jobs_completed"], 2)
            if busy["jobs_completed"]
            else None,
            "commits_per_job": round(busy["commits"] / busy["jobs_completed"], 1)
            if busy["jobs_completed"]
            else None,
            "per_job": _per_job(idle, busy),
            "tool_faults": faults,
            "profile": profile,
            "load_average": os.getloadavg(),
            "ok": busy["jobs_completed"] > 0 and not any(faults.values()),
            "logs": str(tmp),
        }
    finally:
        stop_processes(procs.values(), timeout=20)
        await db.dispose()
        await throwaway.drop_database(url, beside=args.database_url)


def _describe(r: dict[str, Any]) -> str:
    busy, per = r["busy"], r["per_job"]
    lines = [
        f"tool path on {r['database']}: {busy['jobs_completed']} jobs completed in "
        f"{busy['seconds']} s ({r['jobs_per_s']} jobs/s, {busy['jobs_requested']} requested), "
        f"{r['tool_events_per_job']} job state changes and {r['commits_per_job']} database "
        f"transactions (all processes) per job; load average "
        + ", ".join(f"{x:.2f}" for x in r["load_average"]),
    ]
    for role in ("adapter", "dispatcher", "postgres"):
        p = per[role]
        lines.append(
            f"  {role:10s} {p['cores']:.3f} cores busy ({p['idle_cores']:.3f} idle): "
            f"{p['cpu_ms_per_job']} ms CPU per job, {p['net_cpu_ms_per_job']} ms net of idle"
        )
    if "net_cpu_ms_per_tool_event" in per["adapter"]:
        lines.append(f"  adapter: {per['adapter']['net_cpu_ms_per_tool_event']} ms per tool event")
    lines.append(f"  tools' journal against the MES: faults {r['tool_faults']}")
    if r["profile"]:
        lines.append("  profile of the profiled process (under py-spy, so its CPU figures rise):")
        lines += describe_profile(r["profile"])
    return "\n".join(lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--idle", type=float, default=15.0, help="idle window before the load")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--wip", type=int, default=8, help="S1 lots kept in the line")
    parser.add_argument("--speed", type=float, default=300.0, help="the tools' clock")
    parser.add_argument("--cycle", type=float, default=2.0, help="dispatch interval, seconds")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--profile", type=Path, help="py-spy one role's process into DIR")
    parser.add_argument("--profile-role", choices=ROLES, default="adapter")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _arguments()
    result = asyncio.run(run(arguments))
    print(_describe(result))
    print(json.dumps(result, sort_keys=True))
    sys.exit(0 if result["ok"] else 1)
