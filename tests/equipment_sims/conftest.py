"""Fixtures for the simulator tests: real OPC UA servers on loopback ports, a small client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua

from equipment_sims.clock import SimClock
from equipment_sims.server import SimServer
from equipment_sims.spec import ToolSpec
from mes.opcua import model as m
from mes.opcua.model import ProcessingKind

TIMEOUT = 20.0  # generous: the machine is shared with other test suites

LITHO_BODY = {"parameters": [{"name": "dose", "value": 30.0, "unit": "mJ/cm2"}]}
ETCH_BODY = {
    "parameters": [
        {"name": "rf_power", "value": 650, "unit": "W"},
        {"name": "pressure", "value": 8.0, "unit": "mTorr"},
        {"name": "cl2_flow", "value": 120, "unit": "sccm"},
        {"name": "time", "value": 60, "unit": "s"},
    ]
}
FURNACE_BODY = {
    "parameters": [
        {"name": "temperature", "value": 900, "unit": "C"},
        {"name": "o2_flow", "value": 10, "unit": "slm"},
        {"name": "time", "value": 3600, "unit": "s"},
    ]
}
METRO_BODY = {"parameters": [{"name": "sites", "value": 5}, {"name": "target_cd", "value": 45}]}


def free_port() -> int:
    """A free port below the ephemeral range (which starts at 32768 here)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def job_order(job_id: str, recipe: str, *lots: tuple[str, list[int]]) -> str:
    return json.dumps(
        {
            "JobOrderID": job_id,
            "WorkMasterID": recipe,
            "Lots": [
                {"LotID": lot, "CarrierID": f"C-{lot}", "Slots": slots} for lot, slots in lots
            ],
        }
    )


async def wait_until(
    predicate: Callable[[], bool], what: str = "condition", *, within: float = TIMEOUT
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class ToolClient:
    """An asyncua client bound to one simulated tool, collecting its events."""

    def __init__(self, client: Client, tool_id: str) -> None:
        self.client = client
        self.tool_id = tool_id
        self.events: list[Any] = []
        self.ns: dict[str, int] = {}

    def event_notification(self, event: Any) -> None:
        self.events.append(event)

    def status_change_notification(self, status: Any) -> None:
        pass

    async def setup(self) -> None:
        for uri in (m.NS_DI, m.NS_MACHINERY, m.NS_MACHINERY_JOBS, m.NS_ISA95_JOBS, m.NS_FAB):
            self.ns[uri] = await self.client.get_namespace_index(uri)
        self.machine = await self.client.nodes.objects.get_child(
            [self.q(m.MACHINES), self.q((m.NS_FAB, self.tool_id))]
        )
        self.job_control = await self.child(
            m.BUILDING_BLOCKS, m.JOB_MANAGEMENT, m.JOB_ORDER_CONTROL
        )
        self.job_results = await self.child(
            m.BUILDING_BLOCKS, m.JOB_MANAGEMENT, m.JOB_ORDER_RESULTS
        )
        base = ["0:Types", "0:EventTypes", "0:BaseEventType"]
        alarm_base = [*base, "0:ConditionType", "0:AcknowledgeableConditionType"]
        root = self.client.nodes.root
        fab = self.ns[m.NS_FAB]
        types = [
            await root.get_child([*base, f"{fab}:{m.JOB_STATUS_EVENT}"]),
            await root.get_child([*base, f"{fab}:{m.SUBSTRATE_EVENT}"]),
            await root.get_child([*alarm_base, "0:AlarmConditionType", f"{fab}:{m.ALARM_EVENT}"]),
        ]
        self.job_type, self.substrate_type, self.alarm_type = (t.nodeid for t in types)
        self.subscription = await self.client.create_subscription(20, self)
        await self.subscription.subscribe_events(self.client.nodes.server, types, queuesize=0)

    def q(self, name: m.BrowseName) -> str:
        return f"{self.ns[name[0]]}:{name[1]}"

    async def child(self, *path: m.BrowseName) -> Node:
        return await self.machine.get_child([self.q(p) for p in path])

    async def read(self, *path: m.BrowseName | str) -> Any:
        names = [self.q(p) if isinstance(p, tuple) else f"{self.ns[m.NS_FAB]}:{p}" for p in path]
        return await (await self.machine.get_child(names)).read_value()

    async def call(self, folder: m.BrowseName, method: str, *args: Any) -> Any:
        node = await self.child(folder)
        return await node.call_method(f"{self.ns[folder[0]]}:{method}", *args)

    async def job(self, method: str, *args: Any) -> Any:
        ns = self.ns[m.NS_ISA95_JOBS]
        return await self.job_control.call_method(f"{ns}:{method}", *args)

    async def download(self, recipe_id: str, body: dict[str, Any]) -> None:
        checksum = m.recipe_checksum(body)
        await self.call(m.RECIPES, m.DOWNLOAD_RECIPE, recipe_id, json.dumps(body), checksum)

    def job_events(self, job_id: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if e.EventType == self.job_type and (job_id is None or e.JobOrderID == job_id)
        ]

    def substrate_events(self) -> list[Any]:
        return [e for e in self.events if e.EventType == self.substrate_type]

    def alarm_events(self) -> list[Any]:
        return [e for e in self.events if e.EventType == self.alarm_type]

    async def wait_job(self, job_id: str, *states: str) -> Any:
        await wait_until(
            lambda: any(e.JobState in states for e in self.job_events(job_id)),
            f"{job_id} in {states}",
        )
        return next(e for e in self.job_events(job_id) if e.JobState in states)


@pytest.fixture(scope="session")
def shelf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shelf")


SimFactory = Callable[..., Awaitable[SimServer]]


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PKI folder for the session (a tool's certificate is made once)."""
    return tmp_path_factory.mktemp("pki")


@pytest.fixture
async def make_sim(shelf_dir: Path) -> AsyncIterator[SimFactory]:
    started: list[SimServer] = []

    async def make(
        spec: ToolSpec, *, speed: float = 600.0, seed: int = 7, **options: Any
    ) -> SimServer:
        server = SimServer(
            spec,
            clock=SimClock(speed),
            port=free_port(),
            seed=seed,
            shelf_dir=shelf_dir,
            **options,
        )
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


ClientFactory = Callable[[SimServer], Awaitable[ToolClient]]


@pytest.fixture
async def connect() -> AsyncIterator[ClientFactory]:
    clients: list[Client] = []

    async def make(server: SimServer) -> ToolClient:
        client = Client(server.endpoint, timeout=TIMEOUT)
        await client.connect()
        clients.append(client)
        tc = ToolClient(client, server.spec.tool_id)
        await tc.setup()
        return tc

    yield make
    for client in clients:
        with contextlib.suppress(TimeoutError, ua.UaError, OSError, ConnectionError):
            await client.disconnect()


def litho(tool_id: str = "LI01") -> ToolSpec:
    return ToolSpec(tool_id, ProcessingKind.SINGLE_WAFER, "litho", tool_group="LITHO_193")


def etch(tool_id: str = "ET01", chambers: tuple[str, ...] = ("PM1", "PM2", "PM3")) -> ToolSpec:
    return ToolSpec(
        tool_id, ProcessingKind.CLUSTER, "etch", tool_group="ETCH_POLY", chambers=chambers
    )


def furnace(tool_id: str = "FU01") -> ToolSpec:
    return ToolSpec(
        tool_id, ProcessingKind.BATCH, "furnace", tool_group="FURN_OX", min_batch=2, max_batch=3
    )


def metrology(tool_id: str = "MC01") -> ToolSpec:
    return ToolSpec(tool_id, ProcessingKind.SINGLE_WAFER, "metrology", tool_group="METRO_CD")
