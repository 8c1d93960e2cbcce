"""Service settings, read from the environment (prefix ``MES_``) and an optional ``.env`` file.

Settings are built in ``create_app`` or the CLI, never at import time, so that tests can build
an app per database.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("var") / "mes.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MES_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://…",
    )
    database_echo: bool = False
    # PostgreSQL: connections a process keeps, opened as needed (its peak: pool size + overflow).
    database_pool_size: int = Field(default=20, ge=1, le=200)
    # Connections opened beyond the pool for a burst and closed as soon as they are returned.
    # 0 by default: under a steady load just above the pool size they were opened and closed
    # several times a second (a PostgreSQL backend started each time, every statement prepared
    # again), which cost two service workers more CPU per move than one (docs/performance.md).
    database_max_overflow: int = Field(default=0, ge=0, le=200)
    # PostgreSQL: a pooled connection idle this long is pinged before use (0: every checkout).
    database_ping_idle_s: float = Field(default=1.0, ge=0, le=3600)
    # SQLite waits this long for the single writer lock before failing with "database is locked".
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    # Bounds on waiting for PostgreSQL, so that a request fails (503, Retry-After) instead of
    # hanging while the database refuses or stalls: opening a connection, one statement (the
    # commit included), and waiting for a free connection of the pool.
    database_connect_timeout_s: float = Field(default=5.0, gt=0, le=600)
    database_command_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    database_pool_timeout_s: float = Field(default=5.0, gt=0, le=600)
    # What a 503 for an unavailable or locked database tells the client to wait before retrying.
    database_retry_after_s: int = Field(default=5, ge=1, le=3600)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Service processes of ``mes serve`` (mes.serving: one socket each, SO_REUSEPORT).
    workers: int = Field(default=1, ge=1, le=64)
    log_level: str = "info"
    # One JSON object per log line (request id, actor) for a log collector, or text lines.
    log_format: str = Field(default="text", pattern=r"^(text|json)$")
    # Prometheus metrics: /metrics on the API (unauthenticated: route templates, fab codes and
    # problem codes, no business data; keep it on the cluster network); the roles without HTTP
    # (adapters, dispatcher) serve theirs on this port (unset or 0: none).
    metrics_enabled: bool = True
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Larger request bodies are refused (413) before they are read: a process-exchange import,
    # the largest body the API takes, is a few hundred kB for a fab.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024**3)
    # Signing key of access tokens. Set it (same value on every replica) in production; when
    # unset, each process makes a random one and tokens do not survive a restart.
    jwt_secret: SecretStr | None = None
    access_token_ttl_s: int = Field(default=900, ge=60, le=24 * 3600)
    # A verified bearer token is trusted for this long before its account is read again (0:
    # every request reads it). Account changes made through this process apply at once; made
    # through another (a second worker, the CLI), within this time (mes.auth.principals).
    auth_cache_s: float = Field(default=5.0, ge=0, le=300)
    # An e-signature without the password again is accepted within this time of a login.
    esign_max_age_s: int = Field(default=300, ge=0, le=3600)
    login_max_failures: int = Field(default=5, ge=1, le=100)
    login_lockout_s: int = Field(default=900, ge=1, le=24 * 3600)
    audit_seal_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # A tool with an OPC UA endpoint that should be up and has sent nothing for this long goes
    # to UDT.NO_SIGNAL (0: the watchdog is off, e.g. while no adapter runs).
    signal_timeout_s: float = Field(default=0, ge=0, le=7 * 24 * 3600)
    # How often the Q-time watch holds lots whose window ran out while they waited (0: off; a
    # track-in still refuses an expired lot).
    qtime_check_interval_s: float = Field(default=60, ge=0, le=3600)
    # The watch warns (event QTIME_WARNING, metric mes_qtime_warnings) once per window that has
    # less than this left, so the line can hurry the lot before it is held (0: no warnings).
    qtime_warn_s: float = Field(default=1800, ge=0, le=7 * 24 * 3600)
    # OPC UA adapters. Off by default (tests, and deployments that run ``mes adapters run`` as
    # their own processes); on, the service runs one registry for ``adapter_fab`` (all fabs when
    # unset) in its lifespan.
    adapters_enabled: bool = False
    adapter_fab: str | None = None
    adapter_shard: str = Field(default="0/1", pattern=r"^\d+/\d+$")
    adapter_lease_ttl_s: float = Field(default=15.0, gt=0.5, le=3600)
    adapter_poll_s: float = Field(default=0.5, gt=0, le=60)
    adapter_stale_s: float = Field(default=10.0, gt=0, le=3600)
    # Tool events waiting to be applied, per tool, at most (a flood past it is dropped and the
    # adapter resynchronises: memory stays bounded).
    adapter_max_queued_events: int = Field(default=10_000, ge=100, le=1_000_000)
    adapter_reconnect_min_s: float = Field(default=0.5, gt=0, le=600)
    adapter_reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)
    adapter_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # Tool sessions one adapter process sets up at once (after a start or a take-over).
    adapter_connect_parallel: int = Field(default=32, ge=1, le=1000)
    # A job the tool aborted sends its lot back to its step on hold EQUIPMENT (else just back).
    adapter_aborted_hold: bool = True
    # The tools' ProcessData variables the adapters keep per job and wafer: comma-separated
    # globs ("Chamber*,RfForwardPower"); empty: none.
    adapter_process_values: str = "*"
    # JSON list of alarm rules (mes.opcua.mapping.AlarmRule fields); empty: the default table.
    alarm_rules: str | None = None
    # OPC UA client security: "None", or "Basic256Sha256" (mode Sign or SignAndEncrypt) with
    # the MES's client certificate (DER or PEM) and unencrypted PEM key (`mes opcua
    # make-certificate`). ``opcua_trust_dir``: the tools' server certificates the MES trusts;
    # unset, any tool certificate is accepted (encrypted, but the tool is not authenticated).
    opcua_security_policy: str = Field(default="None", pattern=r"^(None|Basic256Sha256)$")
    opcua_security_mode: str = Field(default="SignAndEncrypt", pattern=r"^(Sign|SignAndEncrypt)$")
    opcua_certificate: str | None = None
    opcua_private_key: str | None = None
    opcua_trust_dir: str | None = None
    # Automatic dispatch (mes.dispatch.scheduler). Off unless an interval and fabs are given:
    # ``dispatch_fabs`` "F1,F2=advise" (auto: request the jobs; advise: log the decisions
    # only). Each replica runs a dispatcher; per fab, the holder of its lease leads.
    dispatch_interval_s: float = Field(default=0, ge=0, le=3600)
    dispatch_fabs: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-=,\s]*$")
    dispatch_lease_ttl_s: float = Field(default=90.0, gt=0.5, le=3600)
    dispatch_top_n: int = Field(default=5, ge=1, le=50)
    # Event-driven dispatch: a committed track-out, start, release or tool coming up wakes the
    # fab's dispatcher at once; cycles are at least this far apart (a busy line wakes it often).
    dispatch_min_gap_s: float = Field(default=1.0, ge=0, le=60)

    # Retention of the tables that grow forever by design (mes.retention), in days (0: keep
    # forever), and how often the service prunes them (0: never; `mes retention prune` does it
    # on demand).
    retention_dispatch_decisions_days: float = Field(default=30, ge=0)
    retention_idempotency_days: float = Field(default=7, ge=0)
    retention_state_events_days: float = Field(default=0, ge=0)
    retention_interval_s: float = Field(default=3600, ge=0, le=7 * 24 * 3600)

    # Morning reports (mes.reports.morning): an open hold older than this many hours is flagged
    # for escalation in the hold report.
    report_hold_escalation_h: float = Field(default=24, gt=0, le=24 * 365)

    # The releaser (mes.planning.releaser): off unless enabled; on, it releases the lots the
    # active start plans have due every ``release_interval_s``. Each replica runs one; per
    # fab, the holder of its lease releases.
    release_enabled: bool = False
    release_interval_s: float = Field(default=5.0, gt=0, le=3600)
    release_lease_ttl_s: float = Field(default=30.0, gt=0.5, le=3600)

    @model_validator(mode="after")
    def _security_has_credentials(self) -> Settings:
        # Refused here, at start-up, rather than at every connect (or by silently falling
        # back to no security).
        if self.opcua_security_policy != "None" and not (
            self.opcua_certificate and self.opcua_private_key
        ):
            raise ValueError(
                f"MES_OPCUA_SECURITY_POLICY={self.opcua_security_policy} needs "
                "MES_OPCUA_CERTIFICATE and MES_OPCUA_PRIVATE_KEY (make them with "
                "`mes opcua make-certificate`)"
            )
        return self
