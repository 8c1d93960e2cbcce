"""What one lot move costs the service, measured in one process, one move at a time.

    python bench/lot_moves_inproc.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python bench/lot_moves_inproc.py --database-url sqlite   # the embedded default
    python bench/lot_moves_inproc.py --profile 20            # + cProfile, top 20 by layer

The HTTP benchmark (``lot_moves.py``) measures throughput on a machine other jobs share; this one
measures what throughput is made of, undisturbed by them: the service's CPU milliseconds per
move (``time.process_time`` of this process, which runs the ASGI app and a thin client) and the
database round trips per move (every statement, BEGIN, COMMIT and pool ping counted at the
driver). It seeds the same fixture as ``lot_moves.py`` (one client's private tools), calls the
app in-process (``httpx.ASGITransport``: no sockets, no uvicorn), and moves lots track-in →
track-out along the route. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from lot_moves_fixture import FAB, OPERATOR, PRODUCT, STARTER, prepare, utc_now
from py_spy_profile import analyse_profile, describe_profile
from pydantic import SecretStr
from sqlalchemy import event, select
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import CacheStats

from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind
from mes.auth.service import Principal
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import throwaway
from mes.db.transaction import unit_of_work
from mes.fabs.models import ToolGroup
from mes.lots import service as lots_service
from mes.lots.commands import TrackIn, TrackOut
from mes.main import create_app
from mes.routes.models import Step

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
CLOCK = SystemClock()


_CACHE_OUTCOME = {
    CacheStats.CACHE_HIT: "cached",
    CacheStats.CACHE_MISS: "generated",
    CacheStats.CACHING_DISABLED: "caching disabled",
    CacheStats.NO_CACHE_KEY: "no cache key (raw SQL, DDL, pings)",
}


class RoundTrips:
    """Every request the driver sends to the database, by kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.cache: Counter[str] = Counter()
        self.uncached: Counter[str] = Counter()
        self.on = False
        # Which move the trips belong to (set by the mover): statements per track-in and
        # per track-out, not only their average.
        self.move = "move"
        self.by_move: dict[str, Counter[str]] = {}

    def add(self, kind: str) -> None:
        if self.on:
            self.counts[kind] += 1
            self.by_move.setdefault(self.move, Counter())[kind] += 1

    @contextmanager
    def installed(self, url: str) -> Iterator[None]:
        if make_url(url).get_backend_name() == "postgresql":
            with self._asyncpg():
                yield
        else:
            yield  # SQLite: counted by the engine listener (see attach)

    def attach(self, engine: Any) -> None:
        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _cache(_c: Any, _cur: Any, statement: str, _p: Any, context: Any, _m: Any) -> None:
            # SQLAlchemy's compiled cache: a statement of the hot path compiled per request
            # would show up here as "generated" (echo says "[generated in …]").
            if self.on and context is not None and not statement.lstrip().startswith("BEGIN"):
                outcome = _CACHE_OUTCOME.get(context.cache_hit, str(context.cache_hit))
                self.cache[outcome] += 1
                if outcome != "cached":
                    self.uncached[_kind(statement)] += 1

        if engine.dialect.name != "sqlite":
            return

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _statement(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
            self.add(_kind(statement))

        @event.listens_for(engine.sync_engine, "commit")
        def _commit(_c: Any) -> None:
            self.add("COMMIT")

    @contextmanager
    def _asyncpg(self) -> Iterator[None]:
        import asyncpg.connection
        import asyncpg.prepared_stmt

        patched = []

        def wrap(owner: Any, name: str, kind_of: Any) -> None:
            original = getattr(owner, name)

            async def counting(obj: Any, *args: Any, **kwargs: Any) -> Any:
                self.add(kind_of(obj, *args))
                return await original(obj, *args, **kwargs)

            setattr(owner, name, counting)
            patched.append((owner, name, original))

        wrap(asyncpg.connection.Connection, "execute", lambda _c, q, *a: _kind(q))
        wrap(asyncpg.connection.Connection, "fetchrow", lambda _c, q, *a: _kind(q))
        wrap(
            asyncpg.prepared_stmt.PreparedStatement,
            "_PreparedStatement__do_execute",
            lambda st, *a: _kind(st.get_query()),
        )
        wrap(asyncpg.connection.Connection, "executemany", lambda _c, q, *a: _kind(q) + " (many)")
        try:
            yield
        finally:
            for owner, name, original in patched:
                setattr(owner, name, original)


_FROM = re.compile(r"\bFROM\s+\(?\s*(\w+)", re.IGNORECASE)
_LOCK = re.compile(r"\bFOR (NO KEY UPDATE|UPDATE|SHARE|KEY SHARE)\b", re.IGNORECASE)


def _kind(statement: str) -> str:
    words = statement.strip().split()
    if not words:
        return "; (ping)"
    head = words[0].upper()
    if head in ("INSERT", "DELETE") and len(words) > 2:
        return f"{head} {words[2]}"
    if head == "UPDATE" and len(words) > 1:
        return f"UPDATE {words[1]}"
    if head == "SELECT":
        found = _FROM.search(statement)
        table = found.group(1).lower() if found else "-"
        return f"SELECT {table}" + (" (lock)" if _LOCK.search(statement) else "")
    return head


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sqlite = args.database_url == "sqlite"
    folder = tempfile.mkdtemp(prefix="lot_moves_inproc-")
    if sqlite:
        url = throwaway.sqlite_database(Path(folder), "bench")
    else:
        url = await throwaway.create_database(args.database_url, prefix="mes_bench")
    trips = RoundTrips()
    try:
        fixture = await prepare(url, 1)
        settings = Settings(
            database_url=url,
            jwt_secret=SecretStr("inproc-bench-signing-key-0123456789abcdef"),
            log_level="warning",
        )
        app = create_app(settings, background=False)
        trips.attach(app.state.db.engine)
        transport = httpx.ASGITransport(app=app)
        with trips.installed(url):
            async with httpx.AsyncClient(transport=transport, base_url="http://mes") as http:
                starter = await _login(http, STARTER)
                operator = await _login(http, OPERATOR)
                steps = len(fixture.steps)
                lots_needed = (args.moves + args.warmup) // (2 * steps) + 2
                started = await http.post(
                    "/api/v1/lots/bulk-start",
                    json={"product": PRODUCT, "fab": FAB, "count": lots_needed},
                    headers=starter,
                    timeout=120,
                )
                started.raise_for_status()
                lots = started.json()["lots"]
                mover: Mover | DirectMover = Mover(http, operator, fixture.tools[0], lots)
                if args.direct:
                    mover = await DirectMover.make(app.state.db, fixture.tools[0], lots)
                mover.trips = trips
                await mover.moves(args.warmup)  # compiled caches, prepared statements
                mover.kinds.clear()
                trips.on = True
                profiler = cProfile.Profile(time.process_time) if args.profile else None
                spy = await _start_py_spy(args.py_spy) if args.py_spy else None
                cpu0, wall0 = time.process_time(), time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                done = await mover.moves(args.moves)
                if profiler is not None:
                    profiler.disable()
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                    await spy.wait()
                trips.on = False
    finally:
        if not sqlite:
            await throwaway.drop_database(url, beside=args.database_url)
    figures: dict[str, Any] = {
        "benchmark": "lot_moves_inproc",
        "database": "sqlite" if sqlite else "postgresql",
        "moves": done,
        "by_kind": dict(mover.kinds),
        "cpu_ms_per_move": round(cpu * 1000 / done, 2),
        "wall_ms_per_move": round(wall * 1000 / done, 2),
        "round_trips_per_move": round(sum(trips.counts.values()) / done, 2),
        "round_trips": {k: round(v / done, 2) for k, v in trips.counts.most_common()},
        "round_trips_by_move": {
            move: {
                "per_move": round(sum(c.values()) / mover.kinds[move], 2),
                **{k: round(v / mover.kinds[move], 2) for k, v in c.most_common()},
            }
            for move, c in trips.by_move.items()
            if mover.kinds[move]
        },
        "compiled_cache": dict(trips.cache),
        "not_from_compiled_cache": dict(trips.uncached),
        "profiled": bool(args.profile),
        "python": sys.version.split()[0],
    }
    print(
        f"{figures['database']}: {done} moves, {figures['cpu_ms_per_move']} ms CPU per move "
        f"(service + in-process client), {figures['wall_ms_per_move']} ms wall, "
        f"{figures['round_trips_per_move']} round trips per move"
        + (" (under cProfile: CPU inflated)" if args.profile else "")
    )
    for kind, n in figures["round_trips"].items():
        print(f"    {n:6.2f}  {kind}")
    for move, per in figures["round_trips_by_move"].items():
        print(f"  {move}: {per['per_move']} round trips each")
        for kind, n in list(per.items())[1:]:
            print(f"    {n:6.2f}  {kind}")
    print(f"    SQLAlchemy compiled cache: {dict(trips.cache)}; not cached: {dict(trips.uncached)}")
    if args.py_spy and args.py_spy.exists():
        profile = analyse_profile(args.py_spy)
        figures["py_spy"] = profile
        print(*describe_profile(profile), sep="\n")
        print("    self time by component, ms of CPU per move (scaled by the figure above):")
        for name, pct in profile["self_pct"].items():
            print(f"      {pct * figures['cpu_ms_per_move'] / 100:6.2f}  {name}")
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(args.profile)
        if args.profile_out:
            stats.dump_stats(args.profile_out)
    return figures


async def _start_py_spy(output: Path) -> asyncio.subprocess.Process:
    """py-spy sampling this very process (blocking: exact stacks) for the measured moves only,
    so the seeding and warm-up stay out of the profile (bench/py_spy_profile.py reads it)."""
    spy = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(os.getpid()),
        "--rate",
        "250",
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(2.0)  # attached by then
    return spy


async def _login(http: httpx.AsyncClient, who: tuple[str, str]) -> dict[str, str]:
    response = await http.post("/api/v1/auth/token", data={"username": who[0], "password": who[1]})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


class Mover:
    """Moves its lots along the route, one move at a time, each lot until it completes."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        tools: dict[str, str],
        lots: list[dict[str, Any]],
    ) -> None:
        self.http, self.headers, self.tools = http, headers, tools
        self.lots = [(lot["code"], lot["step"]["tool_group"]) for lot in lots]
        self.state = "Waiting"
        self.kinds: Counter[str] = Counter()
        self.trips: RoundTrips | None = None

    async def moves(self, count: int) -> int:
        for _ in range(count):
            code, group = self.lots[0]
            if self.trips is not None:
                self.trips.move = "track_in" if self.state == "Waiting" else "track_out"
            if self.state == "Waiting":
                url, body = f"/api/v1/lots/{code}/track-in", {"tool": self.tools[group]}
            else:
                url, body = f"/api/v1/lots/{code}/track-out", {}
            response = await self.http.post(url, json=body, headers=self.headers)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text}")
            answer = response.json()
            self.kinds["track_in" if self.state == "Waiting" else "track_out"] += 1
            lot = answer.get("lot", answer)
            self.state = lot["state"]
            if self.state == "Completed":
                self.lots.pop(0)
                self.state = "Waiting"
            elif lot["step"] is not None:
                self.lots[0] = (code, lot["step"]["tool_group"])
            if self.state not in ("Waiting", "Running"):
                raise RuntimeError(f"lot {code} is {self.state}")
        return count


class DirectMover(Mover):
    """The same moves through the lots service itself, as the OPC UA adapters (job end →
    track-out) and the dispatcher (job request → track-in) make them: a unit of work per
    move, a service account as the actor (no certification query), no HTTP, no token."""

    def __init__(self, db: Any, tools: dict[str, str], lots: list[dict[str, Any]]) -> None:
        super().__init__(None, {}, tools, lots)  # type: ignore[arg-type]
        self.db = db
        self.actor = Principal(0, "tool-adapter", AccountKind.SERVICE, frozenset(), None)
        self.group_of_step: dict[int, str] = {}

    @classmethod
    async def make(cls, db: Any, tools: dict[str, str], lots: list[dict[str, Any]]) -> DirectMover:
        mover = cls(db, tools, lots)
        async with unit_of_work(db, write=False) as session:
            rows = await session.execute(
                select(Step.id, ToolGroup.code).join(ToolGroup, ToolGroup.id == Step.tool_group_id)
            )
            mover.group_of_step = {step: group for step, group in rows.all()}
        return mover

    async def moves(self, count: int) -> int:
        for _ in range(count):
            code, group = self.lots[0]
            kind = "track_in" if self.state == "Waiting" else "track_out"
            if self.trips is not None:
                self.trips.move = kind
            async with unit_of_work(self.db) as session:
                bind(
                    session,
                    AuditContext(self.actor.username, "tool-adapter", f"bench.{kind}", utc_now()),
                )
                if kind == "track_in":
                    lot, _tool, _recipe, _chambers = await lots_service.track_in(
                        session,
                        code,
                        TrackIn(tool=self.tools[group]),
                        actor=self.actor,
                        clock=CLOCK,
                    )
                else:
                    lot = await lots_service.track_out(
                        session, code, TrackOut(), actor=self.actor, clock=CLOCK
                    )
                state, step = lot.state.value, lot.current_step_id
            self.kinds[kind] += 1
            self.state = state
            if state == "Completed":
                self.lots.pop(0)
                self.state = "Waiting"
            elif step is not None:
                self.lots[0] = (code, self.group_of_step[step])
            if self.state not in ("Waiting", "Running"):
                raise RuntimeError(f"lot {code} is {self.state}")
        return count


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("MES_BENCH_DATABASE_URL", DEFAULT_URL),
        help="a PostgreSQL database to create a throw-away one beside, or 'sqlite'",
    )
    parser.add_argument("--moves", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=80)
    parser.add_argument(
        "--direct", action="store_true", help="call the lots service, not the HTTP API"
    )
    parser.add_argument("--profile", type=int, default=0, help="cProfile; print the top N")
    parser.add_argument("--profile-out", type=Path, help="write the cProfile stats here")
    parser.add_argument("--py-spy", type=Path, help="py-spy the measured moves into this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    try:
        import uvloop  # the event loop the service runs on (uvicorn picks it)
    except ImportError:
        uvloop = None
    if uvloop is None or arguments.py_spy:
        # Profiled: asyncio's own loop, whose waiting py-spy can tell from work (uvloop's
        # C loop shows waiting, its callbacks and asyncpg's decoding as one frame).
        print(json.dumps(asyncio.run(main(arguments)), sort_keys=True))
    else:
        print(json.dumps(uvloop.run(main(arguments)), sort_keys=True))
