"""Lot moves through the service over HTTP: operators at their terminals, one lot at a time."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from lot_moves_fixture import FAB, OPERATOR, PRODUCT, STARTER, Fixture
from lot_moves_raw import asyncpg_dsn
from measuring import Stats, Window, cpu_per_move, measure_cpu, sessions_opened, summarise
from py_spy_profile import Profiler
from service_process import service, wait_ready

# Lots each client gets: enough for this many moves per second per client (about three
# times the target at 32 clients); a client that still runs dry is reported.
MAX_MOVES_PER_S_PER_CLIENT = 40.0
BULK_START_MAX = 200


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
        # Every client logs in once (argon2: deliberately slow) before the clock starts, a few
        # at a time: a login holds a pooled connection while it hashes, and 32 at once on a
        # busy machine ran the pool (10 + 10 overflow) out after its 30 s timeout.
        logins = asyncio.Semaphore(4)

        async def log_in(runner: HttpClient) -> None:
            async with logins:
                await runner.log_in()

        await asyncio.gather(*(log_in(r) for r in runners))
        window.start = time.perf_counter() + args.warmup
        window.end = window.start + args.seconds
        profiler = Profiler(profile_dir) if profile_dir is not None else None

        async def profile_window() -> None:
            if profiler is not None:
                await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
                await profiler.start(server.pid, args.seconds, label)

        measure = asyncio.create_task(measure_cpu(window, server.pid))
        sessions = asyncio.create_task(sessions_opened(window, asyncpg_dsn(url)))
        await asyncio.gather(profile_window(), *(r.run() for r in runners))
        cpu = await measure
        opened = await sessions
        crashed = server.poll() is not None
    figures = {
        "workers": workers,
        "lots_started": len(lots),
        "lots_per_client": lots_per_client,
        "bulk_start_s": round(start_s, 2),
        **summarise(stats, args.seconds),
        **cpu,
        "database_sessions_opened": opened,
    }
    figures.update(cpu_per_move(figures, args.seconds))
    if crashed:
        figures["service_crashed"] = True
    if profiler is not None:
        figures["profile"] = await profiler.finish()
    return figures
