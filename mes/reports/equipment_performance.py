"""E10 and E79 figures for a tool, tool group, area or fab over a time window.

Reads the state history (with corrections) and the track-outs of the window, and hands them to
the pure formulas in ``equipment.metrics``. A report, not part of the equipment domain: the
track-outs are lot events and the theoretical times are route steps, both above equipment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.equipment import metrics
from mes.equipment import service as equipment_service
from mes.errors import InvalidInput, NotFound
from mes.lots.models import Lot, LotEvent
from mes.lots.type_rules import OUTPUT_TYPES
from mes.routes.models import Step

MAX_WINDOW_DAYS = 400


@dataclass(frozen=True)
class Scope:
    fab: str | None = None
    area: str | None = None
    tool_group: str | None = None
    tool: str | None = None
    chamber: str | None = None


@dataclass(frozen=True)
class Figures:
    tools: list[str]
    e10: metrics.E10Metrics
    oee: metrics.Oee


async def runs(
    session: AsyncSession, tool_ids: list[int], start: datetime, end: datetime
) -> list[metrics.Run]:
    """The lot runs tracked out of the tools in the window, with their theoretical time.

    Theoretical time per wafer = the step's processing-time estimate for a lot, shared by its
    wafers, and by the lots of a full batch on batch steps. Good wafers are the processed wafers
    of a run whose outcome was ``pass`` (a rework outcome makes none of them good). Runs of
    monitor and dummy lots are left out: their wafers are not product units.
    """
    if not tool_ids:
        return []
    rows = await session.execute(
        select(LotEvent.before, LotEvent.after, Step.process_time_s, Step.batch_max)
        .join(Step, Step.id == LotEvent.step_id)
        .join(Lot, Lot.id == LotEvent.lot_id)
        .where(
            # E79 units are product units: monitor and dummy wafers are no output.
            Lot.lot_type.in_(OUTPUT_TYPES),
            LotEvent.event_type == "TRACK_OUT",
            LotEvent.equipment_id.in_(tool_ids),
            # A run belongs to the window it ends in; one ending at ``end`` ran inside it.
            LotEvent.occurred_at > start,
            LotEvent.occurred_at <= end,
        )
    )
    found = []
    for before, after, process_s, batch_max in rows.all():
        after = after or {}
        wafers = int((before or {}).get("wafer_count") or after.get("wafer_count") or 0)
        processed = int(after.get("wafers_processed", wafers))
        if wafers <= 0 or processed <= 0:
            continue
        per_wafer = process_s / wafers / (batch_max or 1)
        good = processed if after.get("outcome", "pass") == "pass" else 0
        found.append(metrics.Run(per_wafer, processed, good))
    return found


async def figures(session: AsyncSession, scope: Scope, start: datetime, end: datetime) -> Figures:
    """The E10 metrics and E79 OEE of the scope's tools over ``[start, end)``."""
    if end <= start:
        raise InvalidInput("the window must end after it starts", code="metrics.invalid_window")
    if (end - start).days > MAX_WINDOW_DAYS:
        raise InvalidInput(
            f"a window may span at most {MAX_WINDOW_DAYS} days", code="metrics.invalid_window"
        )
    if scope.chamber is not None and scope.tool is None:
        raise InvalidInput("a chamber needs its tool", code="metrics.invalid_scope")
    if scope.tool is not None:
        tools = [await equipment_service.get_equipment(session, scope.tool)]
    else:
        flt = equipment_service.EquipmentFilter(
            fab=scope.fab, area=scope.area, tool_group=scope.tool_group
        )
        tools = list(await session.scalars(equipment_service.equipment_query(flt)))
        if not tools:
            raise NotFound("no tool matches the scope", code="metrics.no_tools")
    parts = []
    for tool in tools:
        chamber = equipment_service.chamber_of(tool, scope.chamber)
        history = await equipment_service.history(
            session, tool.id, None if chamber is None else chamber.id, start, end
        )
        parts.append(metrics.e10_metrics(history, start, end))
    e10 = parts[0] if len(parts) == 1 else metrics.add_up(parts)
    return Figures(
        tools=[t.code for t in tools],
        e10=e10,
        oee=metrics.oee(e10.times, await runs(session, [t.id for t in tools], start, end)),
    )
