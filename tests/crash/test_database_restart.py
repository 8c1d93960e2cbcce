"""A real PostgreSQL server restarted under load: a private throw-away cluster (initdb and
pg_ctl, on a free port in a temporary folder; the shared server is never touched) serves the
MES while API clients work their lots (``bench/crash.py``'s clients: start, track in and out,
hold, release, split, merge, bonus, every write with an ``Idempotency-Key``). The server is
stopped, the service answers 503 ``db.unavailable`` with ``Retry-After`` and ``/readyz`` 503;
it is started again, the service recovers by itself, and every acknowledged request is in the
database exactly once.

PostgreSQL only (it runs in the PostgreSQL pass, ``MES_TEST_DATABASE_URL``); skipped where the
server binaries are missing or cannot run (as root without a ``postgres`` account)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib
import json
import os
import pwd
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from mes.check.invariants import check_database
from mes.config import Settings
from mes.main import create_app
from tests.crash.test_database_faults import FAIL_FAST_S, START_LOT, _prepared
from tests.equipment_sims.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("MES_TEST_DATABASE_URL", "")
DOWN_S = 3.0  # how long the server stays stopped


def _bench_crash() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module("crash")
    finally:
        sys.path.remove(str(ROOT / "bench"))


class Cluster:
    """A PostgreSQL cluster of our own: initdb, pg_ctl start/stop, removed at the end."""

    def __init__(self, bindir: Path, root: Path, user: str | None) -> None:
        self.bindir, self.root, self.user = bindir, root, user
        self.data = root / "data"
        self.port = free_port()

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=60"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not DATABASE_URL.startswith("postgresql"):
        pytest.skip("PostgreSQL pass only (MES_TEST_DATABASE_URL)")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found and shutil.which("initdb") is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    bindir = Path(found[-1] if found else str(shutil.which("initdb"))).parent
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root: as the postgres account
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres account to run the server")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="mes-pg-"))
    if user is not None:
        shutil.chown(root, user=user)
    server = Cluster(bindir, root, user)
    try:
        server.init()
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot run a private PostgreSQL server here: {exc}")
    try:
        yield server
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def service(cluster: Cluster) -> AsyncIterator[tuple[Any, httpx.AsyncClient, ModuleType]]:
    crash = _bench_crash()
    direct = await _prepared(cluster.url)
    settings = Settings(
        database_url=cluster.url,
        jwt_secret=SecretStr(crash.SECRET),
        database_connect_timeout_s=1,
        database_command_timeout_s=2,
        database_pool_timeout_s=1,
    )
    app = create_app(settings, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://mes.test") as http:
            yield direct, http, crash
    finally:
        await app.state.db.dispose()
        await direct.dispose()


def _auth(crash: ModuleType, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {crash.token('engineer')}", "Idempotency-Key": key}


async def test_a_postgresql_restart_under_load_loses_and_doubles_nothing(
    cluster: Cluster, service: tuple[Any, httpx.AsyncClient, ModuleType]
) -> None:
    direct, http, crash = service
    began = time.monotonic()
    load = crash.Load(service=SimpleNamespace(base=""), http=http)
    load.up.set()
    rng = random.Random(20261204)
    clients = [
        asyncio.create_task(crash.client(load, n, random.Random(rng.random()))) for n in range(4)
    ]
    try:
        await asyncio.sleep(4.0)  # the load gets going
        before_stop = len(load.ledger)
        await asyncio.to_thread(cluster.stop, "fast")
        stopped_at = time.monotonic()

        # During the outage: a fast 503 problem+json with Retry-After, and not ready.
        key = f"outage-{uuid.uuid4().hex[:8]}"
        t0 = time.monotonic()
        answer = await http.post("/api/v1/lots", json=START_LOT, headers=_auth(crash, key))
        took = time.monotonic() - t0
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "db.unavailable"
        assert int(answer.headers["retry-after"]) >= 1
        assert took < FAIL_FAST_S, took
        assert (await http.get("/readyz")).status_code == 503
        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - stopped_at)))

        await asyncio.to_thread(cluster.start)
        back_at = time.monotonic()
        while True:  # the same request, same key, until the service has recovered
            answer = await http.post("/api/v1/lots", json=START_LOT, headers=_auth(crash, key))
            if answer.status_code != 503:
                break
            assert time.monotonic() - back_at < 30, "no recovery within 30 s"
            await asyncio.sleep(0.05)
        recovered = time.monotonic() - back_at
        assert answer.status_code == 201, answer.text
        assert (await http.get("/readyz")).status_code == 200
        after_restart = len(load.ledger)
        await asyncio.sleep(3.0)  # and the load goes on
    finally:
        load.stop.set()
        done, pending = await asyncio.wait(clients, timeout=60)
        for task in pending:
            task.cancel()
    for task in done:
        task.result()  # a client that met a 5xx other than 503 fails the test here
    assert len(load.ledger) > after_restart, "no request acknowledged after the restart"

    verdict = await crash.verify(direct, load.ledger)
    report = await check_database(direct)
    figures = {
        "outage_s": round(back_at - stopped_at, 2),
        "answered_503_after_s": round(took, 2),
        "recovered_after_s": round(recovered, 2),
        "acknowledged": verdict["acknowledged"],
        "acknowledged_before_stop": before_stop,
        "lost": verdict["events_missing"],
        "doubled": verdict["events_doubled"],
        "without_record": verdict["acknowledged_without_record"],
        "invariants_ok": report.ok,
        "test_s": round(time.monotonic() - began, 1),
    }
    print("postgresql restart: " + json.dumps(figures))
    assert verdict["events_missing"] == 0, verdict
    assert verdict["events_doubled"] == 0, verdict
    assert verdict["acknowledged_without_record"] == 0, verdict
    assert report.ok, [v.as_dict() for v in report.violations]
