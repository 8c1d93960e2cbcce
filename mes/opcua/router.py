"""``GET /equipment/{tool}/connection``: how the tool's adapter connection is doing; and
``GET /equipment/{tool}/dead-letters``: the messages from the tool the MES refused."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from mes.db.transaction import ReadSession
from mes.equipment import service as equipment_service
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


class DeadLetterRead(BaseModel):
    id: int
    received_at: datetime
    kind: str
    payload: str
    error: str


@router.get("/{tool}/dead-letters", response_model=list[DeadLetterRead])
async def dead_letters(tool: CodePath, session: ReadSession) -> list[DeadLetterRead]:
    """The latest 100 messages from the tool that the MES could not apply (unreadable values
    such as NaN, or refused while applying), newest first, as they came."""
    equipment = await equipment_service.get_equipment(session, tool)
    return [
        DeadLetterRead(
            id=d.id, received_at=d.received_at, kind=d.kind, payload=d.payload, error=d.error
        )
        for d in await service.dead_letters(session, equipment.id)
    ]
