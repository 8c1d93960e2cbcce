"""One simulated tool behind one OPC UA server (asyncua), and the fault-injection API.

The server owns a ``Tool`` (the pure state machine) and a ``SimClock``. A ticker advances the
tool to the clock's time, publishes what changed (variables, job/substrate/alarm events) and,
less often, noisy process values. Host commands arrive as OPC UA methods; a refused command
returns a Bad status code (``model.REFUSAL_STATUS``), never an exception.

Events are emitted from the Server object (the only emitter asyncua notifies reliably) with
``SourceNode`` = the machine object. Job and substrate events carry a per-tool ``Sequence``
so a client can spot duplicates and replays (which the faults below produce on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import shutil
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncua
from asyncua import Node, Server, ua
from asyncua.server.binary_server_asyncio import BinaryServer
from asyncua.server.event_generator import EventGenerator

from mes.opcua import model as m
from mes.opcua.model import ChamberState, ControlState, ProcessingKind

from .clock import SimClock
from .faults import KINDS as FAULT_KINDS
from .faults import FaultSchedule
from .pki import Pki, Security
from .process import sensor_level, sensor_names
from .spec import ToolSpec
from .state import dump_tool, read_state, restore_tool, write_state
from .tool import Alarm, AlarmEvent, ChamberEvent, JobEvent, Refused, SubstrateEvent, Tool

log = logging.getLogger(__name__)

# UNECE common codes (as OPC UA EUInformation.UnitId) of the process value units.
_UNECE = {"°C": "CEL", "Pa": "PAL", "W": "WTT"}
_EU_RANGE = {
    "ChamberTemperature": (0.0, 1200.0),
    "ChamberPressure": (0.0, 110_000.0),
    "RfForwardPower": (0.0, 40_000.0),
    "GasFlow_1": (0.0, 5000.0),
    "GasFlow_2": (0.0, 5000.0),
}
UNITS_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

Handler = Callable[..., Awaitable[Any]]


def _unit_id(code: str) -> int:
    value = 0
    for ch in code:
        value = (value << 8) | ord(ch)
    return value


def _arg(name: str, vtype: ua.VariantType, *, array: bool = False) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = ua.NodeId(vtype.value)
    arg.ValueRank = 1 if array else -1
    if array:
        arg.ArrayDimensions = [0]
    return arg


_S = ua.VariantType.String
_RETURN = [_arg("ReturnStatus", ua.VariantType.UInt64)]


def _status(reason: str) -> ua.StatusCode:
    return ua.StatusCode(getattr(ua.StatusCodes, m.REFUSAL_STATUS[reason]))


_shelf_lock = asyncio.Lock()


async def prepare_shelf(shelf_dir: Path) -> Path | None:
    """A cache of the standard address space: ``Server.init`` drops from ~2.5 s to ~0.15 s.

    Keyed by asyncua version; built once in a scratch folder and renamed into place, so
    concurrent processes never read a half-written cache. With only ``dbm.dumb`` available,
    asyncua looks for a bare file that dumb never writes, so one is created beside it.
    """
    final = shelf_dir / f"asyncua-{asyncua.__version__}"
    shelf = final / "aspace"
    async with _shelf_lock:
        if _shelf_ready(shelf):
            return shelf
        scratch = _scratch_dir(shelf_dir)
        builder = Server()
        await builder.init(shelf_file=scratch / "aspace")
        _install_shelf(scratch, final)
        return shelf if _shelf_ready(shelf) else None


def _shelf_ready(shelf: Path) -> bool:
    return shelf.exists() or shelf.with_suffix(".db").exists()


def _scratch_dir(shelf_dir: Path) -> Path:
    shelf_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=shelf_dir, prefix="build-"))


def _install_shelf(scratch: Path, final: Path) -> None:
    if (scratch / "aspace.dat").exists():  # dbm.dumb
        (scratch / "aspace").touch(exist_ok=True)
    try:
        os.rename(scratch, final)
    except OSError:  # another process won the race: use its cache
        shutil.rmtree(scratch, ignore_errors=True)


class SimServer:
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
    ) -> None:
        """``pki_dir``: certificates and trust list (see ``pki``); ``security`` defaults to
        OPTIONAL with a ``pki_dir`` and NONE without. ``state_file``: where the tool persists
        its state (default: a scratch file removed at ``stop``); ``restore``: start from it.
        ``fault_rate``: random faults per simulated hour of each of ``fault_kinds``."""
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
        self._nodes: dict[str, Node] = {}
        self._published: dict[str, Any] = {}
        self._seq = 0
        self._job_history: deque[dict[str, Any]] = deque(maxlen=50)
        self._alarm_nodes: dict[str, tuple[Node, EventGenerator]] = {}
        self._alarm_by_node: dict[ua.NodeId, str] = {}
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
        await self._build()
        self.tool.advance(self.clock.now())
        await self._publish_state()
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

    # --- address space --------------------------------------------------------------------
    async def _build(self) -> None:
        srv = self.server
        ns = {
            uri: await srv.register_namespace(uri)
            for uri in (m.NS_DI, m.NS_MACHINERY, m.NS_MACHINERY_JOBS, m.NS_ISA95_JOBS, m.NS_FAB)
        }
        fab = self._fab = ns[m.NS_FAB]

        def qn(name: m.BrowseName) -> ua.QualifiedName:
            return ua.QualifiedName(name[1], ns[name[0]])

        def nid(path: str) -> ua.NodeId:
            return ua.NodeId(path, fab)

        async def folder(parent: Node, path: str, name: m.BrowseName) -> Node:
            return await parent.add_object(nid(path), qn(name))

        async def var(
            parent: Node, path: str, name: str, value: Any, vtype: ua.VariantType, ns_uri: str
        ) -> Node:
            node = await parent.add_variable(
                nid(path), ua.QualifiedName(name, ns[ns_uri]), value, varianttype=vtype
            )
            self._nodes[path] = node
            self._published[path] = value
            return node

        async def method(
            parent: Node,
            path: str,
            name: str,
            ns_uri: str,
            handler: Handler,
            inargs: list[ua.Argument],
            outargs: list[ua.Argument] = _RETURN,
        ) -> None:
            await parent.add_method(
                nid(path), ua.QualifiedName(name, ns[ns_uri]), handler, inargs, outargs
            )

        tool = self.tool
        spec = self.spec
        machines = await srv.nodes.objects.add_folder(nid("Machines"), qn(m.MACHINES))
        machine = self._machine = await machines.add_object(
            nid("Machine"), ua.QualifiedName(spec.tool_id, fab)
        )

        ident = await folder(machine, "Identification", m.IDENTIFICATION)
        values = {
            "Manufacturer": spec.manufacturer,
            "Model": spec.model,
            "SerialNumber": f"SIM-{spec.tool_id}",
            "ProductInstanceUri": f"urn:fab-mes:sim:{spec.tool_id}",
            "SoftwareRevision": f"equipment_sims/asyncua-{asyncua.__version__}",
            "YearOfConstruction": "2026",
            "DeviceClass": f"{spec.family}/{spec.kind.value}",
            "Location": spec.location,
        }
        for prop in m.IDENTIFICATION_PROPERTIES:
            await ident.add_property(
                nid(f"Identification/{prop}"), ua.QualifiedName(prop, ns[m.NS_DI]), values[prop]
            )

        blocks = await folder(machine, "BuildingBlocks", m.BUILDING_BLOCKS)
        for path, bname, value in (
            ("ItemState", m.ITEM_STATE, tool.item_state.value),
            ("OperationMode", m.OPERATION_MODE, tool.operation_mode.value),
        ):
            sm = await folder(blocks, path, bname)
            await var(sm, f"{path}/CurrentState", m.CURRENT_STATE[1], value, _S, m.NS_MACHINERY)

        jm = await folder(blocks, "JobManagement", m.JOB_MANAGEMENT)
        control = await folder(jm, "JobOrderControl", m.JOB_ORDER_CONTROL)
        job_ns = m.NS_ISA95_JOBS
        for name in m.JOB_METHODS:
            if name in ("Store", "StoreAndStart"):
                inargs = [_arg("JobOrder", _S), _arg("Comment", _S)]
            else:
                inargs = [_arg("JobOrderID", _S), _arg("Comment", _S)]
            await method(
                control, f"JobOrderControl/{name}", name, job_ns, self._job_handler(name), inargs
            )
        await var(control, "JobOrderList", m.JOB_ORDER_LIST, "[]", _S, job_ns)
        await var(control, "WorkMaster", m.WORK_MASTER, [], _S, job_ns)
        await var(control, "EquipmentID", m.EQUIPMENT_ID, spec.tool_id, _S, job_ns)
        await var(
            control, "MaxJobs", m.MAX_DOWNLOADABLE_JOB_ORDERS, 10, ua.VariantType.UInt16, job_ns
        )
        results = await folder(jm, "JobOrderResults", m.JOB_ORDER_RESULTS)
        await method(
            results,
            "JobOrderResults/Request",
            m.REQUEST_JOB_RESPONSE,
            job_ns,
            self._request_job_response,
            [_arg("JobOrderID", _S)],
            [_arg("JobResponse", _S), _arg("JobState", _S)],
        )
        await var(results, "JobOrderResponseList", m.JOB_ORDER_RESPONSE_LIST, "[]", _S, job_ns)

        recipes = await folder(machine, "Recipes", m.RECIPES)
        await var(recipes, "Recipes/RecipeList", m.RECIPE_LIST, [], _S, m.NS_FAB)
        await var(recipes, "Recipes/SelectedRecipe", m.SELECTED_RECIPE, "", _S, m.NS_FAB)
        await var(recipes, "Recipes/Checksums", m.RECIPE_CHECKSUMS, "{}", _S, m.NS_FAB)
        rid = _arg("RecipeId", _S)
        await method(
            recipes,
            "Recipes/Download",
            m.DOWNLOAD_RECIPE,
            m.NS_FAB,
            self._download_recipe,
            [rid, _arg("Body", _S), _arg("Checksum", _S)],
        )
        await method(recipes, "Recipes/Select", m.SELECT_RECIPE, m.NS_FAB, self._select, [rid])
        await method(recipes, "Recipes/Delete", m.DELETE_RECIPE, m.NS_FAB, self._delete, [rid])
        await method(
            recipes,
            "Recipes/GetChecksum",
            m.GET_RECIPE_CHECKSUM,
            m.NS_FAB,
            self._get_checksum,
            [rid],
            [_arg("Checksum", _S)],
        )

        ctl = await folder(machine, "Control", m.CONTROL)
        await var(ctl, "Control/State", m.CONTROL_STATE, tool.control_state.value, _S, m.NS_FAB)
        for name, state in (
            (m.GO_ONLINE_REMOTE, ControlState.ONLINE_REMOTE),
            (m.GO_ONLINE_LOCAL, ControlState.ONLINE_LOCAL),
            (m.GO_OFFLINE, ControlState.OFFLINE),
        ):
            await method(ctl, f"Control/{name}", name, m.NS_FAB, self._control_handler(state), [])

        counters = await folder(machine, "Counters", m.COUNTERS)
        await var(
            counters,
            "Counters/Wafers",
            m.WAFERS_PROCESSED_TOTAL,
            0,
            ua.VariantType.UInt32,
            m.NS_FAB,
        )
        await var(counters, "Counters/Job", m.CURRENT_JOB_ORDER_ID, "", _S, m.NS_FAB)
        await var(counters, "Counters/Lot", m.CURRENT_LOT_ID, "", _S, m.NS_FAB)
        await var(counters, "Counters/Substrate", m.CURRENT_SUBSTRATE_ID, "", _S, m.NS_FAB)
        await var(counters, "Counters/SlotMap", m.SLOT_MAP, tool.slot_map(), _S, m.NS_FAB)

        if spec.kind is ProcessingKind.CLUSTER:
            chambers = await folder(machine, "Chambers", m.CHAMBERS)
            for name in spec.chambers:
                ch = await chambers.add_object(nid(f"Chambers/{name}"), ua.QualifiedName(name, fab))
                await var(ch, f"Chambers/{name}/State", m.CHAMBER_STATE, "Idle", _S, m.NS_FAB)
                await var(ch, f"Chambers/{name}/Substrate", m.CHAMBER_SUBSTRATE, "", _S, m.NS_FAB)

        pd = await folder(machine, "ProcessData", m.PROCESS_DATA)
        for name, unit in m.PROCESS_VALUES.items():
            node = await var(pd, f"ProcessData/{name}", name, 0.0, ua.VariantType.Double, m.NS_FAB)
            eu = ua.EUInformation(
                NamespaceUri=UNITS_NAMESPACE,
                UnitId=_unit_id(_UNECE[unit]) if unit in _UNECE else -1,
                DisplayName=ua.LocalizedText(unit),
                Description=ua.LocalizedText(unit),
            )
            await node.add_property(nid(f"ProcessData/{name}/EU"), "0:EngineeringUnits", eu)
            low, high = _EU_RANGE[name]
            await node.add_property(
                nid(f"ProcessData/{name}/EURange"), "0:EURange", ua.Range(Low=low, High=high)
            )
        for index, name in enumerate(sensor_names(spec.sensors)):
            node = await var(pd, f"ProcessData/{name}", name, 0.0, ua.VariantType.Double, m.NS_FAB)
            level = sensor_level(index)
            await node.add_property(
                nid(f"ProcessData/{name}/EURange"), "0:EURange", ua.Range(Low=0.0, High=4 * level)
            )
        await var(pd, "ProcessData/StepNumber", m.STEP_NUMBER, 0, ua.VariantType.UInt32, m.NS_FAB)
        await var(pd, "ProcessData/StepName", m.STEP_NAME, "", _S, m.NS_FAB)
        await var(
            pd,
            "ProcessData/LastMeasurement",
            m.LAST_MEASUREMENT,
            [],
            ua.VariantType.Double,
            m.NS_FAB,
        )

        self._alarms_folder = await folder(machine, "Alarms", m.ALARMS)

        sim = await folder(machine, "Simulation", m.SIMULATION)
        await method(
            sim,
            "Simulation/InjectFault",
            m.INJECT_FAULT,
            m.NS_FAB,
            self._inject_fault_method,
            [_arg("Fault", _S), _arg("Arguments", _S)],
        )

        # Event types and generators.
        self._job_gen = await self._event_generator(
            m.JOB_STATUS_EVENT,
            [
                ("JobOrderID", _S),
                ("JobState", _S),
                ("JobSubstate", _S),
                ("JobResponse", _S),
                (m.EVENT_SEQUENCE, ua.VariantType.UInt32),
            ],
        )
        self._substrate_gen = await self._event_generator(
            m.SUBSTRATE_EVENT,
            [
                ("JobOrderID", _S),
                ("LotID", _S),
                ("SubstrateID", _S),
                ("Slot", ua.VariantType.UInt32),
                ("Chamber", _S),
                ("SubstrateState", _S),
                ("Measurements", ua.VariantType.Double),
                (m.EVENT_SEQUENCE, ua.VariantType.UInt32),
            ],
        )
        self._alarm_type = await srv.create_custom_event_type(
            fab,
            m.ALARM_EVENT,
            ua.ObjectIds.AlarmConditionType,
            [("Breaking", ua.VariantType.Boolean)],
        )
        srv.link_method(
            srv.get_node(ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)),
            self._acknowledge_method,
        )

    async def _event_generator(self, name: str, props: list[tuple[str, ua.VariantType]]) -> Any:
        etype = await self.server.create_custom_event_type(self._fab, name, properties=props)
        gen = await self.server.get_event_generator(etype)
        gen.event.SourceNode = self._machine.nodeid
        gen.event.SourceName = self.spec.tool_id
        return gen

    # --- ticking and publishing -------------------------------------------------------------
    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with self._lock:
                    self.tool.advance(self.clock.now())
                    pv_due = loop.time() - self._last_pv >= self.process_value_period_s
                    if not self._silent(loop.time()):
                        await self._publish(process_values=pv_due)
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
            await self._publish(process_values=False)

    async def _publish(self, *, process_values: bool) -> None:
        events = self.tool.drain_events()  # while silent they wait in the tool
        await self._publish_state()
        for event in events:
            await self._publish_event(event)
        if process_values:
            step, step_name, values = self.tool.process_values()
            at = self.clock.datetime()
            for name, value in values.items():
                await self._write(
                    f"ProcessData/{name}", value, ua.VariantType.Double, at, force=True
                )
            await self._write("ProcessData/StepNumber", step, ua.VariantType.UInt32, at)
            await self._write("ProcessData/StepName", step_name, _S, at)

    async def _publish_state(self) -> None:
        tool = self.tool
        at = self.clock.datetime()
        job = tool.current_job
        wafer = tool.current_wafer()
        jobs = [
            {
                "JobOrderID": j.job_order_id,
                "WorkMasterID": j.recipe_id,
                "JobState": j.state.value,
                "JobSubstate": j.substate.value,
            }
            for j in tool.jobs.values()
        ]
        checksums = {rid: tool.reported_checksum(rid) for rid in tool.recipes}
        u32 = ua.VariantType.UInt32
        values: list[tuple[str, Any, ua.VariantType]] = [
            ("ItemState/CurrentState", tool.item_state.value, _S),
            ("OperationMode/CurrentState", tool.operation_mode.value, _S),
            ("JobOrderList", json.dumps(jobs), _S),
            ("WorkMaster", sorted(tool.recipes), _S),
            (
                "JobOrderResponseList",
                "[" + ",".join(self._response_json(j.response()) for j in tool.jobs.values()) + "]",
                _S,
            ),
            ("Recipes/RecipeList", sorted(tool.recipes), _S),
            ("Recipes/SelectedRecipe", tool.selected_recipe, _S),
            ("Recipes/Checksums", json.dumps(checksums, sort_keys=True), _S),
            ("Control/State", tool.control_state.value, _S),
            ("Counters/Wafers", tool.wafers_processed_total, u32),
            ("Counters/Job", job.job_order_id if job else "", _S),
            ("Counters/Lot", wafer.lot_id if wafer else "", _S),
            ("Counters/Substrate", wafer.substrate_id if wafer else "", _S),
            ("Counters/SlotMap", tool.slot_map(), _S),
        ]
        if self.spec.kind is ProcessingKind.CLUSTER:
            for name, station in tool.stations.items():
                sub = station.wafers[0].substrate_id if station.wafers else ""
                values.append((f"Chambers/{name}/State", station.state.value, _S))
                values.append((f"Chambers/{name}/Substrate", sub, _S))
        for path, value, vtype in values:
            await self._write(path, value, vtype, at)

    async def _write(
        self, path: str, value: Any, vtype: ua.VariantType, at: datetime, *, force: bool = False
    ) -> None:
        if not force and self._published.get(path) == value:
            return
        self._published[path] = value
        dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=at, ServerTimestamp=at)
        await self.server.write_attribute_value(self._nodes[path].nodeid, dv)

    def _response_json(self, response: dict[str, Any]) -> str:
        """A job response with its simulated-second times as ISO 8601 timestamps."""
        times = {
            key: self.clock.datetime(response[key]).isoformat()
            for key in ("StartTime", "EndTime")
            if response.get(key) is not None
        }
        return json.dumps(response | times)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def _publish_event(self, event: Any) -> None:
        at = self.clock.datetime(event.at)
        if isinstance(event, JobEvent):
            fields = {
                "JobOrderID": event.job_order_id,
                "JobState": event.state.value,
                "JobSubstate": event.substate.value,
                "JobResponse": self._response_json(event.response),
                m.EVENT_SEQUENCE: self._next_seq(),
            }
            self._job_history.append({"at": at, "fields": fields})
            await self._trigger(self._job_gen, fields, at, f"{event.job_order_id} {event.state}")
        elif isinstance(event, SubstrateEvent):
            w = event.wafer
            if w["Measurements"]:
                await self._write(
                    "ProcessData/LastMeasurement", w["Measurements"], ua.VariantType.Double, at
                )
            fields = {
                "JobOrderID": event.job_order_id,
                "LotID": w["LotID"],
                "SubstrateID": w["SubstrateID"],
                "Slot": w["Slot"],
                "Chamber": w["Chamber"],
                "SubstrateState": w["State"],
                "Measurements": w["Measurements"],
                m.EVENT_SEQUENCE: self._next_seq(),
            }
            await self._trigger(self._substrate_gen, fields, at, f"{w['SubstrateID']} {w['State']}")
        elif isinstance(event, AlarmEvent):
            await self._publish_alarm(event.alarm, at)
        elif isinstance(event, ChamberEvent):
            pass  # published as Chambers/<name>/State by _publish_state

    async def _trigger(
        self, gen: EventGenerator, fields: dict[str, Any], at: datetime, message: str
    ) -> None:
        for name, value in fields.items():
            setattr(gen.event, name, value)
        await gen.trigger(time_attr=at, message=message)

    async def _publish_alarm(self, alarm: Alarm, at: datetime) -> None:
        if alarm.alarm_id not in self._alarm_nodes:
            path = f"Alarms/{alarm.alarm_id}"
            node = await self._alarms_folder.add_object(
                ua.NodeId(path, self._fab), ua.QualifiedName(alarm.alarm_id, self._fab)
            )
            gen = await self.server.get_event_generator(self._alarm_type)
            self._alarm_nodes[alarm.alarm_id] = (node, gen)
            self._alarm_by_node[node.nodeid] = alarm.alarm_id
        node, gen = self._alarm_nodes[alarm.alarm_id]
        ev = gen.event
        text = {True: "Active", False: "Inactive"}
        fields: dict[str, Any] = {
            "NodeId": node.nodeid,
            "SourceNode": self._machine.nodeid,
            "SourceName": self.spec.tool_id,
            "ConditionName": alarm.alarm_id,
            "Severity": alarm.severity,
            "Retain": alarm.retain,
            "Breaking": alarm.breaking,
            "EnabledState": ua.LocalizedText("Enabled"),
            "EnabledState/Id": True,
            "ActiveState": ua.LocalizedText(text[alarm.active]),
            "ActiveState/Id": alarm.active,
            "AckedState": ua.LocalizedText("Acknowledged" if alarm.acked else "Unacknowledged"),
            "AckedState/Id": alarm.acked,
        }
        for name, value in fields.items():
            setattr(ev, name, value)
        await gen.trigger(time_attr=at, message=alarm.text)

    # --- method handlers (asyncua calls them with the parent NodeId and Variants) ----------
    async def _command(self, action: Callable[[], Any], *, slow: bool = True) -> Any:
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
        data = dump_tool(self.tool, self.clock.start) | {"sequence": self._seq}
        write_state(path, data)
        self._saved_revision = self.tool.revision

    def _load_state(self) -> None:
        path = self.state_path
        data = read_state(path) if path is not None else None
        if data is None:
            return
        tool = Tool(self.spec, seed=self.seed, control_state=self.tool.control_state)
        restore_tool(tool, data, self.clock.start)
        tool.measurement.drift_per_wafer = self.tool.measurement.drift_per_wafer
        for alarm in tool.alarms.values():  # publish them again (new condition nodes)
            tool.events.append(AlarmEvent(tool.now, alarm))
        self.tool = tool
        self._seq = int(data.get("sequence", 0))
        self._saved_revision = tool.revision
        log.info("%s: state restored from %s", self.spec.tool_id, path)

    @staticmethod
    def _strings(args: tuple[ua.Variant, ...], n: int) -> list[str] | None:
        if len(args) < n or not all(isinstance(a.Value, str) for a in args[:n]):
            return None
        return [a.Value for a in args[:n]]

    def _job_handler(self, name: str) -> Handler:
        tool = self.tool
        actions: dict[str, Callable[[str], Any]] = {
            "Store": tool.store,
            "StoreAndStart": lambda text: tool.store(text, start=True),
            "Start": tool.start,
            "Stop": tool.stop,
            "Abort": tool.abort,
            "Pause": tool.pause,
            "Resume": tool.resume,
            "Cancel": tool.cancel,
            "Clear": tool.clear,
        }
        action = actions[name]

        async def handler(parent: ua.NodeId, *args: ua.Variant) -> Any:
            strings = self._strings(args, 1)
            if strings is None:
                return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
            result = await self._command(lambda: action(strings[0]))
            if isinstance(result, ua.StatusCode):
                return result
            return [ua.Variant(m.RETURN_OK, ua.VariantType.UInt64)]

        return handler

    async def _request_job_response(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        strings = self._strings(args, 1)
        if strings is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        result = await self._command(lambda: self.tool.job_response(strings[0]))
        if isinstance(result, ua.StatusCode):
            return result
        return [ua.Variant(self._response_json(result), _S), ua.Variant(result["JobState"], _S)]

    async def _ok_or_status(
        self, args: tuple[ua.Variant, ...], n: int, fn: Callable[..., Any]
    ) -> Any:
        strings = self._strings(args, n)
        if strings is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        result = await self._command(lambda: fn(*strings))
        if isinstance(result, ua.StatusCode):
            return result
        return [ua.Variant(m.RETURN_OK, ua.VariantType.UInt64)]

    async def _download_recipe(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        return await self._ok_or_status(args, 3, self.tool.download_recipe)

    async def _select(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        return await self._ok_or_status(args, 1, self.tool.select_recipe)

    async def _delete(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        return await self._ok_or_status(args, 1, self.tool.delete_recipe)

    async def _get_checksum(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        strings = self._strings(args, 1)
        if strings is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        result = await self._command(lambda: self.tool.reported_checksum(strings[0]))
        if isinstance(result, ua.StatusCode):
            return result
        return [ua.Variant(result, _S)]

    def _control_handler(self, state: ControlState) -> Handler:
        async def handler(parent: ua.NodeId, *args: ua.Variant) -> Any:
            await self._command(lambda: self.tool.set_control_state(state))
            return [ua.Variant(m.RETURN_OK, ua.VariantType.UInt64)]

        return handler

    async def _acknowledge_method(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        alarm_id = self._alarm_by_node.get(parent)
        if alarm_id is None:
            return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
        _, gen = self._alarm_nodes[alarm_id]
        event_id = args[0].Value if args else None
        if event_id != gen.event.EventId.Value:
            return ua.StatusCode(ua.StatusCodes.BadEventIdUnknown)
        result = await self._command(lambda: self.tool.acknowledge(alarm_id))
        if isinstance(result, ua.StatusCode):
            if result.value == ua.StatusCodes.BadInvalidState:
                return ua.StatusCode(ua.StatusCodes.BadConditionBranchAlreadyAcked)
            return result
        return []

    async def _inject_fault_method(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        strings = self._strings(args, 2)
        if strings is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        fault, arguments = strings
        try:
            kwargs = json.loads(arguments or "{}")
            if not isinstance(kwargs, dict):
                raise TypeError("arguments must be a JSON object")
            self.check_fault(fault, **kwargs)
            # Run it after the reply, so a drop does not cut off its own answer.
            asyncio.get_running_loop().call_later(0.05, self._spawn, self.inject(fault, **kwargs))
        except (TypeError, ValueError, KeyError) as exc:
            log.info("%s: bad fault %s %s: %s", self.spec.tool_id, fault, arguments, exc)
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        return [ua.Variant(m.RETURN_OK, ua.VariantType.UInt64)]

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s: fault failed", self.spec.tool_id)

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- control and fault-injection API ---------------------------------------------------
    FAULTS = (
        "drop_connection",
        "go_silent",
        "resume_updates",
        "raise_alarm",
        "clear_alarm",
        "chamber_down",
        "chamber_up",
        "duplicate_job_event",
        "replay_job_event",
        "corrupt_checksums",
        "abort_job",
        "set_control_state",
        "set_drift",
        "breakdown",
        "reject_downloads",
        "slow_replies",
        "restart",
    )

    def check_fault(self, fault: str, **kwargs: Any) -> None:
        """Raise KeyError for an unknown fault, TypeError for arguments it does not take."""
        if fault not in self.FAULTS:
            raise KeyError(f"unknown fault {fault!r}")
        inspect.signature(getattr(self, fault)).bind(**kwargs)

    async def inject(self, fault: str, **kwargs: Any) -> None:
        """Trigger a fault by name (what ``InjectFault`` and the CLI call)."""
        self.check_fault(fault, **kwargs)
        await getattr(self, fault)(**kwargs)

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

    async def go_silent(self, seconds: float | None = None) -> None:
        """Stop updating values and sending events while staying connected.

        What happens meanwhile is held back and published when the silence ends (after
        ``seconds`` real seconds, or at ``resume_updates``).
        """
        loop = asyncio.get_running_loop()
        self._silent_until = float("inf") if seconds is None else loop.time() + seconds

    async def resume_updates(self) -> None:
        self._silent_until = None

    async def raise_alarm(
        self, alarm_id: str, text: str = "", severity: int = 500, breaking: bool = False
    ) -> None:
        await self._fault(
            lambda: self.tool.raise_alarm(
                alarm_id, text or alarm_id, severity=severity, breaking=breaking
            )
        )

    async def clear_alarm(self, alarm_id: str) -> None:
        await self._fault(lambda: self.tool.clear_alarm(alarm_id))

    async def chamber_down(self, chamber: str) -> None:
        await self._fault(lambda: self.tool.chamber_down(chamber))

    async def chamber_up(self, chamber: str) -> None:
        await self._fault(lambda: self.tool.chamber_up(chamber))

    async def duplicate_job_event(self) -> None:
        """Send the last job status event again, same Sequence (an at-least-once delivery)."""
        await self.replay_job_event(back=1)

    async def replay_job_event(self, back: int = 2) -> None:
        """Send an older job status event again (``back`` = 1 is the last one)."""
        if not 1 <= back <= len(self._job_history):
            raise ValueError(f"no job event {back} back")
        old = self._job_history[-back]
        async with self._lock:
            await self._trigger(self._job_gen, old["fields"], old["at"], "replay")

    async def corrupt_checksums(self, on: bool = True) -> None:
        self.tool.corrupt_checksums = on
        await self._fault(lambda: None)

    async def abort_job(self, job_order_id: str = "") -> None:
        """The tool aborts a job by itself (as after an interlock), whatever the control state."""

        def abort() -> None:
            job = self.tool.jobs.get(job_order_id) if job_order_id else self.tool.current_job
            if job is None:
                raise Refused("unknown", "no such running job")
            self.tool.fault_abort(job)

        await self._fault(abort)

    async def set_control_state(self, state: str) -> None:
        await self._fault(lambda: self.tool.set_control_state(ControlState(state)))

    async def set_drift(self, per_wafer: float) -> None:
        self.tool.measurement.drift_per_wafer = per_wafer

    async def breakdown(self, alarm_id: str = "BREAKDOWN", text: str = "") -> None:
        """The tool breaks down mid-job: the job is Aborted, the tool OutOfService with a
        breaking alarm. ``clear_alarm(alarm_id)`` is the repair."""
        await self._fault(lambda: self.tool.breakdown(alarm_id, text or "Tool breakdown"))

    async def reject_downloads(self, count: int = -1, reason: str = "checksum") -> None:
        """Refuse the next ``count`` recipe downloads (-1: every one; 0: stop refusing):
        ``reason`` "checksum" (BadInvalidArgument) or "range" (BadOutOfRange)."""
        if reason not in ("checksum", "range"):
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.tool.rejected_downloads = int(count)
        self.tool.rejection_reason = reason

    async def slow_replies(self, seconds: float = 2.0) -> None:
        """Every host method call waits ``seconds`` (real) before it is served; 0 ends it."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self.reply_delay = float(seconds)

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
            self._nodes.clear()
            self._published.clear()
            self._alarm_nodes.clear()
            self._alarm_by_node.clear()
            self._silent_until = None
            self._load_state()
            await self._start_server()
            self.restarts += 1
        finally:
            self._restarting = False

    async def _fault(self, action: Callable[[], Any]) -> Any:
        return await self._command(action, slow=False)

    # --- random faults ---------------------------------------------------------------------
    async def _fault_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self._restarting:
                continue
            now = self.clock.now()
            due = [r for r in self._recoveries if r[0] <= now]
            self._recoveries = [r for r in self._recoveries if r[0] > now]
            for _, what, recover in due:
                log.info("%s: random fault over: %s", self.spec.tool_id, what)
                self._spawn(recover())
            for occurrence in self.faults.due(now):
                self.fault_log.append((occurrence.at, occurrence.kind))
                log.info("%s: random fault %s", self.spec.tool_id, occurrence.kind)
                self._spawn(self._random_fault(occurrence.kind, occurrence.rng))

    def _recover_after(
        self, sim_s: float, what: str, recover: Callable[[], Awaitable[None]]
    ) -> None:
        self._recoveries.append((self.clock.now() + sim_s, what, recover))

    async def _random_fault(self, kind: str, rng: random.Random) -> None:
        n = len(self.fault_log)
        if kind == "alarm":
            alarm_id = f"RANDOM-{n}"
            await self.raise_alarm(alarm_id, "Random warning", severity=rng.randrange(200, 700))
            self._recover_after(rng.uniform(300, 1800), kind, lambda: self.clear_alarm(alarm_id))
        elif kind == "breakdown":
            alarm_id = f"BREAKDOWN-{n}"
            await self.breakdown(alarm_id, "Random breakdown")
            self._recover_after(rng.uniform(600, 3600), kind, lambda: self.clear_alarm(alarm_id))
        elif kind == "reject_download":
            await self.reject_downloads(1, rng.choice(("checksum", "range")))
        elif kind == "slow_replies":
            await self.slow_replies(rng.uniform(1.0, 4.0))
            self._recover_after(rng.uniform(300, 1800), kind, lambda: self.slow_replies(0))
        elif kind == "restart":
            await self.restart(rng.uniform(0.5, 2.0))
        elif kind in ("offline", "online_local"):
            state = ControlState.OFFLINE if kind == "offline" else ControlState.ONLINE_LOCAL
            await self.set_control_state(state.value)
            back = ControlState.ONLINE_REMOTE.value
            self._recover_after(rng.uniform(300, 1800), kind, lambda: self.set_control_state(back))
        elif kind == "drop_connection":
            await self.drop_connection(rng.uniform(1.0, 5.0))
        elif kind == "chamber_down" and self.spec.kind is ProcessingKind.CLUSTER:
            chamber = rng.choice(self.spec.chambers)
            await self.chamber_down(chamber)
            self._recover_after(rng.uniform(600, 3600), kind, lambda: self.chamber_up(chamber))

    def chamber_states(self) -> dict[str, ChamberState]:
        return {name: s.state for name, s in self.tool.stations.items()}
