"""``GET /equipment/{tool}/connection``: how the tool's adapter connection is doing."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from mes.db.transaction import ReadSession
from mes.kit.api import ClockDep, CodePath
from mes.opcua import service
from mes.opcua.models import ConnectionState

router = APIRouter(prefix="/equipment", tags=["equipment"])


class ConnectionRead(BaseModel):
    tool: str
    state: ConnectionState
    owner: str | None
    since: datetime | None
    lease_expires_at: datetime | None
    last_event_at: datetime | None
    last_error: str | None


@router.get("/{tool}/connection", response_model=ConnectionRead)
async def connection(tool: CodePath, session: ReadSession, clock: ClockDep) -> ConnectionRead:
    """The tool's OPC UA connection as its owning adapter last published it (connecting,
    connected, stale, disconnected), the adapter that holds its lease, since when, the last
    event applied (as of the last lease renewal) and the last error. A tool whose lease has
    expired (no live adapter) is disconnected with no owner."""
    view = await service.connection_of(session, tool, clock.now())
    return ConnectionRead(**view.__dict__)
