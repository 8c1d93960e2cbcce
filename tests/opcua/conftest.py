"""OPC UA adapter tests: real simulated tools over loopback, a real adapter, real commits.

Each test gets its own database, copied from a template built once per run (migrated and
seeded with a four-tool fab ``T1``); its tools' endpoints point at simulated tools started
on free ports for the test. The API app and the adapters use separate engines on the same
database, as separate processes would.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from equipment_sims.clock import SimClock
from equipment_sims.pki import Security as SimSecurity
from equipment_sims.server import SimServer
from equipment_sims.spec import ToolSpec
from mes.audit.context import AuditContext, bind
from mes.auth.roles import Role
from mes.clock import FixedClock, SystemClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.equipment.models import Equipment
from mes.main import create_app
from mes.opcua import mapping
from mes.opcua.adapter import AdapterSettings
from mes.opcua.client import Security
from mes.opcua.model import ProcessingKind
from mes.opcua.registry import AdapterRegistry
from mes.seed import loader
from tests.conftest import JWT_SECRET, START, access_token
from tests.databases import create_database, drop_database
from tests.equipment_sims.conftest import free_port

TIMEOUT = 30.0
OPERATOR = "t1-operator"
TOOLS = {
    # A wet bench running up to two lots per job (the batch tests).
    "T1-WET01": ToolSpec(
        "T1-WET01", ProcessingKind.WET_BENCH, "wet", tool_group="T_WET", max_batch=2
    ),
    "T1-DEP01": ToolSpec(
        "T1-DEP01",
        ProcessingKind.CLUSTER,
        "deposition",
        tool_group="T_DEP",
        chambers=("PM1", "PM2"),
    ),
    "T1-MET01": ToolSpec("T1-MET01", ProcessingKind.SINGLE_WAFER, "metrology", tool_group="T_MET"),
    "T1-ETCH01": ToolSpec(
        "T1-ETCH01", ProcessingKind.CLUSTER, "etch", tool_group="T_ETCH", chambers=("PM1", "PM2")
    ),
}
ROUTE = [  # (sequence, operation, tool group, recipe, tool)
    (10, "CLEAN", "T_WET", "T_WET_CLEAN", "T1-WET01"),
    (20, "DEP", "T_DEP", "T_DEP_OX", "T1-DEP01"),
    (30, "THK", "T_MET", "T_MET_THK", "T1-MET01"),
    (40, "ETCH", "T_ETCH", "T_ETCH_OX", "T1-ETCH01"),
]
BODIES: dict[str, dict[str, Any]] = {
    "T_WET_CLEAN": {"parameters": [{"name": "sc1_time", "value": 60, "unit": "s"}]},
    "T_DEP_OX": {
        "parameters": [
            {"name": "temperature", "value": 400, "unit": "C"},
            {"name": "time", "value": 30, "unit": "s"},
            {"name": "sih4_flow", "value": 100, "unit": "sccm"},
        ]
    },
    "T_MET_THK": {"parameters": [{"name": "sites", "value": 5}]},
    "T_ETCH_OX": {
        "parameters": [
            {"name": "rf_power", "value": 500, "unit": "W"},
            {"name": "time", "value": 30, "unit": "s"},
        ]
    },
}


def _seed() -> loader.ExampleData:
    kinds = {"T_WET": "wet_bench", "T_DEP": "cluster", "T_MET": "single_wafer", "T_ETCH": "cluster"}
    return loader.ExampleData.model_validate(
        {
            "format": "fab-mes-example/1",
            "fabs": [
                {
                    "code": "T1",
                    "name": "Test fab",
                    "timezone": "UTC",
                    "areas": [{"code": "ALL", "name": "Everything"}],
                }
            ],
            "tool_groups": [
                {"code": g, "name": f"group {g}", "processing_kind": k} for g, k in kinds.items()
            ],
            "tools": [
                {
                    "code": code,
                    "name": code,
                    "fab": "T1",
                    "area": "ALL",
                    "tool_group": spec.tool_group,
                    "opcua_endpoint": f"opc.tcp://127.0.0.1:1/{code}",
                    "chambers": list(spec.chambers),
                    "max_lots": spec.max_batch,
                }
                for code, spec in TOOLS.items()
            ],
            "products": [{"code": "TPROD", "name": "test product"}],
            "recipes": [{"name": r, "tool_group": g, "body": BODIES[r]} for _, _, g, r, _ in ROUTE],
            "routes": [
                {
                    "code": "R-T",
                    "name": "test route",
                    "product": "TPROD",
                    "steps": [
                        {
                            "sequence": seq,
                            "operation": op,
                            "tool_group": g,
                            "recipe": r,
                            "process_time_s": 600,
                            **({"batch_min": 1, "batch_max": 2} if op == "CLEAN" else {}),
                        }
                        for seq, op, g, r, _ in ROUTE
                    ],
                }
            ],
            "carriers": [],
            "users": [
                {
                    "username": OPERATOR,
                    "display_name": "T1 operator",
                    "roles": [Role.OPERATOR.value, Role.ENGINEER.value],
                    "password": "t1-operator-password",
                    "certified_for": list(kinds),
                }
            ],
        }
    )


@pytest.fixture(scope="session")
async def template_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    url = await create_database(Path(tmp_path_factory.mktemp("opcua-template")), "opcua_tmpl")
    engine = create_engine(Settings(database_url=url))
    await migrate.upgrade(engine)
    async with unit_of_work(Database(engine)) as session:
        await loader.load(session, _seed(), clock=FixedClock(START))
    await engine.dispose()
    yield url
    await drop_database(url)


@dataclass
class Fab:
    """One test's world: database, API client, simulated tools, adapters."""

    url: str
    settings: Settings
    db: Database
    api: httpx.AsyncClient
    shelf_dir: Path
    sims: dict[str, SimServer] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    registries: list[tuple[AdapterRegistry, asyncio.Task[None], Database]] = field(
        default_factory=list
    )

    async def start_sim(
        self,
        code: str,
        *,
        speed: float = 600.0,
        pki_dir: Path | None = None,
        security: SimSecurity | None = None,
    ) -> SimServer:
        sim = SimServer(
            TOOLS[code],
            clock=SimClock(speed),
            port=self.ports[code],
            seed=7,
            shelf_dir=self.shelf_dir,
            pki_dir=pki_dir,
            security=security,
        )
        await sim.start()
        self.sims[code] = sim
        return sim

    async def stop_sim(self, code: str) -> None:
        await self.sims.pop(code).stop()

    def start_adapter(
        self,
        owner: str = "adapter-a",
        *,
        lease_ttl_s: float = 3.0,
        stale_s: float = 2.0,
        security: Security | None = None,
        process_values: tuple[str, ...] = ("*",),
        max_queued_events: int = 10_000,
        settings: Settings | None = None,
    ) -> AdapterRegistry:
        """``settings``: the adapter's own (another database URL: through a proxy, say)."""
        db = Database(create_engine(settings or self.settings))
        registry = AdapterRegistry(
            db,
            SystemClock(),
            AdapterSettings(
                owner=owner,
                stale_s=stale_s,
                reconnect_min_s=0.2,
                reconnect_max_s=1.0,
                timeout_s=5.0,
                publishing_ms=50,
                alarm_rules=mapping.DEFAULT_ALARM_RULES,
                security=security or Security(),
                process_values=process_values,
                max_queued_events=max_queued_events,
            ),
            fab="T1",
            lease_ttl_s=lease_ttl_s,
            poll_s=0.1,
        )
        task = asyncio.create_task(registry.run())
        self.registries.append((registry, task, db))
        return registry

    async def kill_adapter(self, registry: AdapterRegistry) -> None:
        """Stop an adapter as if its process died: its leases are left to expire."""
        for entry in list(self.registries):
            if entry[0] is not registry:
                continue
            _, task, db = entry
            self.registries.remove(entry)
            tasks = list(registry.tasks.values())
            registry.adapters.clear()  # nothing left to release on the way out
            registry.tasks.clear()
            for t in [*tasks, task]:
                t.cancel()
            # A dead process waits for nothing: give the tasks a moment, then drop them.
            await asyncio.wait([*tasks, task], timeout=10)
            await db.dispose()

    async def stop_adapters(self) -> None:
        for _registry, task, db in self.registries:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await db.dispose()
        self.registries.clear()

    # --- API helpers ------------------------------------------------------------------------
    async def start_lot(self, wafers: int = 5) -> str:
        r = await self.api.post(
            "/api/v1/lots", json={"product": "TPROD", "fab": "T1", "wafer_count": wafers}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["code"])

    async def lot(self, code: str) -> dict[str, Any]:
        r = await self.api.get(f"/api/v1/lots/{code}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def history(self, code: str) -> list[dict[str, Any]]:
        r = await self.api.get(f"/api/v1/lots/{code}/history", params={"limit": 500})
        assert r.status_code == 200, r.text
        body = r.json()
        return list(body["items"] if isinstance(body, dict) else body)

    async def request_job(self, lot: str, tool: str) -> dict[str, Any]:
        r = await self.api.post(f"/api/v1/lots/{lot}/jobs", json={"tool": tool})
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def job(self, job_order_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/api/v1/jobs/{job_order_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def wait_job(
        self, job_order_id: str, *statuses: str, within: float = TIMEOUT
    ) -> dict[str, Any]:
        job: dict[str, Any] = {}

        async def check() -> bool:
            nonlocal job
            job = await self.job(job_order_id)
            return job["status"] in statuses

        await wait_for(check, f"job {job_order_id} in {statuses}", within=within)
        return job

    async def connection(self, tool: str) -> dict[str, Any]:
        r = await self.api.get(f"/api/v1/equipment/{tool}/connection")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def tool(self, code: str) -> dict[str, Any]:
        r = await self.api.get(f"/api/v1/equipment/{code}")
        assert r.status_code == 200, r.text
        return dict(r.json())


async def wait_for(
    check: Callable[[], Any], what: str, *, within: float = TIMEOUT, every: float = 0.1
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


@pytest.fixture(scope="session")
def opcua_shelf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("opcua-shelf")


@pytest.fixture
async def fab(template_url: str, tmp_path: Path, opcua_shelf: Path) -> AsyncIterator[Fab]:
    url = await create_database(tmp_path, "opcua", template=template_url)
    settings = Settings(database_url=url, jwt_secret=SecretStr(JWT_SECRET))
    db = Database(create_engine(settings))
    ports = {code: free_port() for code in TOOLS}
    async with unit_of_work(db) as session:
        bind(session, AuditContext(actor="test", role="system", operation="test.setup", at=START))
        for code, port in ports.items():
            tool = (await session.scalars(select(Equipment).where(Equipment.code == code))).one()
            tool.opcua_endpoint = f"opc.tcp://127.0.0.1:{port}/{code}"
    app = create_app(settings, database=db, clock=SystemClock(), background=False)
    token = access_token(OPERATOR, auth_time=datetime.now(UTC))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://mes.test",
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    ) as api:
        world = Fab(url=url, settings=settings, db=db, api=api, shelf_dir=opcua_shelf, ports=ports)
        try:
            yield world
        finally:
            await _bounded(world.stop_adapters(), "stopping the adapters")
            for code in list(world.sims):
                with contextlib.suppress(Exception):
                    await _bounded(world.stop_sim(code), f"stopping the sim {code}")
            await _bounded(db.dispose(), "disposing of the engine")
            await drop_database(url)


TEARDOWN_S = 30.0


async def _bounded(step: Coroutine[Any, Any, None], what: str) -> None:
    """A teardown step that hangs fails the test, saying where every task stood, instead of
    hanging the whole run (``asyncio.wait``, unlike ``wait_for``, does not wait for a stuck
    step to take its cancellation)."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=TEARDOWN_S)
    if task in done:
        task.result()
        return
    stacks = io.StringIO()
    for other in asyncio.all_tasks():
        stacks.write(f"{other.get_name()} ({'cancelling' if other.cancelling() else 'pending'}):\n")
        stacks.writelines(f"    {where}\n" for where in _await_chain(other.get_coro()))
    task.cancel()
    raise AssertionError(f"{what} hung for {TEARDOWN_S:.0f} s; tasks:\n{stacks.getvalue()}")


def _await_chain(coro: Any) -> list[str]:
    """Where a suspended coroutine waits, innermost last (``Task.get_stack`` shows only the
    outermost frame of a suspended coroutine)."""
    chain = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain
