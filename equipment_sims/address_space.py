"""The address space of one simulated tool: its folders, variables, methods and event types.

Laid out as ``mes/opcua/model.py`` publishes it (the tool contract). Variables get string
NodeIds equal to their path (``Counters/Wafers``) in the fab namespace; the server writes them
by that path. Method nodes call the handlers of ``host_methods.HostMethods``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncua
from asyncua import Node, Server, ua
from asyncua.server.event_generator import EventGenerator

from mes.opcua import model as m
from mes.opcua.model import ControlState, ProcessingKind

from .process import sensor_level, sensor_names
from .spec import ToolSpec

if TYPE_CHECKING:
    from .host_methods import HostMethods
    from .tool import Tool

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
S = ua.VariantType.String


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


_RETURN = [_arg("ReturnStatus", ua.VariantType.UInt64)]


@dataclass
class AddressSpace:
    """What the server writes to and emits from once the address space is built."""

    fab: int  # namespace index of the fab's own nodes
    machine: Node
    alarms_folder: Node
    job_events: EventGenerator
    substrate_events: EventGenerator
    alarm_type: Node
    nodes: dict[str, Node]  # variables by path
    values: dict[str, Any]  # their initial values, by path


@dataclass
class _Builder:
    """Adds nodes under NodeIds of the fab namespace and remembers the variables."""

    server: Server
    ns: dict[str, int]
    nodes: dict[str, Node] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def fab(self) -> int:
        return self.ns[m.NS_FAB]

    def qn(self, name: m.BrowseName) -> ua.QualifiedName:
        return ua.QualifiedName(name[1], self.ns[name[0]])

    def nid(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self.fab)

    async def folder(self, parent: Node, path: str, name: m.BrowseName) -> Node:
        return await parent.add_object(self.nid(path), self.qn(name))

    async def var(
        self,
        parent: Node,
        path: str,
        name: str,
        value: Any,
        vtype: ua.VariantType,
        ns_uri: str = m.NS_FAB,
    ) -> Node:
        node = await parent.add_variable(
            self.nid(path), ua.QualifiedName(name, self.ns[ns_uri]), value, varianttype=vtype
        )
        self.nodes[path] = node
        self.values[path] = value
        return node

    async def method(
        self,
        parent: Node,
        path: str,
        name: str,
        handler: Handler,
        inargs: list[ua.Argument],
        outargs: list[ua.Argument] = _RETURN,
        ns_uri: str = m.NS_FAB,
    ) -> None:
        await parent.add_method(
            self.nid(path), ua.QualifiedName(name, self.ns[ns_uri]), handler, inargs, outargs
        )

    async def event_type(self, machine: Node, spec: ToolSpec, name: str, props: list[Any]) -> Any:
        etype = await self.server.create_custom_event_type(self.fab, name, properties=props)
        gen = await self.server.get_event_generator(etype)
        gen.event.SourceNode = machine.nodeid
        gen.event.SourceName = spec.tool_id
        return gen


async def build_address_space(
    server: Server, spec: ToolSpec, tool: Tool, methods: HostMethods
) -> AddressSpace:
    """Add the tool's nodes to an initialised ``server``."""
    ns = {
        uri: await server.register_namespace(uri)
        for uri in (m.NS_DI, m.NS_MACHINERY, m.NS_MACHINERY_JOBS, m.NS_ISA95_JOBS, m.NS_FAB)
    }
    b = _Builder(server, ns)
    machines = await server.nodes.objects.add_folder(b.nid("Machines"), b.qn(m.MACHINES))
    machine = await machines.add_object(b.nid("Machine"), ua.QualifiedName(spec.tool_id, b.fab))
    await _identification(b, machine, spec)
    await _building_blocks(b, machine, spec, tool, methods)
    await _recipes(b, machine, methods)
    await _control(b, machine, tool, methods)
    await _counters(b, machine, tool)
    if spec.kind is ProcessingKind.CLUSTER:
        await _chambers(b, machine, spec)
    await _process_data(b, machine, spec)
    alarms_folder = await b.folder(machine, "Alarms", m.ALARMS)
    sim = await b.folder(machine, "Simulation", m.SIMULATION)
    await b.method(
        sim,
        "Simulation/InjectFault",
        m.INJECT_FAULT,
        methods.inject_fault,
        [_arg("Fault", S), _arg("Arguments", S)],
    )

    # Event types and generators.
    job_events = await b.event_type(
        machine,
        spec,
        m.JOB_STATUS_EVENT,
        [
            ("JobOrderID", S),
            ("JobState", S),
            ("JobSubstate", S),
            ("JobResponse", S),
            (m.EVENT_SEQUENCE, ua.VariantType.UInt32),
        ],
    )
    substrate_events = await b.event_type(
        machine,
        spec,
        m.SUBSTRATE_EVENT,
        [
            ("JobOrderID", S),
            ("LotID", S),
            ("SubstrateID", S),
            ("Slot", ua.VariantType.UInt32),
            ("Chamber", S),
            ("SubstrateState", S),
            ("Measurements", ua.VariantType.Double),
            (m.EVENT_SEQUENCE, ua.VariantType.UInt32),
        ],
    )
    alarm_type = await server.create_custom_event_type(
        b.fab,
        m.ALARM_EVENT,
        ua.ObjectIds.AlarmConditionType,
        [("Breaking", ua.VariantType.Boolean)],
    )
    server.link_method(
        server.get_node(ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)),
        methods.acknowledge,
    )
    return AddressSpace(
        fab=b.fab,
        machine=machine,
        alarms_folder=alarms_folder,
        job_events=job_events,
        substrate_events=substrate_events,
        alarm_type=alarm_type,
        nodes=b.nodes,
        values=b.values,
    )


async def _identification(b: _Builder, machine: Node, spec: ToolSpec) -> None:
    ident = await b.folder(machine, "Identification", m.IDENTIFICATION)
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
            b.nid(f"Identification/{prop}"), ua.QualifiedName(prop, b.ns[m.NS_DI]), values[prop]
        )


async def _building_blocks(
    b: _Builder, machine: Node, spec: ToolSpec, tool: Tool, methods: HostMethods
) -> None:
    """Machinery item state and operation mode, and ISA-95 job management."""
    blocks = await b.folder(machine, "BuildingBlocks", m.BUILDING_BLOCKS)
    for path, bname, value in (
        ("ItemState", m.ITEM_STATE, tool.item_state.value),
        ("OperationMode", m.OPERATION_MODE, tool.operation_mode.value),
    ):
        sm = await b.folder(blocks, path, bname)
        await b.var(sm, f"{path}/CurrentState", m.CURRENT_STATE[1], value, S, m.NS_MACHINERY)

    jm = await b.folder(blocks, "JobManagement", m.JOB_MANAGEMENT)
    control = await b.folder(jm, "JobOrderControl", m.JOB_ORDER_CONTROL)
    job_ns = m.NS_ISA95_JOBS
    for name in m.JOB_METHODS:
        if name in ("Store", "StoreAndStart"):
            inargs = [_arg("JobOrder", S), _arg("Comment", S)]
        else:
            inargs = [_arg("JobOrderID", S), _arg("Comment", S)]
        await b.method(
            control, f"JobOrderControl/{name}", name, methods.job(name), inargs, ns_uri=job_ns
        )
    await b.var(control, "JobOrderList", m.JOB_ORDER_LIST, "[]", S, job_ns)
    await b.var(control, "WorkMaster", m.WORK_MASTER, [], S, job_ns)
    await b.var(control, "EquipmentID", m.EQUIPMENT_ID, spec.tool_id, S, job_ns)
    await b.var(
        control, "MaxJobs", m.MAX_DOWNLOADABLE_JOB_ORDERS, 10, ua.VariantType.UInt16, job_ns
    )
    results = await b.folder(jm, "JobOrderResults", m.JOB_ORDER_RESULTS)
    await b.method(
        results,
        "JobOrderResults/Request",
        m.REQUEST_JOB_RESPONSE,
        methods.request_job_response,
        [_arg("JobOrderID", S)],
        [_arg("JobResponse", S), _arg("JobState", S)],
        ns_uri=job_ns,
    )
    await b.var(results, "JobOrderResponseList", m.JOB_ORDER_RESPONSE_LIST, "[]", S, job_ns)


async def _recipes(b: _Builder, machine: Node, methods: HostMethods) -> None:
    recipes = await b.folder(machine, "Recipes", m.RECIPES)
    await b.var(recipes, "Recipes/RecipeList", m.RECIPE_LIST, [], S)
    await b.var(recipes, "Recipes/SelectedRecipe", m.SELECTED_RECIPE, "", S)
    await b.var(recipes, "Recipes/Checksums", m.RECIPE_CHECKSUMS, "{}", S)
    rid = _arg("RecipeId", S)
    await b.method(
        recipes,
        "Recipes/Download",
        m.DOWNLOAD_RECIPE,
        methods.download_recipe,
        [rid, _arg("Body", S), _arg("Checksum", S)],
    )
    await b.method(recipes, "Recipes/Select", m.SELECT_RECIPE, methods.select_recipe, [rid])
    await b.method(recipes, "Recipes/Delete", m.DELETE_RECIPE, methods.delete_recipe, [rid])
    await b.method(
        recipes,
        "Recipes/GetChecksum",
        m.GET_RECIPE_CHECKSUM,
        methods.get_checksum,
        [rid],
        [_arg("Checksum", S)],
    )


async def _control(b: _Builder, machine: Node, tool: Tool, methods: HostMethods) -> None:
    """SEMI E30 control state and the methods that change it."""
    ctl = await b.folder(machine, "Control", m.CONTROL)
    await b.var(ctl, "Control/State", m.CONTROL_STATE, tool.control_state.value, S)
    for name, state in (
        (m.GO_ONLINE_REMOTE, ControlState.ONLINE_REMOTE),
        (m.GO_ONLINE_LOCAL, ControlState.ONLINE_LOCAL),
        (m.GO_OFFLINE, ControlState.OFFLINE),
    ):
        await b.method(ctl, f"Control/{name}", name, methods.control(state), [])


async def _counters(b: _Builder, machine: Node, tool: Tool) -> None:
    counters = await b.folder(machine, "Counters", m.COUNTERS)
    await b.var(counters, "Counters/Wafers", m.WAFERS_PROCESSED_TOTAL, 0, ua.VariantType.UInt32)
    await b.var(counters, "Counters/Job", m.CURRENT_JOB_ORDER_ID, "", S)
    await b.var(counters, "Counters/Lot", m.CURRENT_LOT_ID, "", S)
    await b.var(counters, "Counters/Substrate", m.CURRENT_SUBSTRATE_ID, "", S)
    await b.var(counters, "Counters/SlotMap", m.SLOT_MAP, tool.slot_map(), S)
    await b.var(counters, "Counters/LoadPorts", m.LOAD_PORTS, tool.load_ports_report(), S)


async def _chambers(b: _Builder, machine: Node, spec: ToolSpec) -> None:
    chambers = await b.folder(machine, "Chambers", m.CHAMBERS)
    for name in spec.chambers:
        ch = await chambers.add_object(b.nid(f"Chambers/{name}"), ua.QualifiedName(name, b.fab))
        await b.var(ch, f"Chambers/{name}/State", m.CHAMBER_STATE, "Idle", S)
        await b.var(ch, f"Chambers/{name}/Substrate", m.CHAMBER_SUBSTRATE, "", S)


async def _process_data(b: _Builder, machine: Node, spec: ToolSpec) -> None:
    """Process values with their engineering units and ranges, the recipe step, measurements."""
    pd = await b.folder(machine, "ProcessData", m.PROCESS_DATA)
    double = ua.VariantType.Double
    for name, unit in m.PROCESS_VALUES.items():
        node = await b.var(pd, f"ProcessData/{name}", name, 0.0, double)
        eu = ua.EUInformation(
            NamespaceUri=UNITS_NAMESPACE,
            UnitId=_unit_id(_UNECE[unit]) if unit in _UNECE else -1,
            DisplayName=ua.LocalizedText(unit),
            Description=ua.LocalizedText(unit),
        )
        await node.add_property(b.nid(f"ProcessData/{name}/EU"), "0:EngineeringUnits", eu)
        low, high = _EU_RANGE[name]
        await node.add_property(
            b.nid(f"ProcessData/{name}/EURange"), "0:EURange", ua.Range(Low=low, High=high)
        )
    for index, name in enumerate(sensor_names(spec.sensors)):
        node = await b.var(pd, f"ProcessData/{name}", name, 0.0, double)
        level = sensor_level(index)
        await node.add_property(
            b.nid(f"ProcessData/{name}/EURange"), "0:EURange", ua.Range(Low=0.0, High=4 * level)
        )
    await b.var(pd, "ProcessData/StepNumber", m.STEP_NUMBER, 0, ua.VariantType.UInt32)
    await b.var(pd, "ProcessData/StepName", m.STEP_NAME, "", S)
    await b.var(pd, "ProcessData/LastMeasurement", m.LAST_MEASUREMENT, [], double)
