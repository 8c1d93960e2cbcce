"""The audit trail (supervisors and administrators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mes.audit import service
from mes.audit.schemas import AuditEventRead
from mes.auth import roles
from mes.auth.dependencies import requires
from mes.db.transaction import ReadSession
from mes.fabs import service as fabs_service
from mes.kit.api import CodeStr, Page, PageQuery, Timestamp, fetch_page

router = APIRouter(tags=["audit"])

Text = Annotated[str | None, Query(max_length=96)]


@router.get(
    "/audit",
    response_model=Page[AuditEventRead],
    dependencies=[requires(roles.AUDIT_READ)],
)
async def list_audit(
    session: ReadSession,
    page: PageQuery,
    actor: Text = None,
    operation: Text = None,
    target_type: Text = None,
    target_id: Text = None,
    fab: Annotated[CodeStr | None, Query()] = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
) -> Page[AuditEventRead]:
    """Audit records, newest first, filterable by actor, operation, target, fab and time."""
    fab_id = (await fabs_service.get_fab(session, fab)).id if fab is not None else None
    flt = service.AuditFilter(
        actor=actor,
        operation=operation,
        target_type=target_type,
        target_id=target_id,
        fab_id=fab_id,
        since=since,
        until=until,
    )
    rows, total = await fetch_page(session, service.audit_query(flt), page)
    return Page(
        items=[AuditEventRead.model_validate(r) for r in rows], total=total, **page.model_dump()
    )
