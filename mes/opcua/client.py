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
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies

from mes.opcua import certificates, mapping
from mes.opcua import model as m
from mes.opcua.security import Security as Security
from mes.opcua.security import SecurityRefused as SecurityRefused

log = logging.getLogger(__name__)
_REFRESH_START = ua.NodeId(ua.ObjectIds.RefreshStartEventType)
_REFRESH_END = ua.NodeId(ua.ObjectIds.RefreshEndEventType)

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


# Status codes with which a server refuses a client certificate at CreateSession.
_CERTIFICATE_REFUSALS = frozenset(
    {
        ua.StatusCodes.BadCertificateUntrusted,
        ua.StatusCodes.BadCertificateInvalid,
        ua.StatusCodes.BadCertificateUriInvalid,
        ua.StatusCodes.BadCertificateUseNotAllowed,
        ua.StatusCodes.BadCertificateTimeInvalid,
        ua.StatusCodes.BadCertificateRevoked,
        ua.StatusCodes.BadSecurityChecksFailed,
    }
)


# ProcessData variables that are not process values (not summarised per job and wafer).
NOT_PROCESS_VALUES = frozenset({m.STEP_NUMBER, m.STEP_NAME, m.LAST_MEASUREMENT})


# (monotonic time of arrival, event)
Received = tuple[float, mapping.ToolEvent]


class ToolModelError(Exception):
    """The server does not offer what the adapter needs (wrong endpoint or tool model)."""


# The Bad statuses with which a tool says "no, and nothing was done" (model.REFUSAL_STATUS
# and the call's own argument checks). Any other Bad status — BadTimeout, BadInternalError,
# BadCommunicationError, BadServerHalted... — leaves the outcome unknown.
DEFINITE_REFUSALS = frozenset(
    {getattr(ua.StatusCodes, name) for name in m.REFUSAL_STATUS.values()}
    | {
        ua.StatusCodes.BadInvalidArgument,
        ua.StatusCodes.BadArgumentsMissing,
        ua.StatusCodes.BadTooManyArguments,
        ua.StatusCodes.BadTypeMismatch,
        ua.StatusCodes.BadMethodInvalid,
        ua.StatusCodes.BadNotExecutable,
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadNodeIdUnknown,
        ua.StatusCodes.BadNotFound,
    }
)


class OutcomeUnknown(ConnectionError):
    """A command got no definite answer (a timeout, a server fault): treated like a lost
    connection, so the session ends and reconciliation settles what the tool did."""


class UnreadableJobResponse(ValueError):
    """A job's response could not be read; ``state`` is the JobState the tool answered beside
    it (if that is one), so the job can still be settled as "nothing processed"."""

    def __init__(self, text: str, state: Any, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.text = text
        self.state = state if state in {s.value for s in m.JobState} else None


class ToolRefused(Exception):
    """The tool answered a command with a Bad status, or a check before a command failed:
    a definite answer (unlike a lost connection, after which nobody knows)."""


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
        process_values: Sequence[str] = ("*",),
    ) -> None:
        self.endpoint = endpoint
        self.tool_code = tool_code
        self.queue = queue
        self.timeout = timeout
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
        self.dropped = 0  # notifications dropped because the queue was full (a flood)
        self.high_water = 0  # most events ever waiting in the queue
        self.process_value_names: frozenset[str] = frozenset()
        self.load_ports: Node | None = None  # optional in the tool model
        self._subscription: Any = None

    # --- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        trust = self._configure_trust()
        try:
            if self.security.enabled:
                await self._set_security()
            await self.client.connect()
        except ua.UaError as exc:
            raise await self._explain(exc, trust) from exc
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
        optional = [(m.CHAMBERS,), (m.COUNTERS, (m.NS_FAB, m.LOAD_PORTS))]
        found = await self._children(self.machine, [*required.values(), *optional])
        missing = [name for name, node in zip(required, found, strict=False) if node is None]
        if missing:
            raise ToolModelError(f"{self.tool_code}: the tool model lacks {', '.join(missing)}")
        nodes = dict(zip(required, found, strict=False))
        self.job_control = _present(nodes.pop("JobOrderControl"))
        self.job_results = _present(nodes.pop("JobOrderResults"))
        self.recipes = _present(nodes.pop("Recipes"))
        process_data = _present(nodes.pop("ProcessData"))
        self.nodes = {name: _present(node) for name, node in nodes.items()}
        self.process_value_names = frozenset()
        if self.process_values:
            # The analog values the tool publishes under ProcessData that the settings select
            # (all by default), whatever the tool model calls them: summarised per job and wafer.
            offered = {
                str(d.BrowseName.Name): d.NodeId
                for d in await process_data.get_children_descriptions()
                if d.NodeClass == ua.NodeClass.Variable
                and d.BrowseName.Name not in NOT_PROCESS_VALUES
            }
            chosen = mapping.selected_process_values(offered, self.process_values)
            self.nodes.update({name: self.client.get_node(offered[name]) for name in chosen})
            self.process_value_names = chosen
        chambers, self.load_ports = found[-2], found[-1]
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
        # The standard markers around a ConditionRefresh (how stale MES alarms are found).
        self.event_types += [
            self.client.get_node(ua.NodeId(ua.ObjectIds.RefreshStartEventType)),
            self.client.get_node(ua.NodeId(ua.ObjectIds.RefreshEndEventType)),
        ]

    def _configure_trust(self) -> certificates.ServerTrustList | None:
        if not (self.security.enabled and self.security.trust_dir):
            return None
        trust = certificates.ServerTrustList(Path(self.security.trust_dir))
        self.client.certificate_validator = trust
        return trust

    async def _set_security(self) -> None:
        sec = self.security
        if not (sec.certificate and sec.private_key):
            raise ValueError("OPC UA security needs a client certificate and private key")
        # The tool checks the application URI we announce against our certificate's.
        self.client.application_uri = certificates.application_uri(Path(sec.certificate))
        await self.client.set_security(
            getattr(security_policies, f"SecurityPolicy{sec.policy}"),
            certificate=sec.certificate,
            private_key=sec.private_key,
            server_certificate=sec.server_certificate,
            mode=getattr(ua.MessageSecurityMode, sec.mode),
        )

    async def _explain(
        self, exc: Exception, trust: certificates.ServerTrustList | None
    ) -> Exception:
        """Turn a failed connect into an error that says which side refused what, and what to
        do about it; anything else (a tool that is down, say) is left as it is."""
        sec = self.security
        if trust is not None and trust.refused is not None:
            refused = trust.refused
            advice = (
                f"put it into the MES trust folder {trust.folder}"
                if refused.status == "BadCertificateUntrusted"
                else "the tool needs a valid server certificate naming its application URI"
            )
            return SecurityRefused(
                f"the MES refused the tool's certificate "
                f"({certificates.describe(refused.certificate)}; {refused.status}): {advice}"
            )
        if isinstance(exc, ua.UaStatusCodeError) and exc.code in _CERTIFICATE_REFUSALS:
            return SecurityRefused(
                f"the tool refused the MES client certificate {sec.certificate} "
                f"({ua.StatusCode(exc.code).name}): add it to the tool's trust list "
                "(simulated tools: `mes-sims trust CERT`, or move it from rejected/ to trusted/)"
            )
        offered = await self._offered_endpoints()
        wanted = (sec.policy, sec.mode if sec.enabled else "None_")
        if offered is not None and wanted not in offered:
            listed = ", ".join(f"{p}/{mo.rstrip('_')}" for p, mo in sorted(offered)) or "none"
            return SecurityRefused(
                f"the tool offers no endpoint with security {sec.policy}"
                f"{'/' + sec.mode if sec.enabled else ''} (it offers {listed}): "
                "set MES_OPCUA_SECURITY_POLICY / MES_OPCUA_SECURITY_MODE to match"
            )
        return exc

    async def _offered_endpoints(self) -> set[tuple[str, str]] | None:
        """(policy, mode) of each endpoint the tool offers; None if it cannot be asked. Only
        asked after a failed connect, to tell a security mismatch from other failures."""
        probe = Client(self.endpoint, timeout=self.timeout)
        try:
            endpoints = await probe.connect_and_get_server_endpoints()
        except Exception:
            return None
        return {
            (
                str(e.SecurityPolicyUri).rsplit("#", 1)[-1],
                ua.MessageSecurityMode(e.SecurityMode).name,
            )
            for e in endpoints
        }

    async def subscribe(self) -> None:
        self._subscription = await self.client.create_subscription(self.publishing_ms, self)
        await self._subscription.subscribe_events(
            # The tool may hold as many events for us as the adapter will queue (a flood past
            # that overflows ours too, and the adapter resynchronises).
            self.client.nodes.server,
            self.event_types,
            queuesize=max(self.queue.maxsize, 1000),
        )
        nodes = list(self.nodes.values())
        self.names = {node.nodeid: name for name, node in self.nodes.items()}
        await self._subscription.subscribe_data_change(nodes, queuesize=10)

    async def close(self) -> None:
        """Say goodbye politely for up to 2 s, then cut the connection. ``asyncio.wait`` and
        not ``wait_for``: the latter waits for a stuck disconnect to take its cancellation,
        and a half-dead tool must never keep an adapter from stopping."""
        disconnect = asyncio.ensure_future(self.client.disconnect())
        done, _ = await asyncio.wait({disconnect}, timeout=2.0)
        if disconnect in done:
            with contextlib.suppress(Exception):
                disconnect.result()
        else:
            disconnect.cancel()
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
        self._put(mapping.ValueChange(name, val, at))

    def event_notification(self, event: Any) -> None:
        self._seen()
        try:
            parsed = self._parse_event(event)
        except Exception as exc:
            log.warning("%s: unreadable event quarantined: %s", self.tool_code, exc)
            parsed = mapping.Unreadable(
                kind=type(event).__name__,
                payload=repr(event)[:4000],
                error=f"{type(exc).__name__}: {exc}"[:2000],
                at=_utc(getattr(event, "Time", None)),
                sequence=_sequence_of(event),
            )
        if parsed is not None:
            self._put(parsed)

    def _put(self, event: mapping.ToolEvent) -> None:
        """Queue for the adapter; a full queue (the adapter's bound) drops it and counts, and
        the adapter then rebuilds the session: memory stays bounded in a flood."""
        try:
            self.queue.put_nowait((self.last_message_at, event))
            self.high_water = max(self.high_water, self.queue.qsize())
        except asyncio.QueueFull:
            if not self.dropped:
                log.warning(
                    "%s: event queue full (%d): dropping", self.tool_code, self.queue.maxsize
                )
            self.dropped += 1

    def status_change_notification(self, status: Any) -> None:
        log.warning("%s: subscription status %s", self.tool_code, status)
        self.failed = ConnectionError(f"subscription status {status}")

    def _parse_event(self, e: Any) -> mapping.ToolEvent | None:
        at = _utc(getattr(e, "Time", None))
        if e.EventType in (_REFRESH_START, _REFRESH_END):
            return mapping.AlarmRefresh(end=e.EventType == _REFRESH_END, at=at)
        # Every field is held to the tool contract (mapping.whole, text_field, known_value):
        # a wrong type or a value out of range makes the event Unreadable (quarantined).
        if e.EventType == self.job_type:
            return mapping.JobEvent(
                job_order_id=mapping.text_field(e.JobOrderID, "JobOrderID", mapping.MAX_ID),
                state=mapping.known_value(e.JobState, "JobState", m.JobState),
                substate=mapping.known_value(e.JobSubstate, "JobSubstate", m.JobSubstate),
                response=mapping.text_field(e.JobResponse, "JobResponse", 4_000_000),
                sequence=mapping.whole(e.Sequence, "Sequence", 0, mapping.MAX_SEQUENCE),
                at=at,
            )
        if e.EventType == self.substrate_type:
            return mapping.SubstrateEvent(
                job_order_id=mapping.text_field(e.JobOrderID, "JobOrderID", mapping.MAX_ID),
                lot_id=mapping.text_field(e.LotID, "LotID", mapping.MAX_ID),
                substrate_id=mapping.text_field(e.SubstrateID, "SubstrateID", mapping.MAX_ID),
                slot=mapping.whole(e.Slot, "Slot", 0, mapping.MAX_SLOT),
                chamber=mapping.text_field(e.Chamber, "Chamber", mapping.MAX_ID),
                state=mapping.known_value(e.SubstrateState, "SubstrateState", m.SubstrateState),
                measurements=mapping.finite(e.Measurements or []),
                sequence=mapping.whole(e.Sequence, "Sequence", 0, mapping.MAX_SEQUENCE),
                at=at,
            )
        if e.EventType == self.alarm_type:
            message = getattr(e, "Message", None)
            code = mapping.text_field(e.ConditionName, "ConditionName", 64)
            if not code:
                raise ValueError("an alarm without ConditionName")
            return mapping.AlarmEvent(
                code=code,
                text=mapping.text_field(
                    getattr(message, "Text", "") or "", "Message", mapping.MAX_ALARM_TEXT, cut=True
                ),
                severity=mapping.whole(e.Severity, "Severity", 1, 1000),
                breaking=_flag(e.Breaking, "Breaking"),
                active=_flag(getattr(e, "ActiveState/Id"), "ActiveState/Id"),
                acked=_flag(getattr(e, "AckedState/Id"), "AckedState/Id"),
                at=at,
            )
        return None

    # --- reads ----------------------------------------------------------------------------
    async def read(self, name: str) -> Any:
        return await self.nodes[name].read_value()

    async def carriers_on_ports(self) -> dict[str, frozenset[int]] | None:
        """The carriers on the tool's load ports with the slots its mapper found occupied;
        None when the tool does not report its load ports."""
        if self.load_ports is None:
            return None
        return mapping.carriers_on_ports(str(await self.load_ports.read_value()))

    async def probe(self, within: float) -> None:
        """A cheap round trip: does the server still answer?"""
        async with asyncio.timeout(within):
            await self.client.nodes.server_state.read_value()

    async def snapshot(self) -> dict[str, Any]:
        """Every watched variable in one Read: a take-over of a hundred tools costs a round trip
        per tool here, not one per variable."""
        names = list(self.nodes)
        results = await self.client.read_attributes([self.nodes[n] for n in names])
        for result in results:
            result.StatusCode.check()  # as a single read_value would: a Bad status raises
        return {
            name: result.Value.Value if result.Value is not None else None
            for name, result in zip(names, results, strict=True)
        }

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
            if exc.code in DEFINITE_REFUSALS:
                raise ToolRefused(f"{method} refused by the tool: {exc}") from exc
            # A timeout or a server fault says nothing about whether the tool acted: the job
            # may have started. End the session; the reconnect reconciles the job with what
            # the tool says about it, instead of failing a job that may be running.
            raise OutcomeUnknown(f"{method}: no definite answer from the tool: {exc}") from exc

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
            response, state = await self.job_results.call_method(
                f"{self.ns[m.NS_ISA95_JOBS]}:{m.REQUEST_JOB_RESPONSE}", job_order_id
            )
        except ua.UaStatusCodeError as exc:
            if exc.code == ua.StatusCodes.BadNotFound:
                return None
            raise
        try:
            return mapping.parse_job_response(str(response))
        except (ValueError, TypeError) as exc:
            raise UnreadableJobResponse(str(response)[:4000], state, exc) from exc


def _sequence_of(event: Any) -> int | None:
    """The Sequence of an event that could not be read as a whole: it still counts as
    received, so a bad message is not taken for lost ones."""
    try:
        return mapping.whole(getattr(event, m.EVENT_SEQUENCE, None), "Sequence", 0, 2**53)
    except (TypeError, ValueError):
        return None


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a Boolean, got {type(value).__name__} {value!r:.60}")
    return value


def _present(node: Node | None) -> Node:
    if node is None:
        raise ToolModelError("the tool model lacks a node the adapter needs")
    return node


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
