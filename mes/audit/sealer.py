"""The background loop that links new audit records into the hash chain (``service.seal``)."""

from __future__ import annotations

import asyncio
import logging

from mes.audit import service as audit_service
from mes.clock import Clock
from mes.db.engine import Database
from mes.db.transaction import unit_of_work

log = logging.getLogger(__name__)


async def seal_audit_forever(db: Database, clock: Clock, interval_s: float) -> None:
    """Link new audit records into the hash chain, shortly after they commit."""
    while True:
        try:
            while True:
                async with unit_of_work(db) as session:
                    sealed = await audit_service.seal(session, clock=clock)
                if sealed < audit_service.SEAL_BATCH:
                    break
        except Exception:  # keep sealing after a transient database error
            log.exception("audit sealing failed; retrying")
        await asyncio.sleep(interval_s)
