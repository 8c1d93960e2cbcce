"""Process definitions as one JSON document: export, import (all-or-nothing), and its schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from mes.auth import roles
from mes.auth.dependencies import authenticated, requires, sign
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.exchange import service
from mes.exchange.schemas import ImportRequest, ImportSummary, ProcessDocument
from mes.kit.api import ClockDep, CodeStr

router = APIRouter(prefix="/process", tags=["process exchange"])

Reader = Annotated[Principal, Depends(authenticated)]
Importer = Annotated[Principal, requires(roles.PROCESS_IMPORT)]


@router.get("/export", response_model=ProcessDocument)
async def export(
    by: Reader,
    session: ReadSession,
    clock: ClockDep,
    product: Annotated[
        list[CodeStr] | None, Query(max_length=500, description="only these products")
    ] = None,
    qualifications: Annotated[
        bool, Query(description="include the qualification history of the exported recipes")
    ] = True,
) -> ProcessDocument:
    """Routes, recipes, context rules, parameter schemas and qualifications as one document
    (format ``mes-process/1``), to copy a process to another fab or keep it under version
    control."""
    return await service.export(
        session,
        products=product,
        include_qualifications=qualifications,
        now=clock.now(),
        actor=by.username,
    )


@router.post("/import", response_model=ImportSummary)
async def import_document(
    request: Request, body: ImportRequest, by: Importer, session: WriteSession
) -> ImportSummary:
    """Apply a process document exactly (e-signature): all-or-nothing, idempotent; versions
    that exist here with other content are conflicts (409 import.conflict), a document that
    is wrong in itself is refused (422 import.invalid) with every problem listed."""
    await sign(request, session, by, body.signature)
    return await service.import_document(session, body.document, dry_run=body.dry_run)


@router.get("/schema")
async def document_schema() -> dict[str, Any]:
    """The JSON Schema of the process document."""
    return ProcessDocument.model_json_schema()
