"""OPC UA ingest: how many tools one adapter process holds and how fast it applies what they send.

Starts N simulated tools in other processes (``python -m equipment_sims``, ``--sim-processes``
of them), a fresh SQLite database with those N tools (migrated, seeded through the services),
and one adapter registry in this process holding all of them. Each tool publishes its process
values every ``--pv-period`` seconds, ``--changing-values`` of which change at every publication
(temperature, pressure and extra sensor channels; RF power and gas flows of an idle tool stay
0), besides its ~15 state variables. For ``--seconds`` it counts the notifications the adapter
received and applied and, to have events that reach the database, has ``--alarm-tools`` of the
tools raise and clear a non-breaking alarm every 0.5 s (each alarm event is one transaction: the
latency is arrival of the notification at the adapter → commit, queueing included). Prints the
figures and ends with one JSON line.

    .venv/bin/python bench/opcua_ingest.py --tools 200 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from asyncua import Client
from service_process import stop_processes
from sqlalchemy.engine import make_url

from mes.audit import recorder
from mes.clock import FixedClock, SystemClock
from mes.config import Settings
from mes.db import migrate, throwaway
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.opcua import model as m
from mes.opcua.adapter import AdapterSettings
from mes.opcua.registry import AdapterRegistry
from mes.seed import loader

recorder.install()  # the benchmark's own writes are audited as in the service

IDLE_CHANGING = 2  # process values of an idle simulated tool that change at every publication


def _fab(tools: int, base_port: int, sensors: int) -> dict[str, Any]:
    return {
        "format": "fab-mes-example/1",
        "fabs": [
            {
                "code": "B1",
                "name": "Bench fab",
                "timezone": "UTC",
                "areas": [{"code": "ALL", "name": "all"}],
            }
        ],
        "tool_groups": [{"code": "B_ETCH", "name": "etch", "processing_kind": "cluster"}],
        "tools": [
            {
                "code": f"B1-ET{i:03d}",
                "name": f"etch {i}",
                "fab": "B1",
                "area": "ALL",
                "tool_group": "B_ETCH",
                "chambers": ["PM1", "PM2", "PM3"],
                "sensors": sensors,
                "opcua_endpoint": f"opc.tcp://127.0.0.1:{base_port + i}/B1-ET{i:03d}",
            }
            for i in range(tools)
        ],
        "products": [],
        "recipes": [],
        "routes": [],
        "carriers": [],
    }


async def _alarms(endpoints: list[str], stop: asyncio.Event) -> tuple[int, int]:
    clients = []
    for endpoint in endpoints:
        client = Client(endpoint, timeout=10)
        await client.connect()
        ns = await client.get_namespace_index(m.NS_FAB)
        machine = await client.nodes.objects.get_child(
            [
                f"{await client.get_namespace_index(m.NS_MACHINERY)}:Machines",
                f"{ns}:{endpoint.rsplit('/', 1)[1]}",
            ]
        )
        sim = await machine.get_child([f"{ns}:Simulation"])
        clients.append((client, sim, ns))
    raised = failed = 0
    n = 0
    try:
        while not stop.is_set():
            n += 1
            for _client, sim, ns in clients:
                fault = "raise_alarm" if n % 2 else "clear_alarm"
                args = {"alarm_id": "BENCH"} | ({"severity": 200} if n % 2 else {})
                try:
                    await sim.call_method(f"{ns}:{m.INJECT_FAULT}", fault, json.dumps(args))
                    raised += 1
                except Exception:  # an overloaded sim dropping us is a figure, not an end
                    failed += 1
            await asyncio.sleep(0.5)
    finally:
        for client, _, _ in clients:
            with contextlib.suppress(Exception):
                await client.disconnect()
    return raised, failed


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of another process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_sims(tmp: Path, fab: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    """The tools, split over ``--sim-processes`` processes (one fab file each)."""
    procs = []
    count = max(1, args.sim_processes)
    for k in range(count):
        part = dict(fab, tools=fab["tools"][k::count])
        path = tmp / f"fab-{k}.json"
        path.write_text(json.dumps(part))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "equipment_sims",
                    "--fab",
                    str(path),
                    "--speed",
                    "60",
                    "--pv-period",
                    str(args.pv_period),
                    "--no-security",
                    "--log-level",
                    "ERROR",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="opcua-bench-"))
    # An idle simulated tool's RF power and gas flows read 0 and do not change; its temperature
    # and pressure (noise) do, as does every extra sensor channel.
    sensors = max(0, args.changing_values - IDLE_CHANGING)
    fab = _fab(args.tools, args.base_port, sensors)
    sims = _start_sims(tmp, fab, args)
    url = throwaway.sqlite_database(tmp, "bench")
    if args.database_url:  # PostgreSQL: a database of its own beside the given one
        url = await throwaway.create_database(args.database_url, prefix="mes_bench")
    settings = Settings(database_url=url)
    engine = create_engine(settings)
    await migrate.upgrade(engine)
    async with unit_of_work(Database(engine)) as session:
        await loader.load(
            session, loader.ExampleData.model_validate(fab), clock=FixedClock(SystemClock().now())
        )
    db = Database(engine)
    registry = AdapterRegistry(
        db,
        SystemClock(),
        AdapterSettings(
            owner="bench",
            stale_s=30,
            reconnect_min_s=1.0,
            reconnect_max_s=5.0,
            timeout_s=20,
            publishing_ms=500,
        ),
        fab="B1",
        lease_ttl_s=30,
        poll_s=1.0,
    )
    started = time.perf_counter()
    task = asyncio.create_task(registry.run())
    stop = asyncio.Event()
    try:
        deadline = time.perf_counter() + args.connect_timeout
        while time.perf_counter() < deadline:
            connected = sum(a.state.value == "connected" for a in registry.adapters.values())
            if connected >= args.tools:
                break
            await asyncio.sleep(1.0)
        connect_s = time.perf_counter() - started
        connected = sum(a.state.value == "connected" for a in registry.adapters.values())
        endpoints = [t["opcua_endpoint"] for t in fab["tools"][: args.alarm_tools]]
        alarm_task = asyncio.create_task(_alarms(endpoints, stop))
        for adapter in registry.adapters.values():
            adapter.latencies.clear()

        def notified() -> int:
            return sum(a._session.notifications for a in registry.adapters.values() if a._session)

        def applied() -> int:
            return sum(a.applied for a in registry.adapters.values())

        sessions = [a._session for a in registry.adapters.values() if a._session]
        monitored = statistics.fmean(len(x.nodes) for x in sessions) if sessions else 0.0
        process_values = (
            statistics.fmean(len(x.process_value_names) for x in sessions) if sessions else 0.0
        )
        before, applied0, t0 = notified(), applied(), time.perf_counter()
        sessions0 = sum(a.sessions for a in registry.adapters.values())
        cpu0 = time.process_time()
        sims_cpu0 = sum(_cpu_seconds(p.pid) for p in sims)
        await asyncio.sleep(args.seconds)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        sims_cpu = sum(_cpu_seconds(p.pid) for p in sims) - sims_cpu0
        received, done = notified() - before, applied() - applied0
        backlog = sum(a._events.qsize() for a in registry.adapters.values())
        held = len(registry.adapters)
        stop.set()
        alarms_sent, alarm_calls_failed = await alarm_task
        reconnects = sum(a.sessions for a in registry.adapters.values()) - sessions0
        latencies = sorted(x for a in registry.adapters.values() for x in a.latencies)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await db.dispose()
        stop_processes(sims, timeout=30)
        if args.database_url:
            await throwaway.drop_database(url, beside=args.database_url)

    def pct(p: float) -> float | None:
        return (
            round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)
            if latencies
            else None
        )

    return {
        "bench": "opcua_ingest",
        "database": make_url(url).get_backend_name(),
        "tools": args.tools,
        "tools_held": held,
        "tools_connected": connected,
        "connect_s": round(connect_s, 1),
        "monitored_per_tool": round(monitored, 1),
        "process_values_per_tool": round(process_values, 1),
        "pv_period_s": args.pv_period,
        "changing_values_per_tool": max(args.changing_values, IDLE_CHANGING),
        "offered_changes_per_s": round(
            args.tools * max(args.changing_values, IDLE_CHANGING) / args.pv_period, 1
        ),
        "seconds": round(elapsed, 1),
        "notifications_per_s": round(received / elapsed, 1),
        "applied_per_s": round(done / elapsed, 1),
        "backlog_at_end": backlog,
        "adapter_cpu_share": round(cpu / elapsed, 3),
        "sims_cpu_share": round(sims_cpu / elapsed, 3),
        "alarm_calls": alarms_sent,
        "alarm_calls_failed": alarm_calls_failed,
        "reconnects": reconnects,
        "db_events": len(latencies),
        "db_events_per_s": round(len(latencies) / elapsed, 1),
        "event_to_db_p50_ms": pct(0.5),
        "event_to_db_p99_ms": pct(0.99),
        "event_to_db_mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tools", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--alarm-tools", type=int, default=10)
    parser.add_argument("--base-port", type=int, default=24100)
    parser.add_argument("--connect-timeout", type=float, default=180.0)
    parser.add_argument(
        "--changing-values", type=int, default=20, help="values per tool changing every period"
    )
    parser.add_argument("--pv-period", type=float, default=1.0, help="seconds")
    parser.add_argument("--sim-processes", type=int, default=1)
    parser.add_argument(
        "--database-url", help="PostgreSQL (postgresql+asyncpg://...); default: a SQLite file"
    )
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mes.opcua.adapter").setLevel(logging.INFO)
    result = asyncio.run(main(parser.parse_args()))
    for key, value in result.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(result))
