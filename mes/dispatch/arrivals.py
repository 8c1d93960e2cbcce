"""Two more things a dispatch decision reads: the lots travelling to a fab (shipped by another
fab, not received yet), which its dispatcher sees arriving but never starts; and the closing
tool groups of the Q-time windows its waiting lots would open, for the Q-time gate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch import policy
from mes.dispatch.route_cache import route_info
from mes.dispatch.rule_sets import RuleSets
from mes.lots import qtime_gate
from mes.lots import service as lots_service
from mes.lots.models import Lot, LotTransfer
from mes.lots.states import LotState
from mes.routes.models import Step


async def arriving_snapshots(
    session: AsyncSession, fab_id: int, where: Sequence[ColumnElement[bool]] = ()
) -> list[policy.LotSnapshot]:
    """Lots on their way to ``fab_id`` (matching ``where`` on Lot and its Step), as that fab's
    lots in state InTransit with their expected arrival: shipped at + the transfer time."""
    rows = (
        await session.execute(
            select(Lot, LotTransfer.from_fab_id, LotTransfer.shipped_at)
            .join(LotTransfer, LotTransfer.lot_id == Lot.id)
            .join(Step, Step.id == Lot.current_step_id)
            .where(
                Lot.state == LotState.IN_TRANSIT,
                Lot.destination_fab_id == fab_id,
                LotTransfer.to_fab_id == fab_id,
                LotTransfer.received_at.is_(None),
                LotTransfer.recalled_at.is_(None),
                *where,
            )
            .order_by(Lot.code)
        )
    ).all()
    if not rows:
        return []
    route = await route_info(session, {lot.route_version_id for lot, _, _ in rows})
    out = []
    transit_from: dict[int, timedelta] = {}
    for lot, from_fab_id, shipped_at in rows:
        assert lot.current_step_id is not None  # a travelling lot is at a step
        if from_fab_id not in transit_from:
            transit_from[from_fab_id] = await lots_service.transit_time(
                session, from_fab_id, fab_id
            )
        transit = transit_from[from_fab_id]
        out.append(
            policy.LotSnapshot(
                id=lot.id,
                code=lot.code,
                fab_id=fab_id,
                state=lot.state.value,
                holds=0,
                priority=lot.priority_class.value,
                wafer_count=lot.wafer_count,
                step=route.steps[lot.current_step_id],
                queued_at=lot.step_entered_at.timestamp(),
                due_at=None if lot.due_at is None else lot.due_at.timestamp(),
                remaining_process_s=route.remaining_s[lot.current_step_id],
                next_tool_group_id=route.next_group[lot.current_step_id],
                arrives_at=(shipped_at + transit).timestamp(),
            )
        )
    return out


async def with_downstream(
    session: AsyncSession,
    situation: policy.Situation,
    lots: Iterable[policy.LotSnapshot],
    now: datetime,
    rule_sets: RuleSets,
) -> policy.Situation:
    """The situation with the closing tool groups of the windows ``lots`` would open (the Q-time
    gate's input); unchanged (no query) when none of them waits at an opening step. Where a
    closing group's rule set does not rank window lots first (no ``qtime`` rule), the lots
    waiting there count as ahead."""
    keys = {
        (lot.fab_id, leg.to_group_id)
        for lot in lots
        if lot.state == policy.WAITING
        for leg in lot.step.qtime_chain
    }
    if not keys:
        return situation
    queue_keys = [key for key in keys if not policy.window_first(rule_sets.for_group(*key))]
    found = await qtime_gate.downstream(session, keys, now, queue_keys)
    return replace(situation, downstream={**situation.downstream, **found})
