"""Building an adapter registry from settings (used by the service lifespan and the CLI)."""

from __future__ import annotations

import logging

from mes.clock import Clock
from mes.config import Settings
from mes.db.engine import Database
from mes.opcua import mapping
from mes.opcua.adapter import AdapterSettings
from mes.opcua.client import Security
from mes.opcua.registry import AdapterRegistry, default_owner

log = logging.getLogger(__name__)


def adapter_settings(settings: Settings, owner: str | None = None) -> AdapterSettings:
    """Raises ValueError on unusable security files, so a misconfigured adapter stops at
    start-up instead of failing every connect."""
    security = Security(
        policy=settings.opcua_security_policy,
        mode=settings.opcua_security_mode,
        certificate=settings.opcua_certificate,
        private_key=settings.opcua_private_key,
        trust_dir=settings.opcua_trust_dir,
    )
    security.check()
    if security.enabled and security.trust_dir is None:
        log.warning(
            "OPC UA %s without MES_OPCUA_TRUST_DIR: any tool certificate is accepted",
            security.policy,
        )
    return AdapterSettings(
        owner=owner or default_owner(),
        stale_s=settings.adapter_stale_s,
        reconnect_min_s=settings.adapter_reconnect_min_s,
        reconnect_max_s=settings.adapter_reconnect_max_s,
        timeout_s=settings.adapter_timeout_s,
        aborted_hold=settings.adapter_aborted_hold,
        alarm_rules=mapping.parse_alarm_rules(settings.alarm_rules),
        process_values=mapping.parse_patterns(settings.adapter_process_values),
        security=security,
        max_queued_events=settings.adapter_max_queued_events,
    )


def build_registry(
    db: Database,
    clock: Clock,
    settings: Settings,
    *,
    fab: str | None = None,
    shard: str | None = None,
    owner: str | None = None,
) -> AdapterRegistry:
    return AdapterRegistry(
        db,
        clock,
        adapter_settings(settings, owner),
        fab=fab if fab is not None else settings.adapter_fab,
        shard=mapping.parse_shard(shard or settings.adapter_shard),
        lease_ttl_s=settings.adapter_lease_ttl_s,
        poll_s=settings.adapter_poll_s,
        connect_parallel=settings.adapter_connect_parallel,
    )
