"""Serve a whole fab of simulated tools in one process: one OPC UA server per tool.

All servers share one ``SimClock`` and one shelf cache of the standard address space, and are
started a few at a time (each start costs CPU; all at once would starve the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType

from mes.opcua.model import ControlState

from .clock import SimClock
from .server import SimServer
from .spec import ToolSpec

DEFAULT_SHELF_DIR = Path.home() / ".cache" / "equipment_sims"


class SimFab:
    """Start with ``async with SimFab(specs, ...) as fab``; ``fab[tool_id]`` is a ``SimServer``."""

    def __init__(
        self,
        specs: list[ToolSpec],
        *,
        speed: float = 60.0,
        seed: int = 0,
        host: str = "127.0.0.1",
        shelf_dir: Path | None = DEFAULT_SHELF_DIR,
        clock: SimClock | None = None,
        control_state: ControlState = ControlState.ONLINE_REMOTE,
        concurrency: int = 4,
    ) -> None:
        self.clock = clock or SimClock(speed)
        self.servers = {
            spec.tool_id: SimServer(
                spec,
                clock=self.clock,
                seed=seed,
                host=host,
                shelf_dir=shelf_dir,
                control_state=control_state,
            )
            for spec in specs
        }
        self._concurrency = concurrency

    def __getitem__(self, tool_id: str) -> SimServer:
        return self.servers[tool_id]

    async def start(self) -> None:
        gate = asyncio.Semaphore(self._concurrency)

        async def start_one(server: SimServer) -> None:
            async with gate:
                await server.start()

        try:
            await asyncio.gather(*(start_one(s) for s in self.servers.values()))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                await server.stop()

    async def __aenter__(self) -> SimFab:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
