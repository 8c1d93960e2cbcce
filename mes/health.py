"""Liveness and readiness probes (outside /api/v1, no authentication)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from mes.db.engine import Database
from mes.db.migrate import head_revision, schema_readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class Readiness(BaseModel):
    status: str
    database: str
    detail: str | None = None
    schema_revision: str | None = None
    expected_revision: str | None = None


# A probe's answer for load balancers, in its own shape (not a problem): 503 until ready.
@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: database or schema"}},
)
async def readyz(request: Request) -> JSONResponse:
    """The database answers and its schema suits this build: at the migration head it expects,
    or newer by migrations that only add (a rolling upgrade runs the migration job first)."""
    db: Database = request.app.state.db
    settings = request.app.state.settings
    try:
        # Bounded: a database that stalls makes the probe answer "not ready", not hang.
        async with asyncio.timeout(settings.database_connect_timeout_s):
            async with db.read_sessions() as session:
                await session.execute(text("SELECT 1"))
            revision, verdict = await schema_readiness(db.engine)
    except Exception as exc:  # readiness reports any failure instead of raising it
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "detail": type(exc).__name__},
            status_code=503,
            headers={"Retry-After": str(settings.database_retry_after_s)},
        )
    return JSONResponse(
        {
            "status": "ok" if verdict.ready else "unavailable",
            "database": "ok",
            "detail": verdict.detail,
            "schema_revision": revision,
            "expected_revision": head_revision(),
        },
        status_code=200 if verdict.ready else 503,
    )
