"""Crash and restart: SIGKILL the MES under concurrent API load, restart it, and prove that no
acknowledged request was lost or applied twice.

On PostgreSQL (a throw-away database beside ``--database-url``), or SQLite: migrates and loads the
example fab, then runs ``mes serve`` as a subprocess (with its background work: audit sealer,
Q-time watch, and the dispatcher of both fabs in advise mode, its lease short) while
``--clients`` API clients work their own lots: start, track in and out, hold and release, split,
merge, bonus. Every write carries an ``Idempotency-Key``; every 2xx answer goes into a ledger. A
request whose answer was lost to a kill is retried with the same key once the service is back
(a committed one is replayed, an uncommitted one applied), so every request ends answered.

Every 0.5-2.5 s the service is SIGKILLed and restarted. After each restart the invariant checker
(``mes.check``) runs on a snapshot while the load goes on. At the end:

* every acknowledged request has its idempotency record with its 2xx answer;
* each lot's history holds exactly the events the acknowledged requests made (by the clients'
  users): none missing (lost), none twice (duplicated).

Prints the figures and ends with one JSON line; exits 1 if anything was lost, doubled, or an
invariant failed.

    .venv/bin/python bench/crash.py --kills 50                 # make crash
    .venv/bin/python bench/crash.py --kills 4 --clients 4      # the CI test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from mes.auth.tokens import issue_access_token
from mes.check.invariants import check_database
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import throwaway
from mes.db.engine import Database, create_engine, is_sqlite
from mes.db.transaction import unit_of_work
from mes.kit.idempotency import IdempotencyRecord
from mes.lots.models import Lot, LotEvent

sys.path.insert(0, str(Path(__file__).parent))
import crash_tools
from service_process import DEFAULT_DATABASE_URL, free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = "crash-signing-key-" + uuid.uuid4().hex
USERS = ("engineer", "operator", "supervisor")
API = "/api/v1"
FINAL = {"Completed", "Scrapped", "Terminated"}
# The lot events each acknowledged operation makes: (role in the request, event type).
EVENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "start": (("lot", "START"),),
    "track_in": (("lot", "TRACK_IN"),),
    "track_out": (("lot", "TRACK_OUT"),),
    "hold": (("lot", "HOLD"),),
    "release": (("lot", "RELEASE"),),
    "bonus": (("lot", "BONUS"),),
    "split": (("lot", "SPLIT"), ("child", "SPLIT_FROM")),
    "merge": (("lot", "MERGE"), ("source", "MERGED_INTO")),
}
COUNTED = {event for pairs in EVENTS.values() for _, event in pairs}


def token(user: str) -> str:
    now = SystemClock().now()
    # A fresh login each time: e-signatures (release) need no password within 5 minutes.
    return issue_access_token(user, secret=SECRET, now=now, ttl=timedelta(hours=6), auth_time=now)


@dataclass
class Service:
    """``mes serve`` as a subprocess that the test kills and restarts on one port."""

    url: str
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    restart_s: list[float] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        env = {
            **os.environ,
            "MES_DATABASE_URL": self.url,
            "MES_JWT_SECRET": SECRET,
            "MES_LOG_LEVEL": "warning",
            "MES_AUDIT_SEAL_INTERVAL_S": "0.5",
            "MES_DISPATCH_FABS": "F1=advise,F2=advise",
            "MES_DISPATCH_INTERVAL_S": "1",
            "MES_DISPATCH_LEASE_TTL_S": "2",
            **self.extra_env,
        }
        self.starts += 1
        log = (self.log_dir / f"mes-{self.starts}.log").open("wb")
        command = [sys.executable, "-m", "mes.cli", "serve", "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port)], env=env, cwd=ROOT, stdout=log, stderr=log
        )

    async def ready(self, http: httpx.AsyncClient, within: float = 600.0) -> float:
        began = time.monotonic()
        while time.monotonic() - began < within:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited; see {self.log_dir}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{self.base}/readyz", timeout=2)).status_code == 200:
                    return time.monotonic() - began
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the service was not ready within {within} s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Load:
    """The API clients' shared state: the ledger of acknowledged requests and the counters."""

    service: Service
    http: httpx.AsyncClient
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    up: asyncio.Event = field(default_factory=asyncio.Event)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    retried: int = 0
    replayed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    tools: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    async def send(
        self, op: str, user: str, method: str, url: str, body: Any, **involved: str
    ) -> Any:
        """One write, retried with its key until it is answered; a 2xx goes into the ledger."""
        key = uuid.uuid4().hex
        attempt = 0
        while True:
            await self.up.wait()
            headers = {"Authorization": f"Bearer {token(user)}", "Idempotency-Key": key}
            try:
                response = await self.http.request(
                    method, self.service.base + url, json=body, headers=headers, timeout=30
                )
            except httpx.TransportError:
                attempt += 1
                self.retried += 1
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 503:
                await asyncio.sleep(0.2)
                continue
            if response.status_code >= 500:
                raise RuntimeError(f"{method} {url} -> {response.status_code} {response.text}")
            if response.status_code >= 300:
                self.refused[response.json().get("code", str(response.status_code))] += 1
                return None
            answer = response.json()
            if response.headers.get("idempotent-replayed"):
                self.replayed += 1
            entry = {"key": key, "op": op, "user": user, "attempts": attempt + 1, **involved}
            if op == "start":
                entry["lot"] = answer["code"]
            if op == "split":
                entry["child"] = answer["child"]["code"]
            self.ledger.append(entry)
            return answer

    async def get(self, url: str, **params: Any) -> Any:
        while True:
            await self.up.wait()
            try:
                response = await self.http.get(
                    self.service.base + url,
                    params=params,
                    headers={"Authorization": f"Bearer {token('operator')}"},
                    timeout=30,
                )
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 503:
                await asyncio.sleep(0.2)
                continue
            assert response.status_code == 200, (url, response.status_code, response.text)
            return response.json()

    async def tools_for(self, fab: str, group: str) -> list[str]:
        if (fab, group) not in self.tools:
            listed = await self.get(f"{API}/equipment", fab=fab, tool_group=group, limit=50)
            self.tools[(fab, group)] = sorted(t["code"] for t in listed["items"])
        return self.tools[(fab, group)]


async def client(load: Load, n: int, rng: random.Random) -> None:
    fab = ("F1", "F2")[n % 2]
    mine: list[str] = []
    while not load.stop.is_set():
        if len(mine) < 2:
            body = {"product": "LOGIC28", "fab": fab, "wafer_count": rng.randint(3, 8)}
            started = await load.send("start", "engineer", "POST", f"{API}/lots", body)
            if started is not None:
                mine.append(started["code"])
            continue
        code = rng.choice(mine)
        lot = await load.get(f"{API}/lots/{code}")
        state, roll = lot["state"], rng.random()
        if state in FINAL:
            mine.remove(code)
        elif state == "Running":
            await load.send(
                "track_out", "operator", "POST", f"{API}/lots/{code}/track-out", {}, lot=code
            )
        elif state == "OnHold":
            body = {"signature": {"reason": "crash test"}}
            done = await load.send(
                "release", "supervisor", "POST", f"{API}/lots/{code}/release", body, lot=code
            )
            if done is None:
                mine.remove(code)  # cannot be released by us: leave it
        elif state != "Waiting":
            mine.remove(code)
        elif roll < 0.08:
            body = {"hold_code": "QUALITY", "reason": "crash test"}
            await load.send("hold", "operator", "POST", f"{API}/lots/{code}/hold", body, lot=code)
        elif roll < 0.16 and lot["wafer_count"] >= 2:
            active = [w["scribe_id"] for w in lot["wafers"] if w["state"] == "active"]
            body = {"wafers": active[: max(1, len(active) // 2)]}
            split = await load.send(
                "split", "operator", "POST", f"{API}/lots/{code}/split", body, lot=code
            )
            if split is not None:
                mine.append(split["child"]["code"])
        elif roll < 0.22 and lot["wafer_count"] <= 20:
            body = {"count": 1, "reason_code": "FOUND"}
            await load.send("bonus", "engineer", "POST", f"{API}/lots/{code}/bonus", body, lot=code)
        elif roll < 0.32:
            await _merge_partner(load, mine, lot, rng)
        else:
            tools = await load.tools_for(lot["fab"], lot["step"]["tool_group"])
            for tool in rng.sample(tools, len(tools)):
                body = {"tool": tool}
                url = f"{API}/lots/{code}/track-in"
                if await load.send("track_in", "operator", "POST", url, body, lot=code) is not None:
                    break


async def _merge_partner(
    load: Load, mine: list[str], lot: dict[str, Any], rng: random.Random
) -> None:
    for other in rng.sample(mine, len(mine)):
        if other == lot["code"]:
            continue
        partner = await load.get(f"{API}/lots/{other}")
        alike = all(partner[k] == lot[k] for k in ("state", "product", "fab", "step"))
        if alike and partner["wafer_count"] + lot["wafer_count"] <= 25:
            url = f"{API}/lots/{lot['code']}/merge"
            body = {"source": other}
            await load.send("merge", "operator", "POST", url, body, lot=lot["code"], source=other)
            return


async def verify(db: Database, ledger: list[dict[str, Any]]) -> dict[str, Any]:
    """Acknowledged requests against the database: each key's record, each lot's events."""
    expected: Counter[tuple[str, str]] = Counter()
    for entry in ledger:
        for role, event in EVENTS[entry["op"]]:
            expected[(entry[role], event)] += 1
    codes = sorted({code for code, _ in expected})
    async with unit_of_work(db, write=False) as session:
        keys = {
            key: status
            for key, status in await session.execute(
                select(IdempotencyRecord.key, IdempotencyRecord.status_code).where(
                    IdempotencyRecord.actor.in_(USERS)
                )
            )
        }
        actual: Counter[tuple[str, str]] = Counter()
        for i in range(0, len(codes), 500):
            rows = await session.execute(
                select(Lot.code, LotEvent.event_type)
                .join(Lot, Lot.id == LotEvent.lot_id)
                .where(Lot.code.in_(codes[i : i + 500]), LotEvent.actor.in_(USERS))
                .where(LotEvent.event_type.in_(sorted(COUNTED)))
            )
            actual.update((code, event) for code, event in rows.all())
    no_record = [e["key"] for e in ledger if not (200 <= (keys.get(e["key"]) or 0) < 300)]
    missing = {k: n - actual[k] for k, n in expected.items() if actual[k] < n}
    doubled = {k: actual[k] - n for k, n in actual.items() if actual[k] > expected[k]}
    return {
        "acknowledged": len(ledger),
        "acknowledged_without_record": len(no_record),
        "events_expected": sum(expected.values()),
        "events_missing": sum(missing.values()),
        "events_doubled": sum(doubled.values()),
        "examples": {"missing": list(missing.items())[:5], "doubled": list(doubled.items())[:5]},
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="crash-"))
    if is_sqlite(args.database_url):
        url = throwaway.sqlite_database(tmp, "crash")
    else:
        url = await throwaway.create_database(args.database_url, prefix="mes_crash")
    db = Database(create_engine(Settings(database_url=url)))
    base_port = free_port() + 1000
    service = Service(url, tmp, crash_tools.service_env(6.0) if args.tools else {})
    rng = random.Random(args.seed)
    checks: list[dict[str, Any]] = []
    sims: subprocess.Popen[bytes] | None = None
    journal = tmp / "tool-journal.jsonl"
    try:
        await crash_tools.prepare_database(db, base_port if args.tools else None)
        if args.tools:
            sims, journal = crash_tools.start_sims(tmp, base_port, args.speed)
        async with httpx.AsyncClient() as http:
            load = Load(service, http)
            service.spawn()
            service.restart_s.append(await service.ready(http))
            load.up.set()
            clients = [
                asyncio.create_task(client(load, n, random.Random(rng.random())))
                for n in range(args.clients)
            ]
            if args.tools:
                feed = crash_tools.feeder(load, args.wip, random.Random(rng.random()))
                clients.append(asyncio.create_task(feed))
            kills = 0
            try:
                for _ in range(args.kills):
                    await asyncio.sleep(rng.uniform(*args.gap))
                    for task in clients:
                        if task.done():
                            task.result()  # a client that failed: raise its error here
                    load.up.clear()
                    service.kill()
                    kills += 1
                    service.spawn()
                    load.up.set()
                    service.restart_s.append(await service.ready(http))
                    report = await check_database(db)
                    # What was acknowledged so far must be there now (requests in flight may
                    # have added more: only missing events count here, doubles at the end).
                    so_far = await verify(db, list(load.ledger))
                    lost = so_far["acknowledged_without_record"] + so_far["events_missing"]
                    checks.append({"after_kill": kills, "ok": report.ok and lost == 0})
                    if not report.ok:
                        for v in report.violations[:10]:
                            print(f"after kill {kills}: VIOLATION [{v.kind}] {v.message}")
                    print(
                        f"kill {kills}: restarted in {service.restart_s[-1]:.2f} s, "
                        f"{len(load.ledger)} acknowledged, {lost} lost, invariants "
                        f"{'hold' if report.ok else 'BROKEN'}",
                        flush=True,
                    )
                await asyncio.sleep(1.0)
            finally:
                load.stop.set()
                # Let every client finish its request (each ends answered: no kill now).
                await asyncio.wait_for(asyncio.gather(*clients), timeout=120)
            tool_check = await crash_tools.settled(db, journal, 60) if args.tools else {}
        service.stop()
        final = await check_database(db)
        result = await verify(db, load.ledger)
        (tmp / "ledger.json").write_text(json.dumps(load.ledger))
        lost = result["acknowledged_without_record"] + result["events_missing"]
        ops = Counter(e["op"] for e in load.ledger)
        return {
            "bench": "crash",
            "backend": "sqlite" if is_sqlite(url) else "postgresql",
            "clients": args.clients,
            "kills_survived": sum(1 for c in checks if c["ok"]),
            "kills": kills,
            "acknowledged": result["acknowledged"],
            "acknowledged_lost": lost,
            "applied_twice": result["events_doubled"],
            "retried_after_kill": load.retried,
            "replayed": load.replayed,
            "operations": dict(sorted(ops.items())),
            "refused": dict(load.refused.most_common(8)),
            "restart_s_max": round(max(service.restart_s), 2),
            "restart_s_median": round(sorted(service.restart_s)[len(service.restart_s) // 2], 2),
            "invariants_final": final.ok,
            "details": result["examples"],
            **{k: v if isinstance(v, int) else len(v) for k, v in tool_check.items()},
            "tool_details": {k: v[:5] for k, v in tool_check.items() if isinstance(v, list) and v},
            # A valid request refused by a database constraint is a missing business check.
            "ok": lost == 0
            and "db.constraint_violated" not in load.refused
            and result["events_doubled"] == 0
            and not any(isinstance(v, list) and v for v in tool_check.values())
            and final.ok
            and all(c["ok"] for c in checks),
            "logs": str(tmp),
        }
    finally:
        service.stop()
        if sims is not None:
            sims.terminate()
            sims.wait(timeout=30)
        await db.dispose()
        if not is_sqlite(url):
            await throwaway.drop_database(url, beside=args.database_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--tools", action="store_true", help="simulated tools driven by the adapters+dispatcher"
    )
    parser.add_argument(
        "--gap", type=float, nargs=2, default=None, help="seconds between kills (uniform)"
    )
    parser.add_argument("--wip", type=int, default=6, help="S1 lots kept in the line (--tools)")
    parser.add_argument("--speed", type=float, default=300.0, help="the tools' clock (--tools)")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
    )
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(2**32)
    if args.gap is None:  # with tools: long enough for jobs to be sent, run and end between kills
        args.gap = (3.0, 10.0) if args.tools else (0.5, 2.5)
    result = asyncio.run(run(args))
    print(
        f"kills survived {result['kills_survived']}/{result['kills']}, acknowledged requests "
        f"{result['acknowledged']}, lost {result['acknowledged_lost']}, applied twice "
        f"{result['applied_twice']} (seed {args.seed})"
    )
    print(json.dumps({**result, "seed": args.seed}))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
