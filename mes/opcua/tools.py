"""The tools one adapter process serves, and who it acts as on their behalf."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind
from mes.auth.roles import Role
from mes.auth.service import Principal
from mes.equipment.models import Equipment
from mes.opcua import mapping


@dataclass(frozen=True)
class ToolRef:
    id: int
    code: str
    fab_id: int
    endpoint: str


def principal_for(tool: ToolRef) -> Principal:
    """Who the adapter acts as: the tool itself (an equipment-role service identity)."""
    return Principal(
        user_id=0,
        username=f"opcua:{tool.code}"[:64],
        kind=AccountKind.SERVICE,
        roles=frozenset({Role.EQUIPMENT}),
        auth_time=None,
    )


def bind_adapter(session: AsyncSession, tool: ToolRef, operation: str, now: datetime) -> None:
    bind(
        session,
        AuditContext(
            actor=principal_for(tool).username, role="equipment", operation=operation, at=now
        ),
    )


async def tools_to_serve(
    session: AsyncSession, *, fab: str | None, shard: tuple[int, int]
) -> list[ToolRef]:
    """Tools with an OPC UA endpoint in the fab (all fabs: None) that fall in this shard."""
    from mes.fabs.models import Fab

    stmt = select(Equipment.id, Equipment.code, Equipment.fab_id, Equipment.opcua_endpoint).where(
        Equipment.opcua_endpoint.is_not(None)
    )
    if fab is not None:
        stmt = stmt.join(Fab, Fab.id == Equipment.fab_id).where(Fab.code == fab)
    index, count = shard
    return [
        ToolRef(id=i, code=c, fab_id=f, endpoint=e or "")
        for i, c, f, e in (await session.execute(stmt.order_by(Equipment.id))).all()
        if mapping.shard_of(c, count) == index
    ]
