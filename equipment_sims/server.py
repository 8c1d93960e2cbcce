"""One simulated tool behind one OPC UA server (asyncua), and the fault-injection API.

The server owns a ``Tool`` (the pure state machine) and a ``SimClock``. A ticker advances the
tool to the clock's time, publishes what changed (variables, job/substrate/alarm events) and,
less often, noisy process values. Host commands arrive as OPC UA methods; a refused command
returns a Bad status code (``model.REFUSAL_STATUS``), never an exception.

``SimServer`` keeps the life cycle, the ticking, the commands and the persisted state; it is
assembled from ``address_space`` (the nodes), ``publishing`` (values and events),
``host_methods`` (the OPC UA methods) and ``fault_injection`` (faults by name, random faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.server.binary_server_asyncio import BinaryServer

from mes.opcua import model as m
from mes.opcua.model import ChamberState, ControlState

from .address_space import build_address_space
from .clock import SimClock
from .fault_injection import FaultInjection
from .faults import KINDS as FAULT_KINDS
from .faults import FaultSchedule
from .host_methods import HostMethods
from .pki import Pki, Security
from .publishing import Publisher
from .records import AlarmEvent, Refused
from .shelf import prepare_shelf
from .spec import ToolSpec
from .state import dump_tool, read_state, restore_tool, write_state
from .tool import Tool

log = logging.getLogger(__name__)


def _status(reason: str) -> ua.StatusCode:
    return ua.StatusCode(getattr(ua.StatusCodes, m.REFUSAL_STATUS[reason]))


class SimServer(FaultInjection):
    """A simulated tool served at ``opc.tcp://<host>:<port>/<tool-id>``."""

    def __init__(
        self,
        spec: ToolSpec,
        *,
        clock: SimClock,
        port: int | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        shelf_dir: Path | None = None,
        tick_s: float = 0.05,
        process_value_period_s: float = 0.5,
        control_state: ControlState = ControlState.ONLINE_REMOTE,
        pki_dir: Path | None = None,
        security: Security | None = None,
        state_file: Path | None = None,
        restore: bool = False,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = FAULT_KINDS,
        journal: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``pki_dir``: certificates and trust list (see ``pki``); ``security`` defaults to
        OPTIONAL with a ``pki_dir`` and NONE without. ``state_file``: where the tool persists
        its state (default: a scratch file removed at ``stop``); ``restore``: start from it.
        ``fault_rate``: random faults per simulated hour of each of ``fault_kinds``.
        ``journal``: called with every job state change the tool makes (see ``Publisher``)."""
        self.spec = spec
        self.clock = clock
        self.port = port if port is not None else spec.port
        self.host = host
        self.seed = seed
        self.tool = Tool(spec, seed=seed, control_state=control_state)
        self.pki = Pki(pki_dir) if pki_dir is not None else None
        self.security = security or (Security.OPTIONAL if self.pki else Security.NONE)
        if self.security is not Security.NONE and self.pki is None:
            raise ValueError("security needs a PKI folder")
        self.app_uri = f"urn:fab-mes:sim:{spec.tool_id}"
        self.state_file = state_file
        self._scratch_state: Path | None = None
        self._restore = restore
        self._saved_revision = -1
        self.reply_delay = 0.0  # real seconds every method reply waits (fault: slow_replies)
        self.lost_replies = 0  # job commands carried out but answered BadTimeout (lose_replies)
        self.faults = FaultSchedule(
            fault_rate, seed=seed, tool_id=spec.tool_id, kinds=fault_kinds, start=clock.now()
        )
        self.fault_log: list[tuple[float, str]] = []  # random faults so far (sim time, kind)
        self._recoveries: list[tuple[float, str, Callable[[], Awaitable[None]]]] = []
        self._fault_task: asyncio.Task[None] | None = None
        self._restarting = False
        self.restarts = 0
        self._server_stopped = False
        self.shelf_dir = shelf_dir
        self.tick_s = tick_s
        self.process_value_period_s = process_value_period_s
        self.server = Server()
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._restarter: asyncio.Task[None] | None = None
        self.publisher = Publisher(spec, clock, journal)
        self._methods = HostMethods(self)
        self._silent_until: float | None = None  # real monotonic time; inf = until told
        self._last_pv = -1.0
        self.connected = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/{self.spec.tool_id}"

    @property
    def certificate(self) -> Path | None:
        """The server certificate (DER) a client pins, when security is on."""
        return self.pki.server_files(self.spec.tool_id)[0] if self.pki else None

    @property
    def _published(self) -> dict[str, Any]:
        """The last value written to each variable, by path."""
        return self.publisher.published

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self.state_file is None:
            self._scratch_state = Path(tempfile.mkdtemp(prefix="sim-state-")) / "state.json"
        if self._restore:
            self._load_state()
        await self._start_server()
        if self.faults.rate_per_s > 0:
            self._fault_task = asyncio.create_task(
                self._fault_loop(), name=f"faults-{self.spec.tool_id}"
            )

    async def _start_server(self) -> None:
        self._server_stopped = False
        shelf = await prepare_shelf(self.shelf_dir) if self.shelf_dir else None
        server = self.server
        server.iserver.bind_condition_methods = True  # ConditionRefresh
        await server.init(shelf_file=shelf)
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"Simulated tool {self.spec.tool_id}")
        await server.set_application_uri(self.app_uri)
        if self.pki is not None and self.security is not Security.NONE:
            cert, key = await asyncio.to_thread(
                self.pki.server_certificate, self.spec.tool_id, self.app_uri, self.host
            )
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            server.set_certificate_validator(self.pki.validator(self._channel_policy))
        server.set_security_policy(self.security.policies())
        space = await build_address_space(server, self.spec, self.tool, self._methods)
        self.publisher.attach(server, space)
        self.tool.advance(self.clock.now())
        await self.publisher.publish_state(self.tool)
        await server.start()
        self.connected = True
        self._ticker = asyncio.create_task(self._tick_loop(), name=f"tick-{self.spec.tool_id}")

    async def stop(self) -> None:
        tasks = [self._fault_task, *self._background]
        for task in tasks:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for task in tasks:
            if task is not None and task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._fault_task = None
        await self._stop_server()
        self._persist()
        if self._scratch_state is not None:
            shutil.rmtree(self._scratch_state.parent, ignore_errors=True)
            self._scratch_state = None

    def _channel_policy(self) -> str | None:
        """The security policy URI of the connection whose request is being served (asyncua
        serves each connection's requests in a task of its own), or None if unknown."""
        bserver = self.server.bserver
        task = asyncio.current_task()
        for protocol in bserver.clients if bserver is not None else []:
            if getattr(protocol, "_task", None) is task and protocol.processor is not None:
                uri: str = protocol.processor._connection.security_policy.URI
                return uri
        return None

    async def _stop_server(self) -> None:
        if self._server_stopped:
            return
        self._server_stopped = True
        for task in (self._ticker, self._restarter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ticker = self._restarter = None
        # asyncua's clock task sleeps a second between updates and stop() waits it out.
        time_task = self.server.iserver.time_task
        if time_task is not None:
            time_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await time_task
            self.server.iserver.time_task = None
        if self.connected:
            await self.server.stop()
        else:
            await self.server.iserver.stop()
        self.connected = False

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the faults that take the server down ------------------------------------------------
    async def drop_connection(self, seconds: float = 5.0) -> None:
        """Close the listener and every connection; listen again after ``seconds`` (real).

        Sessions and subscriptions survive inside the server, as after a network outage.
        """
        if not self.connected:
            return
        self.connected = False
        if self.server.bserver is not None:
            await self.server.bserver.stop()
        if seconds >= 0:
            self._restarter = asyncio.create_task(self._restart_after(seconds))

    async def _restart_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.restore_connection()

    async def restore_connection(self) -> None:
        if self.connected:
            return
        srv = self.server
        bserver = BinaryServer(srv.iserver, self.host, self.port, srv.limits)
        bserver.set_policies(srv._policies)
        await bserver.start()
        srv.bserver = bserver
        self.connected = True

    async def restart(self, down_s: float = 1.0) -> None:
        """The tool's server restarts: sessions and subscriptions are lost, and after ``down_s``
        real seconds a new server listens on the same port with the state read back from the
        state file (recipes, counters, jobs and their progress; alarms are raised again)."""
        if self._restarting:
            return
        self._restarting = True
        try:
            async with self._lock:
                self.tool.advance(self.clock.now())
                self._persist(force=True)
            await self._stop_server()
            await asyncio.sleep(down_s)
            self.server = Server()
            self._silent_until = None
            self._load_state()
            await self._start_server()
            self.restarts += 1
        finally:
            self._restarting = False

    # --- ticking and publishing -------------------------------------------------------------
    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with self._lock:
                    self.tool.advance(self.clock.now())
                    pv_due = loop.time() - self._last_pv >= self.process_value_period_s
                    if not self._silent(loop.time()):
                        await self.publisher.publish(self.tool, process_values=pv_due)
                        if pv_due:
                            self._last_pv = loop.time()
                    self._persist()
            except Exception:  # keep the tool alive; a bug shows in the log, not as a dead sim
                log.exception("%s: tick failed", self.spec.tool_id)
            await asyncio.sleep(self.tick_s)

    def _silent(self, now_real: float) -> bool:
        if self._silent_until is None:
            return False
        if now_real < self._silent_until:
            return True
        self._silent_until = None
        return False

    async def _sync_and_publish(self) -> None:
        """After a command: publish its effects at once (unless the tool is silent)."""
        self.tool.advance(self.clock.now())
        if not self._silent(asyncio.get_running_loop().time()):
            await self.publisher.publish(self.tool, process_values=False)

    # --- commands --------------------------------------------------------------------------
    async def command(self, action: Callable[[], Any], *, slow: bool = True) -> Any:
        """Run a host command (``slow``: after the reply delay) or a fault on the tool and
        publish its effects; a refusal comes back as its Bad status code."""
        if slow and self.reply_delay > 0:
            await asyncio.sleep(self.reply_delay)
        async with self._lock:
            self.tool.advance(self.clock.now())
            try:
                result = action()
            except Refused as exc:
                log.info("%s refused: %s", self.spec.tool_id, exc)
                await self._sync_and_publish()
                return _status(exc.reason)
            await self._sync_and_publish()
            self._persist()
            return result

    # --- persisted state -------------------------------------------------------------------
    @property
    def state_path(self) -> Path | None:
        return self.state_file or self._scratch_state

    def _persist(self, *, force: bool = False) -> None:
        """Write the state file when the tool changed since the last write."""
        path = self.state_path
        if path is None or (not force and self.tool.revision == self._saved_revision):
            return
        data = dump_tool(self.tool, self.clock.start) | {"sequence": self.publisher.seq}
        write_state(path, data)
        self._saved_revision = self.tool.revision

    def _load_state(self) -> None:
        path = self.state_path
        data = read_state(path) if path is not None else None
        if data is None:
            return
        tool = Tool(self.spec, seed=self.seed, control_state=self.tool.control_state)
        restore_tool(tool, data, self.clock.start)
        # Faults in force survive a restart.
        tool.measurement.drift_per_wafer = self.tool.measurement.drift_per_wafer
        tool.measurement.drift_from = self.tool.measurement.drift_from
        tool.measurement.offset = self.tool.measurement.offset
        for alarm in tool.alarms.values():  # publish them again (new condition nodes)
            tool.events.append(AlarmEvent(tool.now, alarm))
        self.tool = tool
        self.publisher.seq = int(data.get("sequence", 0))
        self._saved_revision = tool.revision
        log.info("%s: state restored from %s", self.spec.tool_id, path)

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background until it ends or ``stop``; a failure is logged."""

        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s: fault failed", self.spec.tool_id)

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def chamber_states(self) -> dict[str, ChamberState]:
        return {name: s.state for name, s in self.tool.stations.items()}
