"""OPC UA ingest: how many tools one adapter process holds and how fast it applies what they send.

Starts N simulated tools in another process (``python -m equipment_sims``), a fresh SQLite
database with those N tools (migrated, seeded through the services), and one adapter registry
in this process holding all of them. For ``--seconds`` it counts notifications received (data
changes and events, about 20 monitored values per tool) and, to have events that reach the
database, has ``--alarm-tools`` of the tools raise and clear a non-breaking alarm every second
(each alarm event is one transaction: the latency is event receipt → commit). Prints the figures
and ends with one JSON line.

    .venv/bin/python bench/opcua_ingest.py --tools 200 --seconds 30
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

from mes.clock import FixedClock, SystemClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.opcua import model as m
from mes.opcua.adapter import AdapterSettings
from mes.opcua.registry import AdapterRegistry
from mes.seed import loader


def _fab(tools: int, base_port: int) -> dict[str, Any]:
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
                "opcua_endpoint": f"opc.tcp://127.0.0.1:{base_port + i}/B1-ET{i:03d}",
            }
            for i in range(tools)
        ],
        "products": [],
        "recipes": [],
        "routes": [],
        "carriers": [],
    }


async def _alarms(endpoints: list[str], stop: asyncio.Event) -> int:
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
    raised = 0
    n = 0
    try:
        while not stop.is_set():
            n += 1
            for _client, sim, ns in clients:
                fault = "raise_alarm" if n % 2 else "clear_alarm"
                args = {"alarm_id": "BENCH"} | ({"severity": 200} if n % 2 else {})
                await sim.call_method(f"{ns}:{m.INJECT_FAULT}", fault, json.dumps(args))
                raised += 1
            await asyncio.sleep(0.5)
    finally:
        for client, _, _ in clients:
            with contextlib.suppress(Exception):
                await client.disconnect()
    return raised


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="opcua-bench-"))
    fab = _fab(args.tools, args.base_port)
    (tmp / "fab.json").write_text(json.dumps(fab))
    sims = subprocess.Popen(  # noqa: ASYNC220 (start-up, before any adapter runs)
        [
            sys.executable,
            "-m",
            "equipment_sims",
            "--fab",
            str(tmp / "fab.json"),
            "--speed",
            "60",
            "--log-level",
            "ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}")
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

        before, t0 = notified(), time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.sleep(args.seconds)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        received = notified() - before
        stop.set()
        await alarm_task
        latencies = sorted(x for a in registry.adapters.values() for x in a.latencies)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await db.dispose()
        sims.terminate()
        sims.wait(timeout=30)

    def pct(p: float) -> float | None:
        return (
            round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)
            if latencies
            else None
        )

    return {
        "bench": "opcua_ingest",
        "tools": args.tools,
        "tools_connected": connected,
        "connect_s": round(connect_s, 1),
        "seconds": round(elapsed, 1),
        "notifications_per_s": round(received / elapsed, 1),
        "adapter_cpu_share": round(cpu / elapsed, 3),
        "db_events": len(latencies),
        "db_events_per_s": round(len(latencies) / elapsed, 1),
        "event_to_db_p50_ms": pct(0.5),
        "event_to_db_p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tools", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--alarm-tools", type=int, default=10)
    parser.add_argument("--base-port", type=int, default=24100)
    parser.add_argument("--connect-timeout", type=float, default=180.0)
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(main(parser.parse_args()))
    for key, value in result.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(result))
