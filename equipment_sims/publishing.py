"""What a simulated tool shows its clients: variable values, and job, substrate and alarm events.

Events are emitted from the Server object (the only emitter asyncua notifies reliably) with
``SourceNode`` = the machine object. Job and substrate events carry a per-tool ``Sequence``
so a client can spot duplicates and replays (which the faults produce on purpose).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import Node, Server, ua
from asyncua.server.event_generator import EventGenerator

from mes.opcua import model as m
from mes.opcua.model import ProcessingKind

from .address_space import AddressSpace, S
from .clock import SimClock
from .records import Alarm, AlarmEvent, ChamberEvent, Event, JobEvent, SubstrateEvent
from .spec import ToolSpec
from .tool import Tool


@dataclass(frozen=True)
class _Target:
    server: Server
    space: AddressSpace


class Publisher:
    """Writes a tool's state into the address space of its server and emits its events.

    Lives as long as the simulated tool: the event sequence and the recent job events (for
    replays) outlast a restart of the server, which ``attach``es the new address space.
    """

    def __init__(
        self,
        spec: ToolSpec,
        clock: SimClock,
        journal: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.spec = spec
        self.clock = clock
        # What the tool did, for a test to compare with the MES: every job state change, as the
        # tool has it (before any fault loses it on the way).
        self.journal = journal
        self.published: dict[str, Any] = {}  # last value written, by variable path
        self.seq = 0
        self.job_history: deque[dict[str, Any]] = deque(maxlen=50)
        self.lose_next = 0  # fault lose_events: job/substrate events lost on the way
        self.misreport_wafers: int | None = None  # bad-event fault: the next job end's count
        self._alarm_nodes: dict[str, tuple[Node, EventGenerator]] = {}
        self._alarm_by_node: dict[ua.NodeId, str] = {}
        self._target: _Target | None = None

    def attach(self, server: Server, space: AddressSpace) -> None:
        """Publish into a newly built address space (its variables hold their initial values)."""
        self._target = _Target(server, space)
        self.published.clear()
        self.published.update(space.values)
        self._alarm_nodes.clear()
        self._alarm_by_node.clear()

    @property
    def target(self) -> _Target:
        if self._target is None:
            raise RuntimeError("no address space to publish into yet")
        return self._target

    def alarm_condition(self, node: ua.NodeId) -> tuple[str, EventGenerator] | None:
        """The alarm id and event generator of an alarm's condition node."""
        alarm_id = self._alarm_by_node.get(node)
        if alarm_id is None:
            return None
        return alarm_id, self._alarm_nodes[alarm_id][1]

    async def publish(self, tool: Tool, *, process_values: bool) -> None:
        events = tool.drain_events()  # while silent they wait in the tool
        await self.publish_state(tool)
        for event in events:
            if self.journal is not None and isinstance(event, JobEvent):
                self.journal(self._journal_record(event))
            await self._publish_event(event)
        if process_values:
            step, step_name, values = tool.process_values()
            at = self.clock.datetime()
            for name, value in values.items():
                await self.write(
                    f"ProcessData/{name}", value, ua.VariantType.Double, at, force=True
                )
            await self.write("ProcessData/StepNumber", step, ua.VariantType.UInt32, at)
            await self.write("ProcessData/StepName", step_name, S, at)

    async def publish_state(self, tool: Tool) -> None:
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
            ("ItemState/CurrentState", tool.item_state.value, S),
            ("OperationMode/CurrentState", tool.operation_mode.value, S),
            ("JobOrderList", json.dumps(jobs), S),
            ("WorkMaster", sorted(tool.recipes), S),
            (
                "JobOrderResponseList",
                "[" + ",".join(self.response_json(j.response()) for j in tool.jobs.values()) + "]",
                S,
            ),
            ("Recipes/RecipeList", sorted(tool.recipes), S),
            ("Recipes/SelectedRecipe", tool.selected_recipe, S),
            ("Recipes/Checksums", json.dumps(checksums, sort_keys=True), S),
            ("Control/State", tool.control_state.value, S),
            ("Counters/Wafers", tool.wafers_processed_total, u32),
            ("Counters/Job", job.job_order_id if job else "", S),
            ("Counters/Lot", wafer.lot_id if wafer else "", S),
            ("Counters/Substrate", wafer.substrate_id if wafer else "", S),
            ("Counters/SlotMap", tool.slot_map(), S),
            ("Counters/LoadPorts", tool.load_ports_report(), S),
        ]
        if self.spec.kind is ProcessingKind.CLUSTER:
            for name, station in tool.stations.items():
                sub = station.wafers[0].substrate_id if station.wafers else ""
                values.append((f"Chambers/{name}/State", station.state.value, S))
                values.append((f"Chambers/{name}/Substrate", sub, S))
        for path, value, vtype in values:
            await self.write(path, value, vtype, at)

    async def write(
        self, path: str, value: Any, vtype: ua.VariantType, at: datetime, *, force: bool = False
    ) -> None:
        if not force and self.published.get(path) == value:
            return
        self.published[path] = value
        dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=at, ServerTimestamp=at)
        target = self.target
        await target.server.write_attribute_value(target.space.nodes[path].nodeid, dv)

    async def notify_wrong_type(
        self, path: str, value: Any, vtype: ua.VariantType, at: datetime
    ) -> None:
        """Send subscribers a value of another type than the variable's (a bad-input fault).

        The server refuses such a write (BadTypeMismatch), so this goes around it: the value is
        handed to the subscriptions, and the variable keeps its good value for reads and for
        the next (type-checked) write."""
        nodeid = self.target.space.nodes[path].nodeid
        attval = self.target.server.iserver.aspace[nodeid].attributes[ua.AttributeIds.Value]
        good = attval.value
        bad = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=at, ServerTimestamp=at)
        attval.value = bad
        try:
            for handle, callback in list(attval.datachange_callbacks.items()):
                await callback(handle, bad)
        finally:
            attval.value = good

    def response_json(self, response: dict[str, Any]) -> str:
        """A job response with its simulated-second times as ISO 8601 timestamps."""
        times = {
            key: self.clock.datetime(response[key]).isoformat()
            for key in ("StartTime", "EndTime")
            if response.get(key) is not None
        }
        return json.dumps(response | times)

    async def replay_job_event(self, back: int) -> None:
        """Send an older job status event again, same Sequence (``back`` = 1 is the last)."""
        if not 1 <= back <= len(self.job_history):
            raise ValueError(f"no job event {back} back")
        old = self.job_history[-back]
        await self._trigger(self.target.space.job_events, old["fields"], old["at"], "replay")

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _journal_record(self, event: JobEvent) -> dict[str, Any]:
        response = event.response
        return {
            "tool": self.spec.tool_id,
            "job": event.job_order_id,
            "state": event.state.value,
            "substate": event.substate.value,
            "started": response.get("StartTime"),
            "lots": response.get("Lots", []),
            "processed": response.get("WafersProcessed"),
        }

    async def _publish_event(self, event: Event) -> None:
        at = self.clock.datetime(event.at)
        space = self.target.space
        if isinstance(event, JobEvent | SubstrateEvent) and self.lose_next > 0:
            self.lose_next -= 1
            self._next_seq()  # sent, as far as the tool knows, and lost on the wire
            return
        if isinstance(event, JobEvent):
            response = event.response
            if self.misreport_wafers is not None and event.state.value == "Ended":
                response = response | {"WafersProcessed": self.misreport_wafers}
                self.misreport_wafers = None
            fields = {
                "JobOrderID": event.job_order_id,
                "JobState": event.state.value,
                "JobSubstate": event.substate.value,
                "JobResponse": self.response_json(response),
                m.EVENT_SEQUENCE: self._next_seq(),
            }
            self.job_history.append({"at": at, "fields": fields})
            message = f"{event.job_order_id} {event.state}"
            await self._trigger(space.job_events, fields, at, message)
        elif isinstance(event, SubstrateEvent):
            w = event.wafer
            if w["Measurements"]:
                await self.write(
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
            message = f"{w['SubstrateID']} {w['State']}"
            await self._trigger(space.substrate_events, fields, at, message)
        elif isinstance(event, AlarmEvent):
            await self._publish_alarm(event.alarm, at)
        elif isinstance(event, ChamberEvent):
            pass  # published as Chambers/<name>/State by publish_state

    @staticmethod
    async def _trigger(
        gen: EventGenerator, fields: dict[str, Any], at: datetime, message: str
    ) -> None:
        for name, value in fields.items():
            setattr(gen.event, name, value)
        await gen.trigger(time_attr=at, message=message)

    async def _publish_alarm(self, alarm: Alarm, at: datetime) -> None:
        await self.publish_alarm_with(alarm, at, {})

    async def publish_alarm_with(
        self, alarm: Alarm, at: datetime, override: dict[str, Any]
    ) -> None:
        """Publish an alarm event; ``override`` replaces fields (a (value, VariantType) pair
        also the declared type: the bad-input faults send fields of the wrong type)."""
        server, space = self.target.server, self.target.space
        if alarm.alarm_id not in self._alarm_nodes:
            path = f"Alarms/{alarm.alarm_id}"
            node = await space.alarms_folder.add_object(
                ua.NodeId(path, space.fab), ua.QualifiedName(alarm.alarm_id, space.fab)
            )
            gen = await server.get_event_generator(space.alarm_type)
            self._alarm_nodes[alarm.alarm_id] = (node, gen)
            self._alarm_by_node[node.nodeid] = alarm.alarm_id
        node, gen = self._alarm_nodes[alarm.alarm_id]
        text = {True: "Active", False: "Inactive"}
        fields: dict[str, Any] = {
            "NodeId": node.nodeid,
            "SourceNode": space.machine.nodeid,
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
        types = dict(gen.event.data_types)
        try:
            for name, value in override.items():
                if isinstance(value, tuple):
                    value, gen.event.data_types[name] = value
                fields[name] = value
            await self._trigger(gen, fields, at, alarm.text)
        finally:
            gen.event.data_types.clear()
            gen.event.data_types.update(types)
