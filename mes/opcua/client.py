"""One OPC UA session with one tool (asyncua): browse once, subscribe, call methods.

Notifications are turned into the plain events of ``mapping`` and put, with the monotonic
time they arrived (for the event-to-database latency), on a queue the tool's adapter drains;
nothing here touches the database. The session is disposable: on any doubt (a failed call, a
bad subscription status, a watchdog probe that times out) the adapter closes it and builds a
new one, then re-reads everything (``snapshot``) instead of trusting queued data changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, Node, ua

from mes.opcua import mapping
from mes.opcua import model as m

log = logging.getLogger(__name__)

# Variables every adapter watches (besides the process values and chambers).
WATCHED: dict[str, tuple[m.BrowseName, ...]] = {
    "ItemState": (m.BUILDING_BLOCKS, m.ITEM_STATE, m.CURRENT_STATE),
    "OperationMode": (m.BUILDING_BLOCKS, m.OPERATION_MODE, m.CURRENT_STATE),
    "ControlState": (m.CONTROL, (m.NS_FAB, m.CONTROL_STATE)),
    "WafersProcessedTotal": (m.COUNTERS, (m.NS_FAB, m.WAFERS_PROCESSED_TOTAL)),
    "CurrentJobOrderId": (m.COUNTERS, (m.NS_FAB, m.CURRENT_JOB_ORDER_ID)),
    "CurrentLotId": (m.COUNTERS, (m.NS_FAB, m.CURRENT_LOT_ID)),
    "CurrentSubstrateId": (m.COUNTERS, (m.NS_FAB, m.CURRENT_SUBSTRATE_ID)),
    "SlotMap": (m.COUNTERS, (m.NS_FAB, m.SLOT_MAP)),
    "SelectedRecipe": (m.RECIPES, (m.NS_FAB, m.SELECTED_RECIPE)),
    "StepNumber": (m.PROCESS_DATA, (m.NS_FAB, m.STEP_NUMBER)),
    "StepName": (m.PROCESS_DATA, (m.NS_FAB, m.STEP_NAME)),
    "LastMeasurement": (m.PROCESS_DATA, (m.NS_FAB, m.LAST_MEASUREMENT)),
}


# ProcessData variables that are not process values (not summarised per job and wafer).
NOT_PROCESS_VALUES = frozenset({m.STEP_NUMBER, m.STEP_NAME, m.LAST_MEASUREMENT})


# (monotonic time of arrival, event)
Received = tuple[float, mapping.ToolEvent]


class ToolModelError(Exception):
    """The server does not offer what the adapter needs (wrong endpoint or tool model)."""


class ToolRefused(Exception):
    """The tool answered a command with a Bad status, or a check before a command failed:
    a definite answer (unlike a lost connection, after which nobody knows)."""


@dataclass(frozen=True)
class Security:
    """Client security. ``None`` today; ``Basic256Sha256`` with ``Sign``/``SignAndEncrypt``
    and a client certificate and key once the simulated tools serve it."""

    policy: str = "None"
    mode: str = "SignAndEncrypt"
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None


class ToolSession:
    def __init__(
        self,
        endpoint: str,
        tool_code: str,
        queue: asyncio.Queue[Received],
        *,
        timeout: float = 10.0,
        security: Security | None = None,
        publishing_ms: int = 200,
        process_values: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.tool_code = tool_code
        self.queue = queue
        # asyncua probes the server every ``watchdog_intervall`` with that same time as the
        # timeout; its 1 s default drops healthy sessions whenever a few hundred tools share a
        # busy machine (and costs a read per tool per second). Our own watchdog covers silence.
        self.client = Client(endpoint, timeout=timeout, watchdog_intervall=max(timeout / 2, 1.0))
        self.security = security or Security()
        self.publishing_ms = publishing_ms
        self.process_values = process_values
        self.ns: dict[str, int] = {}
        self.names: dict[Any, str] = {}  # monitored NodeId -> name
        self.failed: Exception | None = None
        self.last_message_at = asyncio.get_running_loop().time()
        self.notifications = 0
        self._subscription: Any = None

    # --- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        if self.security.policy != "None":
            if not (self.security.certificate and self.security.private_key):
                raise ValueError("OPC UA security needs a client certificate and private key")
            parts = [
                self.security.policy,
                self.security.mode,
                self.security.certificate,
                self.security.private_key,
            ]
            if self.security.server_certificate:
                parts.append(self.security.server_certificate)
            await self.client.set_security_string(",".join(parts))
        await self.client.connect()
        # Browsing is batched (a handful of round trips instead of one per node): a reconnect
        # storm of a few hundred tools after an adapter restart must not take minutes.
        namespaces = await self.client.get_namespace_array()
        for uri in (m.NS_DI, m.NS_MACHINERY, m.NS_MACHINERY_JOBS, m.NS_ISA95_JOBS, m.NS_FAB):
            if uri not in namespaces:
                raise ToolModelError(f"{self.tool_code}: the server lacks namespace {uri}")
            self.ns[uri] = namespaces.index(uri)
        self.machine = await self.client.nodes.objects.get_child(
            [self.q(m.MACHINES), self.q((m.NS_FAB, self.tool_code))]
        )
        required: dict[str, tuple[m.BrowseName, ...]] = {
            "JobOrderControl": (m.BUILDING_BLOCKS, m.JOB_MANAGEMENT, m.JOB_ORDER_CONTROL),
            "JobOrderResults": (m.BUILDING_BLOCKS, m.JOB_MANAGEMENT, m.JOB_ORDER_RESULTS),
            "Recipes": (m.RECIPES,),
            "ProcessData": (m.PROCESS_DATA,),
            **WATCHED,
        }
        found = await self._children(self.machine, [*required.values(), (m.CHAMBERS,)])
        missing = [name for name, node in zip(required, found, strict=False) if node is None]
        if missing:
            raise ToolModelError(f"{self.tool_code}: the tool model lacks {', '.join(missing)}")
        nodes = dict(zip(required, found, strict=False))
        self.job_control = _present(nodes.pop("JobOrderControl"))
        self.job_results = _present(nodes.pop("JobOrderResults"))
        self.recipes = _present(nodes.pop("Recipes"))
        process_data = _present(nodes.pop("ProcessData"))
        self.nodes = {name: _present(node) for name, node in nodes.items()}
        self.process_value_names: frozenset[str] = frozenset()
        if self.process_values:
            # Every analog value the tool publishes under ProcessData is kept (summarised per
            # job and wafer), whatever the tool model calls it.
            pv = {
                str(d.BrowseName.Name): self.client.get_node(d.NodeId)
                for d in await process_data.get_children_descriptions()
                if d.NodeClass == ua.NodeClass.Variable
                and d.BrowseName.Name not in NOT_PROCESS_VALUES
            }
            self.nodes.update(pv)
            self.process_value_names = frozenset(pv)
        chambers = found[-1]
        if chambers is not None:
            names = [
                str(d.BrowseName.Name)
                for d in await chambers.get_children_descriptions()
                if d.NodeClass == ua.NodeClass.Object
            ]
            states = await self._children(
                chambers, [((m.NS_FAB, n), (m.NS_FAB, m.CHAMBER_STATE)) for n in names]
            )
            for cname, node in zip(names, states, strict=True):
                if node is not None:
                    self.nodes[f"Chamber/{cname}"] = node
        base = ("0:Types", "0:EventTypes", "0:BaseEventType")
        alarm_base = (*base, "0:ConditionType", "0:AcknowledgeableConditionType")
        fab = self.ns[m.NS_FAB]
        event_paths = [
            [*base, f"{fab}:{m.JOB_STATUS_EVENT}"],
            [*base, f"{fab}:{m.SUBSTRATE_EVENT}"],
            [*alarm_base, "0:AlarmConditionType", f"{fab}:{m.ALARM_EVENT}"],
        ]
        results = await self.client.nodes.root.get_children_by_path(event_paths)
        self.event_types = [_present(r[0] if r else None) for r in results]
        self.job_type, self.substrate_type, self.alarm_type = (t.nodeid for t in self.event_types)

    async def subscribe(self) -> None:
        self._subscription = await self.client.create_subscription(self.publishing_ms, self)
        await self._subscription.subscribe_events(
            self.client.nodes.server, self.event_types, queuesize=1000
        )
        nodes = list(self.nodes.values())
        self.names = {node.nodeid: name for name, node in self.nodes.items()}
        await self._subscription.subscribe_data_change(nodes, queuesize=10)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 2.0)
        with contextlib.suppress(Exception):
            if self.client.uaclient.protocol is not None:
                self.client.uaclient.protocol.transport.abort()

    def q(self, name: m.BrowseName) -> str:
        return f"{self.ns[name[0]]}:{name[1]}"

    async def child(self, *path: m.BrowseName) -> Node:
        return await self.machine.get_child([self.q(p) for p in path])

    async def _children(
        self, start: Node, paths: list[tuple[m.BrowseName, ...]]
    ) -> list[Node | None]:
        """Resolve many browse paths in one TranslateBrowsePaths call (None: not there)."""
        if not paths:
            return []
        results = await start.get_children_by_path(
            [[self.q(p) for p in path] for path in paths], raise_on_partial_error=False
        )
        return [r[0] if r else None for r in results]

    # --- subscription handler (asyncua calls these) -----------------------------------------
    def _seen(self) -> None:
        self.last_message_at = asyncio.get_running_loop().time()
        self.notifications += 1

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self._seen()
        name = self.names.get(node.nodeid)
        if name is None:
            return
        at = _utc(getattr(data.monitored_item.Value, "SourceTimestamp", None))
        self.queue.put_nowait((self.last_message_at, mapping.ValueChange(name, val, at)))

    def event_notification(self, event: Any) -> None:
        self._seen()
        try:
            parsed = self._parse_event(event)
        except Exception:
            log.exception("%s: unreadable event", self.tool_code)
            return
        if parsed is not None:
            self.queue.put_nowait((self.last_message_at, parsed))

    def status_change_notification(self, status: Any) -> None:
        log.warning("%s: subscription status %s", self.tool_code, status)
        self.failed = ConnectionError(f"subscription status {status}")

    def _parse_event(self, e: Any) -> mapping.ToolEvent | None:
        at = _utc(getattr(e, "Time", None))
        if e.EventType == self.job_type:
            return mapping.JobEvent(
                job_order_id=str(e.JobOrderID),
                state=str(e.JobState),
                substate=str(e.JobSubstate or ""),
                response=str(e.JobResponse or ""),
                sequence=int(e.Sequence),
                at=at,
            )
        if e.EventType == self.substrate_type:
            meas = e.Measurements or []
            return mapping.SubstrateEvent(
                job_order_id=str(e.JobOrderID),
                lot_id=str(e.LotID),
                substrate_id=str(e.SubstrateID),
                slot=int(e.Slot),
                chamber=str(e.Chamber or ""),
                state=str(e.SubstrateState),
                measurements=tuple(float(v) for v in (meas if isinstance(meas, list) else [meas])),
                sequence=int(e.Sequence),
                at=at,
            )
        if e.EventType == self.alarm_type:
            message = getattr(e, "Message", None)
            return mapping.AlarmEvent(
                code=str(e.ConditionName),
                text=str(getattr(message, "Text", "") or ""),
                severity=int(e.Severity),
                breaking=bool(e.Breaking),
                active=bool(getattr(e, "ActiveState/Id")),
                acked=bool(getattr(e, "AckedState/Id")),
                at=at,
            )
        return None

    # --- reads ----------------------------------------------------------------------------
    async def read(self, name: str) -> Any:
        return await self.nodes[name].read_value()

    async def probe(self, within: float) -> None:
        """A cheap round trip: does the server still answer?"""
        await asyncio.wait_for(
            self.client.nodes.server_state.read_value(),
            within,
        )

    async def snapshot(self) -> dict[str, Any]:
        return {name: await node.read_value() for name, node in self.nodes.items()}

    async def condition_refresh(self) -> None:
        await self.client.nodes.server.call_method(
            ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
            ua.Variant(self._subscription.subscription_id, ua.VariantType.UInt32),
        )

    # --- commands -------------------------------------------------------------------------
    async def _call(self, node: Node, ns_uri: str, method: str, *args: Any) -> Any:
        try:
            return await node.call_method(f"{self.ns[ns_uri]}:{method}", *args)
        except ua.UaStatusCodeError as exc:
            raise ToolRefused(f"{method} refused by the tool: {exc}") from exc

    async def recipe_checksums(self) -> dict[str, str]:
        node = await self.recipes.get_child(self.q((m.NS_FAB, m.RECIPE_CHECKSUMS)))
        data = json.loads(await node.read_value() or "{}")
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    async def download_recipe(self, recipe_id: str, body: dict[str, Any], checksum: str) -> None:
        await self._call(
            self.recipes, m.NS_FAB, m.DOWNLOAD_RECIPE, recipe_id, json.dumps(body), checksum
        )

    async def recipe_checksum(self, recipe_id: str) -> str:
        return str(await self._call(self.recipes, m.NS_FAB, m.GET_RECIPE_CHECKSUM, recipe_id))

    async def select_recipe(self, recipe_id: str) -> None:
        await self._call(self.recipes, m.NS_FAB, m.SELECT_RECIPE, recipe_id)

    async def store_and_start(self, job_order: str, comment: str = "") -> None:
        await self._call(self.job_control, m.NS_ISA95_JOBS, "StoreAndStart", job_order, comment)

    async def job_command(self, method: str, job_order_id: str, comment: str = "") -> None:
        await self._call(self.job_control, m.NS_ISA95_JOBS, method, job_order_id, comment)

    async def job_response(self, job_order_id: str) -> mapping.JobResult | None:
        """What the tool says about a job order; None if it does not know it."""
        try:
            response, _state = await self.job_results.call_method(
                f"{self.ns[m.NS_ISA95_JOBS]}:{m.REQUEST_JOB_RESPONSE}", job_order_id
            )
        except ua.UaStatusCodeError as exc:
            if exc.code == ua.StatusCodes.BadNotFound:
                return None
            raise
        return mapping.parse_job_response(str(response))


def _present(node: Node | None) -> Node:
    if node is None:
        raise ToolModelError("the tool model lacks a node the adapter needs")
    return node


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
