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
3. Starts the real service in a subprocess (``mes serve``, then ``uvicorn --workers 2``) with
   its shipped settings (audit on, audit sealer running, log level info), bulk-starts lots
   through the API, logs every client in once as the demo operator and loops track-in →
   track-out over HTTP for the given time. A track-in and a track-out are two moves.
4. Prints moves/s, latency percentiles per move, errors, and the CPU the service, PostgreSQL and
   this client process used; the last line of the output is one JSON object with every figure.

``--profile DIR`` samples the single-worker service with py-spy during its measured window
(``pip install py-spy``) and prints where its CPU time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pgdb import asyncpg_dsn, create_database, drop_database
from sqlalchemy import select
from sqlalchemy.engine import make_url

from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind
from mes.auth.service import Principal
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.equipment.models import Equipment
from mes.equipment.states import DEFAULT_SUBSTATE, E10State
from mes.lots import service as lot_service
from mes.lots.states import PriorityClass
from mes.routes.models import Route, RouteVersion, Step
from mes.seed import loader

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PRODUCT, ROUTE, FAB = "LOGIC28", "R-LOGIC28", "F1"
STARTER = ("engineer", "change-me-engineer")  # may start lots
OPERATOR = ("operator", "change-me-operator")  # certified on every tool group; moves lots
JWT_SECRET = "bench-signing-key-" + uuid.uuid4().hex
TARGET_MOVES_PER_S, TARGET_P99_MS = 400.0, 150.0
# Lots each client gets: enough for this many moves per second per client (about three
# times the target at 32 clients); a client that still runs dry is reported.
MAX_MOVES_PER_S_PER_CLIENT = 40.0
BULK_START_MAX = 200


# --- throw-away database -------------------------------------------------------------------


def bench_tool(client: int, template: str) -> str:
    return f"B{client:03d}-{template}"


@dataclass
class Fixture:
    """What the seeding made: each client's tool per tool group, the raw workers' lots."""

    tools: dict[int, dict[str, str]]  # client → tool group code → tool code
    tool_ids: dict[int, dict[int, int]]  # client → tool group id → tool id
    steps: list[tuple[int, int]]  # (step id, tool group id) of the route, in order
    raw_lots: list[tuple[int, int]]  # (lot id, fab id), one per raw worker
    seed_s: float


async def prepare(url: str, clients: int) -> Fixture:
    began = time.perf_counter()
    db = Database.from_settings(Settings(database_url=url))
    try:
        await migrate.upgrade(db.engine)
        data = loader.read_example()
        route = next(r for r in data.routes if r.code == ROUTE)
        groups = sorted({st.tool_group for st in route.steps})
        templates = {
            g: next(t for t in data.tools if t.fab == FAB and t.tool_group == g) for g in groups
        }
        by_template = {t.code for t in templates.values()}
        for n in range(clients):
            for template in templates.values():
                data.tools.append(
                    template.model_copy(
                        update={
                            "code": bench_tool(n, template.code),
                            "name": f"bench client {n}: {template.name}"[:128],
                            "opcua_endpoint": None,
                        }
                    )
                )
            # Litho recipes need their reticle at the tool: give each private tool its copies
            # (without a use limit, so a long run never exhausts them).
            for durable in [d for d in data.durables if d.at_tool in by_template]:
                data.durables.append(
                    durable.model_copy(
                        update={
                            "code": f"{durable.code}-C{n}"[:32],
                            "at_tool": bench_tool(n, durable.at_tool),
                            "usage_limit": None,
                        }
                    )
                )
        async with unit_of_work(db) as session:
            await loader.load(session, data, clock=SystemClock())
        async with unit_of_work(db) as session:
            # The raw workers' lots, started by the service itself (the API is not up yet).
            bind(
                session,
                AuditContext(actor="bench", role="system", operation="bench.start", at=_now()),
            )
            raw = await lot_service.start_lots(
                session,
                product_code=PRODUCT,
                fab_code=FAB,
                route_code=ROUTE,
                count=clients,
                wafer_count=25,
                priority_class=PriorityClass.NORMAL,
                due_at=None,
                code=None,
                carrier_code=None,
                actor=Principal(0, "bench", AccountKind.SERVICE, frozenset(), None),
                clock=SystemClock(),
            )
            raw_lots = [(lot.id, lot.fab_id) for lot in raw]
        async with unit_of_work(db, write=False) as session:
            version_id = await session.scalar(
                select(RouteVersion.id)
                .join(Route, Route.id == RouteVersion.route_id)
                .where(Route.code == ROUTE, RouteVersion.version == 1)
            )
            steps = [
                (sid, gid)
                for sid, gid in (
                    await session.execute(
                        select(Step.id, Step.tool_group_id)
                        .where(Step.route_version_id == version_id)
                        .order_by(Step.sequence)
                    )
                ).all()
            ]
            rows = (
                await session.execute(
                    select(Equipment.code, Equipment.id, Equipment.tool_group_id).where(
                        Equipment.code.like("B%")
                    )
                )
            ).all()
        by_code = {code: (tid, gid) for code, tid, gid in rows}
        tools: dict[int, dict[str, str]] = {}
        tool_ids: dict[int, dict[int, int]] = {}
        for n in range(clients):
            tools[n] = {g: bench_tool(n, t.code) for g, t in templates.items()}
            tool_ids[n] = {by_code[c][1]: by_code[c][0] for c in tools[n].values()}
        return Fixture(tools, tool_ids, steps, raw_lots, time.perf_counter() - began)
    finally:
        await db.dispose()


def _now() -> datetime:
    return datetime.now(UTC)


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Window:
    start: float
    end: float

    def holds(self, began: float, ended: float) -> bool:
        return began >= self.start and ended <= self.end

    @property
    def over(self) -> bool:
        return time.perf_counter() >= self.end


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    errors_outside: Counter[str] = field(default_factory=Counter)
    dry_clients: int = 0

    def record(self, window: Window, kind: str, began: float, ended: float, error: str | None):
        inside = window.holds(began, ended)
        if error is not None:
            (self.errors if inside else self.errors_outside)[f"{kind}: {error}"] += 1
        elif inside:
            self.latencies[kind].append(ended - began)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def latency_figures(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 2),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else float("nan"),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 2) if ordered else float("nan"),
    }


def summarise(stats: Stats, seconds: float) -> dict[str, Any]:
    everything = [v for values in stats.latencies.values() for v in values]
    moves = len(everything)
    return {
        "moves": moves,
        "moves_per_s": round(moves / seconds, 1),
        **latency_figures(everything),
        "by_kind": {
            kind: {"moves": len(values), **latency_figures(values)}
            for kind, values in sorted(stats.latencies.items())
        },
        "errors": sum(stats.errors.values()),
        "error_codes": dict(stats.errors.most_common()),
        "errors_outside_window": sum(stats.errors_outside.values()),
        "clients_out_of_lots": stats.dry_clients,
    }


# CPU of processes, from /proc (Linux): (user, system) seconds.
_TICK = os.sysconf("SC_CLK_TCK")
Cpu = tuple[float, float]


def _stat(pid: int) -> tuple[str, int, Cpu] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, int(fields[1]), (int(fields[11]) / _TICK, int(fields[12]) / _TICK)


def _all_stats() -> dict[int, tuple[str, int, Cpu]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


def cpu_snapshot(server_pid: int | None) -> dict[str, dict[int, Cpu]]:
    """CPU seconds so far of the server's process tree, every PostgreSQL process, and this one."""
    stats = _all_stats()
    server: dict[int, Cpu] = {}
    if server_pid is not None:
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (_, ppid, _) in stats.items():
            children[ppid].append(pid)
        todo = [server_pid]
        while todo:
            pid = todo.pop()
            if pid in stats:
                server[pid] = stats[pid][2]
                todo += children[pid]
    postgres = {pid: cpu for pid, (comm, _, cpu) in stats.items() if comm.startswith("postgres")}
    own = os.times()
    profiler = {pid: cpu for pid, (comm, _, cpu) in stats.items() if comm == "py-spy"}
    snapshot = {
        "postgres": postgres,
        "profiler": profiler,
        "client": {0: (own.user, own.system)},
        "machine": {0: _machine_busy()},
    }
    if server_pid is not None:
        snapshot["server"] = server
    return snapshot


def _machine_busy() -> Cpu:
    """Busy seconds of all CPUs (user + nice, and system + irq + softirq), from /proc/stat."""
    fields = [int(v) / _TICK for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return user + nice, system + irq + softirq


def cpu_used(
    before: dict[str, dict[int, Cpu]], after: dict[str, dict[int, Cpu]], seconds: float
) -> dict[str, Any]:
    """Cores busy on average during the window, per party: in all, and in the kernel."""
    used: dict[str, Any] = {}
    for party, pids in after.items():
        user = kernel = 0.0
        for pid, (u, k) in pids.items():
            u0, k0 = before[party].get(pid, (0.0, 0.0))
            user, kernel = user + u - u0, kernel + k - k0
        used[f"{party}_cores"] = round((user + kernel) / seconds, 2)
        used[f"{party}_kernel_cores"] = round(kernel / seconds, 2)
    if "server" in after:
        # Per process: uvicorn's workers share one listening socket, and nothing balances the
        # clients' keep-alive connections between them.
        per_process = [
            (u + k - sum(before["server"].get(pid, (0.0, 0.0)))) / seconds
            for pid, (u, k) in after["server"].items()
        ]
        used["server_process_cores"] = sorted((round(c, 2) for c in per_process), reverse=True)
    # Whatever else ran on the machine meanwhile (another load would distort the figures).
    ours = sum(float(used[f"{party}_cores"]) for party in after if party != "machine")
    used["other_processes_cores"] = round(max(0.0, used["machine_cores"] - ours), 2)
    return used


# --- baseline: the same writes as raw SQL ----------------------------------------------------

LOCK_LOT = "SELECT state, current_step_id, version FROM lot WHERE id = $1 FOR NO KEY UPDATE"
LOCK_TOOL = "SELECT e10_state, version FROM equipment WHERE id = $1 FOR NO KEY UPDATE"
UPDATE_TOOL = (
    "UPDATE equipment SET e10_state = $2, e10_substate = $3, state_since = $4, "
    "version = version + 1, updated_at = $4 WHERE id = $1"
)
INSERT_TOOL_EVENT = (
    "INSERT INTO equipment_state_event (fab_id, equipment_id, from_state, to_state, substate, "
    "occurred_at, recorded_at, source, actor, reason) "
    "VALUES ($1, $2, $3, $4, $5, $6, $6, 'system', $7, $8)"
)
TRACK_IN_LOT = (
    "UPDATE lot SET state = 'Running', equipment_id = $2, tracked_in_at = $3, "
    "version = version + 1, updated_at = $3 WHERE id = $1"
)
TRACK_OUT_LOT = (
    "UPDATE lot SET state = 'Waiting', equipment_id = NULL, tracked_in_at = NULL, "
    "current_step_id = $2, step_entered_at = $3, version = version + 1, updated_at = $3 "
    "WHERE id = $1"
)
INSERT_LOT_EVENT = (
    "INSERT INTO lot_event (lot_id, fab_id, event_type, occurred_at, actor, step_id, "
    "equipment_id, before, after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb)"
)
INSERT_AUDIT = (
    "INSERT INTO audit_event (occurred_at, actor, role, operation, action, target_type, "
    "target_id, fab_id, before, after) VALUES ($1, $2, 'operator', $3, $4, $5, $6, $7, "
    "$8::jsonb, $9::jsonb)"
)


class RawWorker:
    """One connection moving one lot along the route (round and round) through its own tools."""

    def __init__(
        self, conn: asyncpg.Connection, fixture: Fixture, n: int, window: Window, stats: Stats
    ) -> None:
        self.conn, self.window, self.stats = conn, window, stats
        self.lot_id, self.fab_id = fixture.raw_lots[n]
        self.steps, self.tools = fixture.steps, fixture.tool_ids[n]
        self.index, self.running = 0, False

    def _snapshot(self, state: str, step: int, tool: int | None) -> str:
        return json.dumps(
            {
                "state": state,
                "step_id": step,
                "equipment_id": tool,
                "wafer_count": 25,
                "fab_id": self.fab_id,
                "priority_class": "normal",
                "active_holds": 0,
            }
        )

    async def move(self) -> None:
        now = _now()
        step, group = self.steps[self.index]
        tool = self.tools[group]
        nxt = self.steps[(self.index + 1) % len(self.steps)][0]
        track_in = not self.running
        async with self.conn.transaction():
            lot = await self.conn.fetchrow(LOCK_LOT, self.lot_id)
            held = await self.conn.fetchrow(LOCK_TOOL, tool)
            new_state = E10State.PRD if track_in else E10State.SBY
            substate = DEFAULT_SUBSTATE[new_state]
            await self.conn.execute(UPDATE_TOOL, tool, new_state.value, substate, now)
            await self.conn.execute(
                INSERT_TOOL_EVENT,
                self.fab_id,
                tool,
                held["e10_state"],
                new_state.value,
                substate,
                now,
                OPERATOR[0],
                "lot track-in" if track_in else "last lot tracked out",
            )
            if track_in:
                await self.conn.execute(TRACK_IN_LOT, self.lot_id, tool, now)
                before = self._snapshot("Waiting", step, None)
                after = self._snapshot("Running", step, tool)
                lot_change = ({"state": "Waiting", "equipment_id": None}, {"state": "Running"})
            else:
                await self.conn.execute(TRACK_OUT_LOT, self.lot_id, nxt, now)
                before = self._snapshot("Running", step, tool)
                after = self._snapshot("Waiting", nxt, None)
                lot_change = ({"state": "Running", "current_step_id": step}, {"state": "Waiting"})
            operation = "lots.track_in" if track_in else "lots.track_out"
            version = lot["version"]
            await self.conn.executemany(
                INSERT_AUDIT,
                [
                    (
                        now,
                        OPERATOR[0],
                        operation,
                        "update",
                        "lot",
                        str(self.lot_id),
                        self.fab_id,
                        json.dumps({**lot_change[0], "version": version}),
                        json.dumps({**lot_change[1], "version": version + 1}),
                    ),
                    (
                        now,
                        OPERATOR[0],
                        operation,
                        "update",
                        "equipment",
                        str(tool),
                        self.fab_id,
                        json.dumps({"e10_state": held["e10_state"], "version": held["version"]}),
                        json.dumps({"e10_state": new_state.value, "version": held["version"] + 1}),
                    ),
                ],
            )
            await self.conn.execute(
                INSERT_LOT_EVENT,
                self.lot_id,
                self.fab_id,
                "TRACK_IN" if track_in else "TRACK_OUT",
                now,
                OPERATOR[0],
                step,
                tool,
                before,
                after,
            )
        if not track_in:
            self.index = (self.index + 1) % len(self.steps)
        self.running = track_in

    async def run(self) -> None:
        while not self.window.over:
            kind = "track_out" if self.running else "track_in"
            began = time.perf_counter()
            error = None
            try:
                await self.move()
            except (asyncpg.PostgresError, OSError) as exc:
                error = type(exc).__name__
            self.stats.record(self.window, kind, began, time.perf_counter(), error)
        if self.running:  # leave the tool free for the HTTP phases (not measured)
            await self.move()


async def raw_phase(url: str, fixture: Fixture, clients: int, warmup: float, seconds: float):
    dsn = asyncpg_dsn(url)
    conns = await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(clients)))
    try:
        stats = Stats()
        start = time.perf_counter() + warmup
        window = Window(start, start + seconds)
        workers = [RawWorker(conns[n], fixture, n, window, stats) for n in range(clients)]
        measure = asyncio.create_task(_measure_cpu(window, None))
        await asyncio.gather(*(w.run() for w in workers))
        return {**summarise(stats, seconds), **await measure}
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def _measure_cpu(window: Window, server_pid: int | None) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    before = cpu_snapshot(server_pid)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    return cpu_used(before, cpu_snapshot(server_pid), window.end - window.start)


# --- the service over HTTP ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def service(url: str, workers: int, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "MES_DATABASE_URL": url,
        "MES_JWT_SECRET": JWT_SECRET,
    }
    host = ["--host", "127.0.0.1", "--port", str(port)]
    if workers == 1:
        command = [sys.executable, "-m", "mes.cli", "serve", *host]
    else:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "mes.main:create_app",
            "--factory",
            "--workers",
            str(workers),
            *host,
        ]
    with log.open("wb") as err:
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            yield server, f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


async def wait_ready(http: httpx.AsyncClient, server: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise RuntimeError(f"the service exited:\n{_tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if (await http.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the service did not become ready in 30 s")


async def login(http: httpx.AsyncClient, who: tuple[str, str]) -> dict[str, str]:
    response = await http.post("/api/v1/auth/token", data={"username": who[0], "password": who[1]})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def start_lots(http: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    headers = await login(http, STARTER)
    lots: list[dict[str, Any]] = []
    while len(lots) < count:
        response = await http.post(
            "/api/v1/lots/bulk-start",
            json={"product": PRODUCT, "fab": FAB, "count": min(BULK_START_MAX, count - len(lots))},
            headers=headers,
            timeout=120,
        )
        response.raise_for_status()
        lots += response.json()["lots"]
    return lots


def _problem(response: httpx.Response) -> str:
    try:
        code = response.json().get("code", "?")
    except ValueError:
        code = "?"
    return f"{response.status_code} {code}"


class HttpClient:
    """One operator at one terminal: logs in once, then moves its own lots, one at a time."""

    def __init__(
        self,
        base: str,
        lots: list[dict[str, Any]],
        tools: dict[str, str],
        window: Window,
        stats: Stats,
    ) -> None:
        self.http = httpx.AsyncClient(base_url=base, timeout=60)
        self.lots, self.tools, self.window, self.stats = lots, tools, window, stats

    async def _post(self, kind: str, url: str, body: dict[str, Any]) -> httpx.Response | None:
        began = time.perf_counter()
        error = None
        response = None
        try:
            response = await self.http.post(url, json=body)
            if response.status_code != 200:
                error = _problem(response)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        self.stats.record(self.window, kind, began, time.perf_counter(), error)
        return response if error is None else None

    async def _state(self, code: str) -> tuple[str, str | None]:
        lot = (await self.http.get(f"/api/v1/lots/{code}")).json()
        return lot["state"], lot["step"]["tool_group"] if lot.get("step") else None

    async def log_in(self) -> None:
        self.http.headers.update(await login(self.http, OPERATOR))

    async def run(self) -> None:
        try:
            code, state = None, None
            for lot in self.lots:
                code, state, group = lot["code"], lot["state"], lot["step"]["tool_group"]
                while not self.window.over and state not in ("Completed", "OnHold"):
                    state, group = await self._move(code, state, group)
                if self.window.over:
                    break
            else:
                self.stats.dry_clients += 1
            if state == "Running":  # leave the tool free for the next phase (not measured)
                await self.http.post(f"/api/v1/lots/{code}/track-out", json={})
        finally:
            await self.http.aclose()

    async def _move(self, code: str, state: str, group: str | None) -> tuple[str, str | None]:
        if state == "Waiting" and group is not None:
            tool = self.tools[group]
            answer = await self._post("track_in", f"/api/v1/lots/{code}/track-in", {"tool": tool})
            if answer is not None:
                return "Running", group
        elif state == "Running":
            answer = await self._post("track_out", f"/api/v1/lots/{code}/track-out", {})
            if answer is not None:
                lot = answer.json()
                return lot["state"], lot["step"]["tool_group"] if lot["step"] else None
        return await self._state(code)  # refused or failed: see where the lot is


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


@dataclass
class Profiler:
    directory: Path
    process: asyncio.subprocess.Process | None = None
    output: Path | None = None

    async def start(self, pid: int, seconds: float, label: str) -> None:
        spy = _py_spy()
        if spy is None:
            print("  (--profile: py-spy not found; pip install py-spy)")
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.output = self.directory / f"lot_moves-{label}.txt"
        self.process = await asyncio.create_subprocess_exec(
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(self.output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def finish(self) -> dict[str, Any] | None:
        if self.process is None or self.output is None:
            return None
        await self.process.wait()
        if not self.output.exists():
            return None
        return analyse_profile(self.output)


async def http_phase(
    url: str,
    fixture: Fixture,
    workers: int,
    args: argparse.Namespace,
    profile_dir: Path | None,
) -> dict[str, Any]:
    clients = args.clients
    lots_per_client = args.lots_per_client or math.ceil(
        (args.warmup + args.seconds) * MAX_MOVES_PER_S_PER_CLIENT / (2 * len(fixture.steps)) + 1
    )
    log = Path(tempfile.gettempdir()) / f"lot_moves-server-{os.getpid()}.log"
    label = f"{workers}w" + ("-profiled" if profile_dir is not None else "")
    with service(url, workers, log) as (server, base):
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            await wait_ready(http, server, log)
            prepared = time.perf_counter()
            lots = await start_lots(http, clients * lots_per_client)
            start_s = time.perf_counter() - prepared
        stats = Stats()
        window = Window(math.inf, math.inf)
        runners = [
            HttpClient(
                base,
                lots[n * lots_per_client : (n + 1) * lots_per_client],
                fixture.tools[n],
                window,
                stats,
            )
            for n in range(clients)
        ]
        # Every client logs in once (argon2: deliberately slow) before the clock starts.
        await asyncio.gather(*(r.log_in() for r in runners))
        window.start = time.perf_counter() + args.warmup
        window.end = window.start + args.seconds
        profiler = Profiler(profile_dir) if profile_dir is not None else None

        async def profile_window() -> None:
            if profiler is not None:
                await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
                await profiler.start(server.pid, args.seconds, label)

        measure = asyncio.create_task(_measure_cpu(window, server.pid))
        await asyncio.gather(profile_window(), *(r.run() for r in runners))
        cpu = await measure
        crashed = server.poll() is not None
    figures = {
        "workers": workers,
        "lots_started": len(lots),
        "lots_per_client": lots_per_client,
        "bulk_start_s": round(start_s, 2),
        **summarise(stats, args.seconds),
        **cpu,
    }
    if crashed:
        figures["service_crashed"] = True
    if profiler is not None:
        figures["profile"] = await profiler.finish()
    return figures


# --- profile analysis ----------------------------------------------------------------------

# Where a sampled frame belongs, by its file (first match wins).
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("audit (mes.audit)", ("mes/audit/",)),
    ("auth (mes.auth, PyJWT)", ("mes/auth/", "jwt/")),
    ("idempotency (mes.kit.idempotency)", ("mes/kit/idempotency",)),
    ("lot service + rules (mes.lots)", ("mes/lots/",)),
    ("other MES code", ("mes/",)),
    (
        "asyncpg + SQLAlchemy's asyncpg adapter",
        ("asyncpg/", "sqlalchemy/dialects/postgresql/asyncpg"),
    ),
    (
        "SQLAlchemy async bridge (greenlet)",
        ("sqlalchemy/util/concurrency", "sqlalchemy/ext/asyncio"),
    ),
    ("SQLAlchemy ORM", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core (SQL compile, engine, types)", ("sqlalchemy/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("JSON (json, jsonable_encoder)", ("json/", "fastapi/encoders")),
    ("FastAPI + Starlette", ("fastapi/", "starlette/")),
    ("uvicorn + httptools", ("uvicorn/", "httptools/", "h11/")),
    ("logging", ("logging/",)),
    ("asyncio event loop", ("asyncio/", "uvloop/")),
]
# Inclusive: time spent under these functions (and everything they call).
UNDER = [
    ("authenticated (token → principal, own read transaction)", "authenticated (mes/auth/"),
    ("lot service track_in", "track_in (mes/lots/service"),
    ("lot service track_out", "track_out (mes/lots/service"),
    ("audit recorder (_after_flush)", "_after_flush (mes/audit/"),
    ("response body: lot reload + LotRead", "_fresh (mes/lots/router"),
    ("commit", "commit (sqlalchemy/ext/asyncio/session"),
    ("FastAPI request validation + dependencies", "solve_dependencies (fastapi/"),
    ("FastAPI response serialisation", "serialize_response (fastapi/"),
    ("uvicorn access log", "send (uvicorn/protocols/http/httptools_impl"),
    ("audit sealer (background)", "seal_audit_forever (mes/audit/sealer"),
]


def _category(frame: str) -> str:
    for name, needles in CATEGORIES:
        if any(needle in frame for needle in needles):
            return name
    return "other (stdlib, interpreter)"


def analyse_profile(path: Path) -> dict[str, Any]:
    """Shares of the sampled CPU time of the service (py-spy raw/collapsed stacks)."""
    total = 0
    self_by_category: Counter[str] = Counter()
    incl_by_category: Counter[str] = Counter()
    self_by_function: Counter[str] = Counter()
    under: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        self_by_category[_category(leaf)] += count
        self_by_function[leaf] += count
        for name in {_category(f) for f in frames}:
            incl_by_category[name] += count
        for label, needle in UNDER:
            if any(needle in f for f in frames):
                under[label] += count

    def share(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "file": str(path),
        "self_pct": {k: share(v) for k, v in self_by_category.most_common()},
        "inclusive_pct": {k: share(v) for k, v in incl_by_category.most_common()},
        "under_pct": {k: share(under[k]) for k, _ in UNDER},
        "top_self_functions_pct": {k: share(v) for k, v in self_by_function.most_common(15)},
    }


# --- report ----------------------------------------------------------------------------------


def describe(label: str, figures: dict[str, Any]) -> list[str]:
    lines = [
        f"{label}: {figures['moves']} moves, {figures['moves_per_s']} moves/s; latency per move "
        f"p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, p99 {figures['p99_ms']} ms, "
        f"max {figures['max_ms']} ms; errors {figures['errors']}"
        + (f" {figures['error_codes']}" if figures["errors"] else ""),
    ]
    for kind, k in figures["by_kind"].items():
        lines.append(
            f"    {kind}: {k['moves']} moves, p50 {k['p50_ms']} ms, p95 {k['p95_ms']} ms, "
            f"p99 {k['p99_ms']} ms"
        )
    cpu = ", ".join(
        f"{party} {figures[party + '_cores']} (kernel {figures[party + '_kernel_cores']})"
        for party in ("server", "postgres", "client", "profiler")
        if figures.get(party + "_cores")
    )
    lines.append(
        f"    CPU cores busy on average: {cpu}; other processes {figures['other_processes_cores']}"
        f"; machine {figures['machine_cores']} of {os.cpu_count()}"
    )
    if len(figures.get("server_process_cores", [])) > 1:
        lines.append(f"    service processes (cores each): {figures['server_process_cores']}")
    if figures["other_processes_cores"] > 0.2:
        lines.append(
            "    WARNING: other processes were busy meanwhile; these figures are disturbed"
        )
    if figures.get("clients_out_of_lots"):
        lines.append(f"    WARNING: {figures['clients_out_of_lots']} clients ran out of lots")
    if figures.get("service_crashed"):
        lines.append("    WARNING: the service exited during the run")
    return lines


def describe_profile(profile: dict[str, Any]) -> list[str]:
    lines = [f"  profile of the 1-worker service: {profile['samples']} samples ({profile['file']})"]
    lines.append("    self time by component (% of the service's CPU samples):")
    lines += [f"      {v:5.1f}  {k}" for k, v in profile["self_pct"].items()]
    lines.append("    inclusive (samples with a frame of the component anywhere on the stack):")
    lines += [f"      {v:5.1f}  {k}" for k, v in profile["inclusive_pct"].items()]
    lines.append("    time under:")
    lines += [f"      {v:5.1f}  {k}" for k, v in profile["under_pct"].items()]
    lines.append("    top functions by self time:")
    lines += [f"      {v:5.1f}  {k}" for k, v in profile["top_self_functions_pct"].items()]
    return lines


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if make_url(args.database_url).get_backend_name() != "postgresql":
        raise SystemExit("the benchmark needs PostgreSQL (the baseline talks to it with asyncpg)")
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    url = await create_database(args.database_url)
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
            await drop_database(args.database_url, url)


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
