"""Service settings, read from the environment (prefix ``MES_``) and an optional ``.env`` file.

Settings are built in ``create_app`` or the CLI, never at import time, so that tests can build
an app per database.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("var") / "mes.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MES_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://…",
    )
    database_echo: bool = False
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # SQLite waits this long for the single writer lock before failing with "database is locked".
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"
    # Signing key of access tokens. Set it (same value on every replica) in production; when
    # unset, each process makes a random one and tokens do not survive a restart.
    jwt_secret: SecretStr | None = None
    access_token_ttl_s: int = Field(default=900, ge=60, le=24 * 3600)
    # An e-signature without the password again is accepted within this time of a login.
    esign_max_age_s: int = Field(default=300, ge=0, le=3600)
    login_max_failures: int = Field(default=5, ge=1, le=100)
    login_lockout_s: int = Field(default=900, ge=1, le=24 * 3600)
    audit_seal_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # A tool with an OPC UA endpoint that should be up and has sent nothing for this long goes
    # to UDT.NO_SIGNAL (0: the watchdog is off, e.g. while no adapter runs).
    signal_timeout_s: float = Field(default=0, ge=0, le=7 * 24 * 3600)
