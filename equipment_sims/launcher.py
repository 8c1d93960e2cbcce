"""Serve a whole fab of simulated tools in one process: one OPC UA server per tool.

All servers share one ``SimClock`` and one shelf cache of the standard address space, and are
started a few at a time (each start costs CPU; all at once would starve the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from types import TracebackType
from typing import Any

from mes.opcua.model import ControlState

from .clock import SimClock
from .faults import KINDS as FAULT_KINDS
from .pki import DEFAULT_PKI_DIR, Security, user_cache_dir
from .server import SimServer
from .spec import ToolSpec

DEFAULT_SHELF_DIR = user_cache_dir()


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
        pki_dir: Path | None = DEFAULT_PKI_DIR,
        security: Security | None = None,
        state_dir: Path | None = None,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = FAULT_KINDS,
        process_value_period_s: float = 0.5,
        journal: Path | None = None,
    ) -> None:
        """``pki_dir`` None: no certificates, SecurityPolicy None only. ``state_dir``: each
        tool persists its state to ``<state_dir>/<tool-id>.json`` and starts from it.
        ``journal``: every job state change of every tool, appended as a JSON line (what the
        tools did, for a test to hold the MES to)."""
        self.clock = clock or SimClock(speed)
        self._journal = journal.open("a", encoding="utf-8") if journal is not None else None
        self.servers = {
            spec.tool_id: SimServer(
                spec,
                clock=self.clock,
                seed=seed,
                host=host,
                shelf_dir=shelf_dir,
                control_state=control_state,
                pki_dir=pki_dir,
                security=security,
                state_file=state_dir / f"{spec.tool_id}.json" if state_dir else None,
                restore=state_dir is not None,
                fault_rate=fault_rate,
                fault_kinds=fault_kinds,
                process_value_period_s=process_value_period_s,
                journal=self._write_journal if journal is not None else None,
            )
            for spec in specs
        }
        self._concurrency = concurrency

    def _write_journal(self, record: dict[str, Any]) -> None:
        assert self._journal is not None
        # One line per write and flushed: a reader sees whole records, also if we are killed.
        self._journal.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._journal.flush()

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
        if self._journal is not None:
            self._journal.close()
            self._journal = None

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
