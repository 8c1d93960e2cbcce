"""Every Prometheus metric the MES exports, and the functions the domains record them with.

Cheap by design: a recording is a dictionary lookup and a lock-free add on a metric child;
figures that live objects already hold (database pools, adapter sessions) are read only when
Prometheus scrapes (``_Sampled``), costing nothing in between. Label values are bounded sets
(route templates, fab codes, declared problem codes, event kinds), never lot or tool codes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Seconds: an API request is milliseconds to a second; an import or a what-if start longer.
_FAST = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUEST_SECONDS = Histogram(
    "mes_http_request_duration_seconds",
    "HTTP requests by method, route template and status, from the first byte in to the last out.",
    ["method", "route", "status"],
    buckets=_FAST,
)
LOT_TRANSACTIONS = Counter(
    "mes_lot_transactions",
    "Lot transactions over HTTP by kind (the endpoint) and outcome: ok, or the problem code "
    "of the refusal.",
    ["kind", "outcome"],
)
DISPATCH_CYCLE_SECONDS = Histogram(
    "mes_dispatch_cycle_duration_seconds",
    "Dispatch cycles run as the fab's leader: snapshot, ranking and every decision's transaction.",
    ["fab"],
    buckets=_FAST,
)
DISPATCH_DECISIONS = Counter(
    "mes_dispatch_decisions",
    "Dispatch decisions by outcome (requested, advisory, waiting, none, refused, backoff).",
    ["fab", "outcome"],
)
QTIME_WARNINGS = Counter(
    "mes_qtime_warnings",
    "Q-time windows that entered their warning time (MES_QTIME_WARN_S before the deadline) "
    "while open, by fab: lots to hurry before the watch holds them.",
    ["fab"],
)
DISPATCH_LEADER = Gauge(
    "mes_dispatch_leader", "1 while this process leads the fab's dispatching, else 0.", ["fab"]
)
TOOL_EVENT_LAG_SECONDS = Histogram(
    "mes_tool_event_lag_seconds",
    "From an OPC UA notification's arrival in the adapter to its transaction's commit.",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TOOL_EVENTS = Counter(
    "mes_tool_events",
    "OPC UA tool events the adapters committed, by kind and outcome (applied, quarantined).",
    ["kind", "outcome"],
)
ADAPTER_OUTBOX_DEPTH = Gauge(
    "mes_adapter_outbox_depth",
    "Jobs waiting for this adapter process at its last outbox poll (requested, or carrying an "
    "operator command).",
)
AUDIT_SEAL_LAG_SECONDS = Gauge(
    "mes_audit_seal_lag_seconds",
    "Age of the oldest audit record the last sealing pass linked into the chain (0: nothing "
    "was waiting).",
)
AUDIT_RECORDS_SEALED = Counter(
    "mes_audit_records_sealed", "Audit records this process linked into the hash chain."
)
ROLE = Gauge("mes_role", "The process role(s) this process runs (value 1).", ["role"])


# Children by label values: ``labels()`` validates and locks on every call, which cost as much
# as the observation itself (8 of 16 µs on a loaded machine). The label sets are bounded, and
# a race only makes the same child twice.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *values: str) -> Any:
    key = (metric, *values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    _child(HTTP_REQUEST_SECONDS, method, route, str(status)).observe(seconds)


def lot_transaction(kind: str, outcome: str) -> None:
    _child(LOT_TRANSACTIONS, kind, outcome).inc()


def dispatch_cycle(fab: str, seconds: float) -> None:
    _child(DISPATCH_CYCLE_SECONDS, fab).observe(seconds)


def dispatch_decision(fab: str, outcome: str) -> None:
    _child(DISPATCH_DECISIONS, fab, outcome).inc()


def qtime_warning(fab: str) -> None:
    _child(QTIME_WARNINGS, fab).inc()


def dispatch_leading(fab: str, leading: bool) -> None:
    _child(DISPATCH_LEADER, fab).set(1 if leading else 0)


def tool_event(kind: str, outcome: str, lag_s: float) -> None:
    _child(TOOL_EVENTS, kind, outcome).inc()
    _child(TOOL_EVENT_LAG_SECONDS, kind).observe(max(0.0, lag_s))


def outbox_depth(jobs: int) -> None:
    ADAPTER_OUTBOX_DEPTH.set(jobs)


def audit_sealed(records: int, oldest_age_s: float) -> None:
    if records:
        AUDIT_RECORDS_SEALED.inc(records)
    AUDIT_SEAL_LAG_SECONDS.set(max(0.0, oldest_age_s))


def role(name: str) -> None:
    ROLE.labels(name).set(1)


# --- read at scrape time ---------------------------------------------------------------------


class HasEngine(Protocol):
    @property
    def engine(self) -> Any: ...


class HasSessions(Protocol):
    def session_states(self) -> Mapping[str, int]: ...


class _Sampled(Collector):
    """Gauges read from the live objects of this process when Prometheus scrapes."""

    def __init__(self) -> None:
        # Weak: a database or adapter registry that is gone drops out by itself (tests make
        # hundreds of databases).
        self.databases: weakref.WeakSet[Any] = weakref.WeakSet()
        self.registries: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = GaugeMetricFamily(
            "mes_db_pool_connections",
            "Connections of this process's database pools: in_use (checked out) or idle.",
            labels=["state"],
        )
        in_use = idle = 0
        for database in list(self.databases):
            engine_pool = database.engine.sync_engine.pool
            in_use += _call(engine_pool, "checkedout")
            idle += _call(engine_pool, "checkedin")
        pool.add_metric(["in_use"], in_use)
        pool.add_metric(["idle"], idle)
        yield pool
        sessions = GaugeMetricFamily(
            "mes_adapter_sessions",
            "Tool sessions of this process's OPC UA adapters by state.",
            labels=["state"],
        )
        totals: dict[str, int] = {}
        for registry in list(self.registries):
            for state, count in registry.session_states().items():
                totals[state] = totals.get(state, 0) + count
        for state, count in sorted(totals.items()):
            sessions.add_metric([state], count)
        yield sessions


def _call(pool: Any, name: str) -> int:
    # SQLite in memory runs on a StaticPool, which counts nothing.
    method = getattr(pool, name, None)
    return int(method()) if callable(method) else 0


SAMPLED = _Sampled()
REGISTRY.register(SAMPLED)


def watch_database(database: HasEngine) -> None:
    SAMPLED.databases.add(database)


def watch_adapters(registry: HasSessions) -> None:
    SAMPLED.registries.add(registry)


def unwatch_adapters(registry: HasSessions) -> None:
    SAMPLED.registries.discard(registry)
