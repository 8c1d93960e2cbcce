"""The equipment service: E10 state changes and the equipment side of a track-in here, and the
face of the package for other domains and the router, re-exporting what they use from

- ``tools``: installation, look-up, master data, the substate table, ``record_state``;
- ``history``: the state history with corrections, re-qualification of past time;
- ``pm``: PM plans, their status, starting and completing a PM, the due list;
- ``signals``: signals and alarms from the tools, the silence watchdog.

A tool never needs to know about lots: what runs on it is asked from above (``start_pm`` takes
a lot count; reticles are chosen by ``durables.service.admit_lot``, which calls ``admit_lot``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.equipment import states, wip
from mes.equipment.history import (
    corrections,
    history,
    qualify_time,
    state_history,
    unexplained_time,
)
from mes.equipment.models import Chamber, Equipment, EquipmentStateEvent, StateChangeSource
from mes.equipment.pm import (
    DueRow,
    LotCount,
    change_plan,
    check_not_due,
    complete_pm,
    create_plan,
    get_plan,
    list_plans,
    open_pm,
    plan_view,
    plans_for,
    pm_due,
    pm_states,
    pm_states_many,
    start_pm,
    usage_since_pm,
)
from mes.equipment.schemas import StateChange
from mes.equipment.signals import detect_silent_tools, report_signal
from mes.equipment.tools import (
    LOAD_OPTIONS,
    EquipmentFilter,
    Installation,
    allowed_substates,
    chamber_of,
    check_version,
    create_equipment,
    create_substate,
    equipment_query,
    get_equipment,
    install,
    list_substates,
    record_state,
    retire_substate,
    update_equipment,
    validated_substate,
)
from mes.errors import InvalidInput, RuleViolation

__all__ = [
    "LOAD_OPTIONS",
    "DueRow",
    "EquipmentFilter",
    "Installation",
    "LotCount",
    "admit_lot",
    "allowed_substates",
    "chamber_of",
    "change_plan",
    "change_state",
    "check_not_due",
    "check_version",
    "complete_pm",
    "corrections",
    "create_equipment",
    "create_plan",
    "create_substate",
    "detect_silent_tools",
    "equipment_query",
    "get_equipment",
    "get_plan",
    "history",
    "install",
    "list_plans",
    "list_substates",
    "open_pm",
    "plan_view",
    "plans_for",
    "pm_due",
    "pm_states",
    "pm_states_many",
    "qualify_time",
    "record_state",
    "report_signal",
    "retire_substate",
    "start_pm",
    "state_history",
    "unexplained_time",
    "update_equipment",
    "usage_since_pm",
    "validated_substate",
]


async def change_state(
    session: AsyncSession,
    code: str,
    change: StateChange,
    *,
    actor: str,
    clock: Clock,
    source: StateChangeSource = StateChangeSource.API,
) -> Equipment:
    """Put a tool (or one chamber) into an E10 state and record the transition."""
    tool = await get_equipment(session, code, for_update=True)
    check_version(tool, change.version)
    substate = await validated_substate(session, change.state, change.substate)
    now = clock.now()
    occurred_at = change.occurred_at or now
    if occurred_at > now:
        raise InvalidInput(
            "a state change cannot take effect in the future", code="tool.future_time"
        )
    chamber = chamber_of(tool, change.chamber)
    since = await _current_state_since(session, tool, chamber)
    if since is not None and occurred_at < since:
        raise InvalidInput(
            "a state change cannot take effect before the current state began",
            code="tool.time_before_current_state",
        )
    if chamber is None and change.state != states.E10State.SDT:
        await _refuse_leaving_open_pm(session, tool, change.state)
    record_state(
        session,
        tool,
        change.state,
        substate,
        actor=actor,
        at=occurred_at,
        recorded_at=now,
        source=source,
        reason=change.reason,
        chamber=chamber,
        lots_running=await wip.lots_running(session, tool.id) if chamber is not None else 0,
    )
    tool.last_signal_at = now
    await session.flush()
    return tool


async def _current_state_since(
    session: AsyncSession, tool: Equipment, chamber: Chamber | None
) -> datetime | None:
    """When the tool's (or the chamber's) current state began: a back-dated change may not
    reach before it, or the history would hold two states at once (None: a chamber that never
    changed state)."""
    if chamber is None:
        return tool.state_since
    last = await session.scalar(
        select(func.max(EquipmentStateEvent.occurred_at)).where(
            EquipmentStateEvent.chamber_id == chamber.id
        )
    )
    return last


async def _refuse_leaving_open_pm(
    session: AsyncSession, tool: Equipment, state: states.E10State
) -> None:
    """A tool whose PM is in progress leaves SDT by completing the PM, not by a state change.

    Failures during the PM (UDT) are allowed: they are what happened.
    """
    if state == states.E10State.UDT:
        return
    if await open_pm(session, tool.id) is not None:
        raise RuleViolation(
            "pm.in_progress",
            f"tool {tool.code} has a PM in progress; complete it to return the tool to production",
        )


async def admit_lot(session: AsyncSession, tool: Equipment, *, wafers: int, now: datetime) -> None:
    """The equipment side of a track-in on the locked ``tool``: no PM due; counts the wafers
    on the tool (PM plans by wafer count measure against it)."""
    await check_not_due(session, tool, now)
    tool.wafers_processed += wafers
