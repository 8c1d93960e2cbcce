"""The MES as several processes, and three of them killed at once: nothing acknowledged is lost.

On PostgreSQL (a throw-away database beside ``--database-url``): loads the example network and
the small simulated fab ``S1`` of ``crash_tools`` (four tools, journalled by ``equipment_sims``),
then starts each role as its own OS process, as a deployment runs them: two ``mes serve`` API
processes, two ``mes adapters run --fab S1`` replicas (they split the tools by racing for the
leases) and two ``mes dispatcher run --fab S1`` candidates. API clients (``bench/crash.py``'s:
manual lot work on F1/F2 with a ledger of every acknowledged request) go through both APIs, and a
feeder keeps S1 lots in the line for the dispatcher and the tools.

Once the line runs (every tool connected, a leader, a job processed), it SIGKILLs one API
process, the adapter process holding the most tools and the dispatcher leader at the same
moment, lets the rest run on, and then checks and prints:

* ``adapter_takeover_s`` (bound: adapter lease TTL + 15 s) and ``dispatcher_takeover_s``
  (bound: dispatch lease TTL + one cycle), measured from the kill;
* ``requests_failed_in_kill_window``: requests that met a dead API (connection refused or reset;
  each was sent again to the other API with the same idempotency key) — never a 5xx;
* no acknowledged request lost or applied twice, the invariants hold, and the tools' journal
  agrees with the MES (no job order started twice, every processed run tracked out once).

Exits 1 if anything fails. Ends with one JSON line.

    .venv/bin/python bench/fleet_kill.py                      # make bench-fleet-kill
    .venv/bin/python bench/fleet_kill.py --after 15           # what the CI test runs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import crash_tools
from crash import SECRET, Load, client, verify
from scale_out import LEADING, _leader, _leases, _spawn, _until
from service_process import DEFAULT_DATABASE_URL, free_port, stop_processes

from mes.check.invariants import check_database
from mes.config import Settings
from mes.db import throwaway
from mes.db.engine import Database, create_engine


class Apis:
    """The API processes as the clients see them through a load balancer: any of them, until
    one is known dead (a client that met a dead one sends again, with the same key)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.dead: set[int] = set()
        self.rng = random.Random(1)

    @property
    def base(self) -> str:
        live = [p for p in self.ports if p not in self.dead] or self.ports
        return f"http://127.0.0.1:{self.rng.choice(live)}"


async def _ready(http: httpx.AsyncClient, port: int, within: float) -> None:
    began = time.monotonic()
    while time.monotonic() - began < within:
        try:
            if (await http.get(f"http://127.0.0.1:{port}/readyz", timeout=2)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"API on port {port} not ready within {within} s")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fleet-kill-"))
    url = await throwaway.create_database(args.database_url, prefix="mes_fleet")
    db = Database(create_engine(Settings(database_url=url)))
    base_port = free_port() + 1000
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        await crash_tools.prepare_database(db, base_port)
        procs["sims"], journal = crash_tools.start_sims(tmp, base_port, args.speed)
        env = {
            **os.environ,
            "MES_DATABASE_URL": url,
            "MES_JWT_SECRET": SECRET,
            "MES_LOG_LEVEL": "info",
            "MES_ADAPTER_LEASE_TTL_S": str(args.lease_ttl),
            "MES_ADAPTER_RECONNECT_MAX_S": "2",
            "MES_DISPATCH_LEASE_TTL_S": str(args.lease_ttl),
            "MES_DISPATCH_INTERVAL_S": str(args.cycle),
        }
        mes = [sys.executable, "-m", "mes.cli"]
        apis = Apis([free_port(), free_port()])
        for i, port in enumerate(apis.ports):
            procs[f"api{i}"] = _spawn(
                [*mes, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env,
                tmp / f"api{i}.log",
            )
        fab = crash_tools.FAB
        for name in ("A0", "A1"):
            procs[name] = _spawn(
                [*mes, "adapters", "run", "--fab", fab, "--owner", name], env, tmp / f"{name}.log"
            )
        for name in ("D0", "D1"):
            procs[name] = _spawn(
                [*mes, "dispatcher", "run", "--fab", fab, "--owner", name], env, tmp / f"{name}.log"
            )
        async with httpx.AsyncClient() as http:
            for port in apis.ports:
                await _ready(http, port, args.timeout)
            load = Load(apis, http)  # type: ignore[arg-type]  # Apis has the Service's ``base``
            load.up.set()
            rng = random.Random(args.seed)
            tasks = [
                asyncio.create_task(client(load, n, random.Random(rng.random())))
                for n in range(args.clients)
            ]
            tasks.append(
                asyncio.create_task(crash_tools.feeder(load, args.wip, random.Random(rng.random())))
            )

            async def all_connected(owner: str | None = None) -> bool:
                leases = await _leases(db)
                return len(leases) == crash_tools.TOOLS and all(
                    state == "connected" and owner in (None, who) for who, state in leases
                )

            async def line_runs() -> bool:
                processed = (await crash_tools.compare(db, journal))["tool_jobs_processed"]
                return processed > 0 and await all_connected() and await _leader(db) is not None

            try:
                if await _until(line_runs, args.timeout, poll=0.5) is None:
                    raise SystemExit(f"the line did not run within {args.timeout} s; see {tmp}")
                split = Counter(owner for owner, _ in await _leases(db))
                victim = max(("A0", "A1"), key=lambda n: split[n])
                survivor = "A1" if victim == "A0" else "A0"
                leader = await _leader(db)
                standby = "D1" if leader == "D0" else "D0"
                standby_log = tmp / f"{standby}.log"
                leading_before = standby_log.read_text().count(LEADING.replace("B1", fab))
                acknowledged_before, failed_before = len(load.ledger), load.retried
                for name in ("api0", victim, str(leader)):
                    procs[name].send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                # Clients find the dead API by failing on it (and sending again, to either API),
                # until a load balancer's health check would have taken it out: 2 s.
                asyncio.get_running_loop().call_later(2.0, apis.dead.add, apis.ports[0])

                async def standby_leads() -> bool:
                    text = standby_log.read_text()
                    return text.count(LEADING.replace("B1", fab)) > leading_before

                adapter_task = asyncio.create_task(
                    _until(lambda: all_connected(survivor), args.timeout, poll=0.1)
                )
                dispatcher_s = await _until(standby_leads, args.timeout, poll=0.1)
                adapter_s = await adapter_task
                await asyncio.sleep(max(0.0, args.after - (time.monotonic() - killed_at)))
                load.stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
                tools = await crash_tools.settled(db, journal, 60)
            finally:
                # Whatever failed, the clients stop before their HTTP client closes, so the
                # failure is the last thing on stderr (not one "client has been closed" per client).
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        final = await check_database(db)
        ledger = await verify(db, load.ledger)
        lost = ledger["acknowledged_without_record"] + ledger["events_missing"]
        adapter_bound, dispatcher_bound = args.lease_ttl + 15, args.lease_ttl + args.cycle
        tool_faults = {k: len(v) for k, v in tools.items() if isinstance(v, list)}
        return {
            "bench": "fleet_kill",
            "killed": ["api0", victim, leader],
            "tools_killed": split[victim],
            "adapter_takeover_s": None if adapter_s is None else round(adapter_s, 2),
            "adapter_bound_s": adapter_bound,
            "dispatcher_takeover_s": None if dispatcher_s is None else round(dispatcher_s, 2),
            "dispatcher_bound_s": dispatcher_bound,
            "acknowledged_before_kill": acknowledged_before,
            "acknowledged_after_kill": len(load.ledger) - acknowledged_before,
            "requests_failed_in_kill_window": load.retried - failed_before,
            "acknowledged": ledger["acknowledged"],
            "acknowledged_lost": lost,
            "applied_twice": ledger["events_doubled"],
            "refused": dict(load.refused.most_common(6)),
            **{k: v for k, v in tools.items() if isinstance(v, int)},
            **tool_faults,
            "invariants": final.ok,
            "violations": [v.message for v in final.violations[:5]],
            "ok": adapter_s is not None
            and adapter_s <= adapter_bound
            and dispatcher_s is not None
            and dispatcher_s <= dispatcher_bound
            and len(load.ledger) > acknowledged_before
            and lost == 0
            and ledger["events_doubled"] == 0
            and "db.constraint_violated" not in load.refused
            and not any(tool_faults.values())
            and final.ok,
            "logs": str(tmp),
        }
    except BaseException:
        _print_process_errors(tmp)  # the processes' own account, before the bench's traceback
        raise
    finally:
        stop_processes(procs.values(), timeout=20)
        await db.dispose()
        await throwaway.drop_database(url, beside=args.database_url)


def _print_process_errors(logs: Path, last: int = 40) -> None:
    """Each process log's errors to stderr: a CI run keeps no temporary directory. Log records
    begin with their date; the lines that do not are the tracebacks under them."""
    for log in sorted(logs.glob("*.log")):
        errors = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if " ERROR " in line or " CRITICAL " in line or (line and not line[0].isdigit())
        ]
        for line in errors[-last:]:
            print(f"{log.stem}: {line}", file=sys.stderr)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--wip", type=int, default=6, help="S1 lots kept in the line")
    parser.add_argument("--speed", type=float, default=300.0, help="the tools' clock")
    parser.add_argument("--lease-ttl", type=float, default=5.0, help="adapter and dispatch TTL")
    parser.add_argument("--cycle", type=float, default=2.0, help="dispatch interval, seconds")
    parser.add_argument("--after", type=float, default=30.0, help="seconds of load after the kill")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
    )
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(2**32)
    return args


if __name__ == "__main__":
    import json

    arguments = _arguments()
    result = asyncio.run(run(arguments))
    for key, value in result.items():
        print(f"{key:>32}: {value}")
    print(json.dumps({**result, "seed": arguments.seed}))
    sys.exit(0 if result["ok"] else 1)
