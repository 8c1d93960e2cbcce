"""The adapter's transactions: leases, connection state, the outbox, and applying tool events.

Each public function runs inside one ``unit_of_work`` opened by the adapter, so one tool event
is one transaction: the idempotency claim (a key from the tool's own ids), the lease check and
every change the event causes commit or roll back together.

The package's face: the functions live in ``tools``, ``leases``, ``connections``, ``outbox``,
``events``, ``alarms`` and ``reconciliation``, and are re-exported here for the adapter.
"""

from __future__ import annotations

from mes.opcua.alarms import apply_alarm, close_unreported_alarms
from mes.opcua.connections import ConnectionView, connection_of, publish_connection, stamp_signals
from mes.opcua.events import (
    apply_control_state,
    apply_item_state,
    apply_job_event,
    apply_substrate_event,
)
from mes.opcua.leases import acquire, next_expiry, owns, release, renew
from mes.opcua.outbox import claim_send, clear_command, fail_job, work_for_tool
from mes.opcua.quarantine import (
    EVENTS_LOST_ALARM,
    dead_letters,
    quarantine,
    raise_mes_alarm,
)
from mes.opcua.reconciliation import open_job_ids, reconcile_job
from mes.opcua.tools import ToolRef, bind_adapter, principal_for, tools_to_serve

__all__ = [
    "EVENTS_LOST_ALARM",
    "ConnectionView",
    "ToolRef",
    "acquire",
    "apply_alarm",
    "apply_control_state",
    "apply_item_state",
    "apply_job_event",
    "apply_substrate_event",
    "bind_adapter",
    "claim_send",
    "clear_command",
    "close_unreported_alarms",
    "connection_of",
    "dead_letters",
    "fail_job",
    "next_expiry",
    "open_job_ids",
    "owns",
    "principal_for",
    "publish_connection",
    "quarantine",
    "raise_mes_alarm",
    "reconcile_job",
    "release",
    "renew",
    "stamp_signals",
    "tools_to_serve",
    "work_for_tool",
]
