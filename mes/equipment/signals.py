"""Signs of life from the tools: a signal (with a breaking alarm, UDT.ALARM), and the silence
watchdog that puts tools which should be up but went quiet into UDT.NO_SIGNAL, with the
background loop the service runs it in."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.context import AuditContext, bind
from mes.clock import Clock
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.equipment import states
from mes.equipment.models import Equipment, StateChangeSource
from mes.equipment.schemas import SignalReport
from mes.equipment.tools import get_equipment, record_state

log = logging.getLogger(__name__)


async def report_signal(
    session: AsyncSession, code: str, report: SignalReport, *, actor: str, clock: Clock
) -> Equipment:
    """A tool (its adapter) says it is alive; a breaking alarm puts it into UDT.ALARM."""
    tool = await get_equipment(session, code, for_update=True)
    now = clock.now()
    tool.last_signal_at = now
    if report.alarm is not None and report.breaking and tool.e10_state != states.E10State.UDT:
        record_state(
            session,
            tool,
            states.E10State.UDT,
            states.ALARM,
            actor=actor,
            at=now,
            recorded_at=now,
            source=StateChangeSource.TOOL,
            reason=f"breaking alarm {report.alarm}",
        )
    await session.flush()
    return tool


async def detect_silent_tools(session: AsyncSession, clock: Clock, silence_s: float) -> list[str]:
    """Put tools that should be up but sent nothing for ``silence_s`` into UDT.NO_SIGNAL.

    Only tools with an OPC UA endpoint are watched (a tool without an adapter never signals).
    The NO_SIGNAL state takes effect at the last signal: the silent time is what a technician
    is then asked to qualify (``qualify_time``).
    """
    now = clock.now()
    cutoff = now - timedelta(seconds=silence_s)
    last = func.coalesce(Equipment.last_signal_at, Equipment.state_since)
    candidates = list(
        await session.scalars(
            select(Equipment.code)
            .where(
                Equipment.opcua_endpoint.is_not(None),
                Equipment.e10_state.in_(sorted(states.UP_STATES)),
                last < cutoff,
            )
            .order_by(Equipment.id)
        )
    )
    silenced = []
    for code in candidates:
        tool = await get_equipment(session, code, for_update=True)
        reference = max(tool.last_signal_at or tool.state_since, tool.state_since)
        if tool.e10_state not in states.UP_STATES or reference >= cutoff:
            continue  # changed since we looked
        record_state(
            session,
            tool,
            states.E10State.UDT,
            states.NO_SIGNAL,
            actor="system",
            at=reference,
            recorded_at=now,
            source=StateChangeSource.SYSTEM,
            reason=f"no signal from the tool for {silence_s:.0f} s",
        )
        silenced.append(code)
    await session.flush()
    return silenced


async def watch_signals_forever(db: Database, clock: Clock, timeout_s: float) -> None:
    """Put silent tools into UDT.NO_SIGNAL, checking a few times per timeout."""
    interval = min(max(timeout_s / 4, 1.0), 60.0)
    while True:
        try:
            async with unit_of_work(db) as session:
                bind(
                    session,
                    AuditContext(
                        actor="system",
                        role="system",
                        operation="equipment.detect_silent_tools",
                        at=clock.now(),
                    ),
                )
                silenced = await detect_silent_tools(session, clock, timeout_s)
            if silenced:
                log.warning("no signal from %s: put into UDT.NO_SIGNAL", ", ".join(silenced))
        except Exception:  # keep watching after a transient database error
            log.exception("signal watchdog failed; retrying")
        await asyncio.sleep(interval)
