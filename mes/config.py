"""Service settings, read from the environment (prefix ``MES_``) and an optional ``.env`` file.

Settings are built in ``create_app`` or the CLI, never at import time, so that tests can build
an app per database.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
    api_max_page_size: int = Field(default=500, ge=1, le=10_000)
