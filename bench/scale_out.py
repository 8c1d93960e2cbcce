"""Take-over across processes: SIGKILL an adapter process and the dispatcher leader, time the rest.

On PostgreSQL (a throw-away database beside ``--database-url``): starts ``--tools`` simulated
tools (one ``equipment_sims`` process), two ``mes adapters run --fab B1`` processes (replicas
of one shard: they split the tools by racing for the leases) and two ``mes dispatcher run
--fab B1`` candidates, each its own OS process as a deployment runs them. Once every tool is
connected and a dispatcher leads, it SIGKILLs the adapter process holding the most tools and the
dispatcher leader at the same moment, then measures:

* ``adapter_takeover_s``: kill → every tool leased to the survivor and published ``connected``
  (which the adapter does only after resynchronising: state read, ConditionRefresh, open jobs
  reconciled); bound: one adapter lease TTL + 15 s;
* ``dispatcher_takeover_s``: kill → the standby logs its first cycle as leader; bound: one
  dispatch lease TTL + one cycle interval.

Exits 1 if a bound is missed. Prints the figures and ends with one JSON line.

    .venv/bin/python bench/scale_out.py --tools 100           # make bench-scale-out
    .venv/bin/python bench/scale_out.py --tools 6 --lease-ttl 3   # what the CI test runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mes.clock import FixedClock, SystemClock
from mes.config import Settings
from mes.db import migrate, throwaway
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.dispatch.models import DispatchLeader
from mes.opcua.models import AdapterLease
from mes.seed import loader

sys.path.insert(0, str(Path(__file__).parent))
from opcua_ingest import _cpu_seconds, _fab  # the same bench fab of etch tools
from service_process import DEFAULT_DATABASE_URL, stop_processes

LEADING = "leading B1"


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_ports(ports: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"simulated tool on port {port} did not come up")
            time.sleep(0.2)


async def _leases(db: Database) -> list[tuple[str | None, str]]:
    async with unit_of_work(db, write=False) as session:
        rows = await session.execute(select(AdapterLease.owner, AdapterLease.connection))
        return [(owner, str(getattr(state, "value", state))) for owner, state in rows.all()]


async def _leader(db: Database) -> str | None:
    async with unit_of_work(db, write=False) as session:
        return await session.scalar(select(DispatchLeader.owner))


async def _until(predicate: Any, within: float, poll: float = 0.1) -> float | None:
    """Seconds until ``await predicate()`` is true (None: not ``within`` seconds)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await predicate():
            return time.monotonic() - started
        await asyncio.sleep(poll)
    return None


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="scale-out-"))
    fab = _fab(args.tools, args.base_port, 0)
    (tmp / "fab.json").write_text(json.dumps(fab))
    url = await throwaway.create_database(args.database_url, prefix="mes_scale")
    engine = create_engine(Settings(database_url=url))
    db = Database(engine)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        await migrate.upgrade(engine)
        async with unit_of_work(db) as session:
            await loader.load(
                session,
                # "sensors" is the simulators' setting, not master data: the loader refuses it.
                loader.ExampleData.model_validate(
                    {
                        **fab,
                        "tools": [
                            {k: v for k, v in t.items() if k != "sensors"} for t in fab["tools"]
                        ],
                    }
                ),
                clock=FixedClock(SystemClock().now()),
            )
        env = dict(
            os.environ,
            MES_DATABASE_URL=url,
            MES_LOG_LEVEL="info",
            MES_ADAPTER_LEASE_TTL_S=str(args.lease_ttl),
            MES_DISPATCH_LEASE_TTL_S=str(args.lease_ttl),
            MES_DISPATCH_INTERVAL_S=str(args.cycle),
        )
        procs["sims"] = _spawn(
            [sys.executable, "-m", "equipment_sims", "--fab", str(tmp / "fab.json"),
             "--no-security", "--shelf-dir", str(tmp / "shelf"), "--log-level", "ERROR"],
            env, tmp / "sims.log",
        )  # fmt: skip
        _wait_ports([args.base_port + i for i in range(args.tools)], timeout=120)
        mes = [sys.executable, "-m", "mes.cli"]
        started = time.monotonic()
        for name in ("A0", "A1"):
            procs[name] = _spawn(
                [*mes, "adapters", "run", "--fab", "B1", "--owner", name], env, tmp / f"{name}.log"
            )
        for name in ("D0", "D1"):
            procs[name] = _spawn(
                [*mes, "dispatcher", "run", "--fab", "B1", "--owner", name],
                env,
                tmp / f"{name}.log",
            )

        async def all_connected(survivor: str | None = None) -> bool:
            leases = await _leases(db)
            return len(leases) == args.tools and all(
                state == "connected" and (survivor is None or owner == survivor)
                for owner, state in leases
            )

        cold = await _until(all_connected, args.timeout)
        if cold is None:
            raise SystemExit(f"not all {args.tools} tools connected within {args.timeout} s")
        cold_connect_s = time.monotonic() - started
        split = Counter(owner for owner, _ in await _leases(db))
        victim = max(("A0", "A1"), key=lambda n: split[n])
        survivor = "A1" if victim == "A0" else "A0"
        if await _until(lambda: _leader(db), args.timeout) is None:
            raise SystemExit("no dispatcher took the lead")
        old_leader = await _leader(db)
        assert old_leader in ("D0", "D1")
        standby = "D1" if old_leader == "D0" else "D0"

        procs[victim].send_signal(signal.SIGKILL)
        procs[old_leader].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        cpu0 = {n: _cpu_seconds(procs[n].pid) for n in (survivor, "sims")}
        standby_log = tmp / f"{standby}.log"
        seen_before = standby_log.read_text().count(LEADING)

        async def standby_leads() -> bool:
            return standby_log.read_text().count(LEADING) > seen_before

        adapter_task = asyncio.create_task(
            _until(lambda: all_connected(survivor), args.timeout, poll=0.05)
        )
        dispatcher_s = await _until(standby_leads, args.timeout, poll=0.05)
        adapter_s = await adapter_task
        elapsed = time.monotonic() - killed_at
        # Whose CPU the take-over costs: the surviving adapter's own, or the simulated tools'.
        cpu = {n: round(_cpu_seconds(procs[n].pid) - c, 1) for n, c in cpu0.items()}
        adapter_bound = args.lease_ttl + 15
        dispatcher_bound = args.lease_ttl + args.cycle
        return {
            "bench": "scale_out",
            "tools": args.tools,
            "lease_ttl_s": args.lease_ttl,
            "cycle_s": args.cycle,
            "cold_connect_s": round(cold_connect_s, 2),
            "tools_killed": split[victim],
            "adapter_takeover_s": None if adapter_s is None else round(adapter_s, 2),
            "adapter_bound_s": adapter_bound,
            "dispatcher_takeover_s": None if dispatcher_s is None else round(dispatcher_s, 2),
            "dispatcher_bound_s": dispatcher_bound,
            "observed_for_s": round(elapsed, 1),
            "takeover_cpu_s_adapter": cpu[survivor],
            "takeover_cpu_s_sims": cpu["sims"],
            "ok": adapter_s is not None
            and adapter_s <= adapter_bound
            and dispatcher_s is not None
            and dispatcher_s <= dispatcher_bound,
            "logs": str(tmp),
        }
    finally:
        stop_processes(procs.values(), timeout=15)
        await engine.dispose()
        await throwaway.drop_database(url, beside=args.database_url)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, default=100)
    parser.add_argument("--lease-ttl", type=float, default=15.0, help="adapter and dispatch TTL")
    parser.add_argument("--cycle", type=float, default=5.0, help="dispatch interval, seconds")
    parser.add_argument("--base-port", type=int, default=47100)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
    )
    return parser.parse_args()


if __name__ == "__main__":
    result = asyncio.run(main(_arguments()))
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)
