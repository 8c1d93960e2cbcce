"""The morning reports over HTTP: moves and turns, WIP and cycle time, holds, scrap and
rework, on-time delivery; per fab (``fab=``) or across the network, over ``from``..``to``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from mes.db.transaction import ReadSession
from mes.kit.api import CalendarDay, ClockDep, CodeStr
from mes.reports import morning
from mes.reports import morning_rules as rules

router = APIRouter(prefix="/reports", tags=["reports"])

FabQuery = Annotated[
    CodeStr | None, Query(description="a fab's code; none: the whole network (UTC days)")
]
FromQuery = Annotated[
    CalendarDay | None,
    Query(alias="from", description="first day (the fab's calendar); default: to"),
]
ToQuery = Annotated[
    CalendarDay | None, Query(alias="to", description="last day; default: yesterday")
]


class Range(BaseModel):
    fab: str | None
    time_zone: str
    first_day: date
    last_day: date
    start: datetime
    end: datetime
    as_of: datetime


def _range(w: morning.Window) -> Range:
    return Range(
        fab=w.fab,
        time_zone=str(w.zone),
        first_day=w.first,
        last_day=w.last,
        start=w.start.astimezone(UTC),
        end=w.end.astimezone(UTC),
        as_of=w.as_of,
    )


class MovesReport(BaseModel):
    range: Range
    rows: list[rules.AreaDay]


class WipReport(BaseModel):
    range: Range
    steps: list[rules.ProductStep]
    products: list[rules.ProductCycle]


class HoldsReport(BaseModel):
    range: Range
    escalate_after_h: float
    codes: list[rules.HoldCodeRow]
    escalated: list[rules.Escalation]


class ScrapReport(BaseModel):
    range: Range
    scrap_by_reason: list[rules.ParetoRow]
    scrap_by_operation: list[rules.ParetoRow]
    rework_by_operation: list[rules.ParetoRow]


class DeliveryReport(BaseModel):
    range: Range
    rows: list[rules.DeliveryRow]


@router.get("/moves", response_model=MovesReport)
async def moves_report(
    session: ReadSession,
    clock: ClockDep,
    fab: FabQuery = None,
    first: FromQuery = None,
    last: ToQuery = None,
) -> MovesReport:
    """Moves (lots and wafers tracked out) and turns (wafer moves / WIP wafers at the start of
    the day) per area and day."""
    w = await morning.window(session, fab, first, last, clock.now())
    return MovesReport(range=_range(w), rows=await morning.moves(session, w))


@router.get("/wip", response_model=WipReport)
async def wip_report(
    session: ReadSession,
    clock: ClockDep,
    fab: FabQuery = None,
    first: FromQuery = None,
    last: ToQuery = None,
) -> WipReport:
    """WIP at the end of the range and mean cycle time per product and step; per product the
    lots completed in the range and their mean cycle time."""
    w = await morning.window(session, fab, first, last, clock.now())
    steps, products = await morning.wip(session, w)
    return WipReport(range=_range(w), steps=steps, products=products)


@router.get("/holds", response_model=HoldsReport)
async def holds_report(
    request: Request,
    session: ReadSession,
    clock: ClockDep,
    fab: FabQuery = None,
    first: FromQuery = None,
    last: ToQuery = None,
    escalate_after_h: Annotated[float | None, Query(gt=0, le=24 * 365)] = None,
) -> HoldsReport:
    """Hold Pareto by hold code (holds placed in the range, their hours on hold), the open holds
    by age, and the open holds past the escalation threshold (default: the service setting)."""
    threshold = escalate_after_h or request.app.state.settings.report_hold_escalation_h
    w = await morning.window(session, fab, first, last, clock.now())
    codes, escalated = await morning.holds(session, w, threshold)
    return HoldsReport(
        range=_range(w), escalate_after_h=threshold, codes=codes, escalated=escalated
    )


@router.get("/scrap", response_model=ScrapReport)
async def scrap_report(
    session: ReadSession,
    clock: ClockDep,
    fab: FabQuery = None,
    first: FromQuery = None,
    last: ToQuery = None,
) -> ScrapReport:
    """Scrap Pareto (wafers by reason code and by operation) and rework Pareto (wafers sent
    back, by operation)."""
    w = await morning.window(session, fab, first, last, clock.now())
    by_reason, by_operation, rework = await morning.scrap_and_rework(session, w)
    return ScrapReport(
        range=_range(w),
        scrap_by_reason=by_reason,
        scrap_by_operation=by_operation,
        rework_by_operation=rework,
    )


@router.get("/delivery", response_model=DeliveryReport)
async def delivery_report(
    session: ReadSession,
    clock: ClockDep,
    fab: FabQuery = None,
    first: FromQuery = None,
    last: ToQuery = None,
) -> DeliveryReport:
    """On-time delivery of the lots completed in the range, per product and priority class
    (priority ``*``: all of the product)."""
    w = await morning.window(session, fab, first, last, clock.now())
    return DeliveryReport(range=_range(w), rows=await morning.delivery(session, w))
