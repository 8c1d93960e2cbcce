"""Preventive maintenance: when a PM plan is due for a tool (pure, no I/O).

A plan triggers by calendar time (days since the last PM), by wafers processed since the last
PM, or by process hours (PRD time, the closest E10 proxy for RF/process hours) since the last
PM, with a warning window before it is due. A tool without a completed PM counts from the
plan's start (calendar) or from its installation (wafers, hours). A due PM blocks new
track-ins on the tool (the lots on it may finish) and the dispatcher; starting the PM puts the
tool into SDT.PM (E10 scheduled downtime), completing it returns the tool to SBY.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from mes.errors import RuleViolation


class PmTrigger(enum.StrEnum):
    CALENDAR = "calendar"  # interval and warning in days
    WAFERS = "wafers"  # in wafers processed
    PROCESS_HOURS = "process_hours"  # in hours of PRD time


class PmStatus(enum.StrEnum):
    OK = "ok"
    UPCOMING = "upcoming"  # inside the warning window
    DUE = "due"


UNITS = {PmTrigger.CALENDAR: "days", PmTrigger.WAFERS: "wafers", PmTrigger.PROCESS_HOURS: "hours"}


@dataclass(frozen=True)
class PmPlanView:
    code: str
    trigger: PmTrigger
    interval: float
    warning: float


@dataclass(frozen=True)
class PmUsage:
    """What the tool did since its last PM of the plan (or since the baseline)."""

    since: datetime
    wafers: int
    process_s: float


@dataclass(frozen=True)
class PmState:
    plan: PmPlanView
    status: PmStatus
    used: float  # in the trigger's unit
    remaining: float  # in the trigger's unit; negative when overdue
    due_at: datetime | None  # calendar plans only


MAX_CALENDAR_DAYS = 36_500


def check_plan(trigger: PmTrigger, interval: float, warning: float) -> None:
    if interval <= 0:
        raise RuleViolation("pm.invalid_plan", "a PM interval must be positive", status=422)
    if trigger == PmTrigger.CALENDAR and interval > MAX_CALENDAR_DAYS:
        # A due date past the calendar's end broke every dispatch list of the tool (a 500).
        raise RuleViolation(
            "pm.invalid_plan",
            f"a calendar PM interval is at most {MAX_CALENDAR_DAYS} days",
            status=422,
        )
    if not 0 <= warning < interval:
        raise RuleViolation(
            "pm.invalid_plan",
            f"the warning window must be at least 0 and less than the interval "
            f"({interval} {UNITS[trigger]})",
            status=422,
        )


def used(plan: PmPlanView, usage: PmUsage, now: datetime) -> float:
    """How much of the plan's interval the tool has used, in the plan's unit."""
    if plan.trigger == PmTrigger.CALENDAR:
        return (now - usage.since).total_seconds() / 86400
    if plan.trigger == PmTrigger.WAFERS:
        return float(usage.wafers)
    return usage.process_s / 3600


def status(plan: PmPlanView, usage: PmUsage, now: datetime) -> PmState:
    """OK, upcoming (within the warning window) or due."""
    spent = used(plan, usage, now)
    remaining = plan.interval - spent
    if remaining <= 0:
        st = PmStatus.DUE
    elif remaining <= plan.warning:
        st = PmStatus.UPCOMING
    else:
        st = PmStatus.OK
    due_at = (
        usage.since + timedelta(days=plan.interval) if plan.trigger == PmTrigger.CALENDAR else None
    )
    return PmState(plan, st, spent, remaining, due_at)


def check_not_due(tool_code: str, states: list[PmState]) -> None:
    """Refuse a track-in on a tool with a due PM."""
    due = [s.plan.code for s in states if s.status == PmStatus.DUE]
    if due:
        raise RuleViolation(
            "tool.pm_due",
            f"tool {tool_code} is due for preventive maintenance ({', '.join(sorted(due))})",
            pm_plans=sorted(due),
        )
