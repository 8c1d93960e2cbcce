"""Q-time gating against the database: the windows a step commits to (``chain_of``), the closing
tool groups as the gate sees them (``downstream``), and the check at track-in (``check``).

The rule itself is pure (``qtime_gate_rules.gate``); the dispatcher applies the same rule on
its snapshot (``mes.dispatch``), and a track-in applies it here, so a lot is not started into a
window it would miss whoever starts it. A supervisor may start it anyway, with a reason (an
e-signature on the request), recorded in the TRACK_IN event.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from mes.auth.models import AccountKind
from mes.auth.roles import Role
from mes.auth.service import Principal
from mes.equipment.models import Equipment
from mes.equipment.states import PRODUCTION_STATES
from mes.errors import Forbidden, RuleViolation
from mes.lots import rules
from mes.lots.models import Lot, QTimeWindow
from mes.lots.qtime_gate_rules import Chain, Downstream, RouteStep, chain_from, gate_chain
from mes.lots.states import FINAL_STATES, LotState, QTimeStatus
from mes.routes.models import Step

Key = tuple[int, int]  # (fab id, tool group id)


def chain_of(steps: Sequence[rules.StepView], step: rules.StepView) -> tuple[Chain, ...]:
    """The windows a start at ``step`` commits the lot to (empty: it opens none)."""
    plain = [
        RouteStep(
            sequence=s.sequence,
            group_id=s.tool_group_id,
            process_s=float(s.process_time_s),
            batch=s.batch_max or 1,
            qtime_to_sequence=s.qtime_to_sequence,
            qtime_max_s=None if s.qtime_max_s is None else float(s.qtime_max_s),
            qtime_min_s=None if s.qtime_min_s is None else float(s.qtime_min_s),
        )
        for s in steps
    ]
    index = next((i for i, s in enumerate(steps) if s.id == step.id), None)
    return () if index is None else chain_from(plain, index)


async def downstream(
    session: AsyncSession, keys: Collection[Key], now: datetime, queue_keys: Collection[Key] = ()
) -> dict[Key, Downstream]:
    """For each (fab, closing tool group): the lots committed to windows closing there and
    when each of its tools that is up is free; for ``queue_keys`` (groups whose dispatching does
    not put window lots first), the other lots waiting there too. At most four queries."""
    if not keys:
        return {}
    queued: dict[Key, int] = {}
    if queue_keys:
        in_window = (
            select(QTimeWindow.id)
            .where(
                QTimeWindow.lot_id == Lot.id,
                QTimeWindow.to_step_id == Lot.current_step_id,
                QTimeWindow.status == QTimeStatus.OPEN,
            )
            .exists()
        )
        for fab_id, group_id, n in await session.execute(
            select(Lot.fab_id, Step.tool_group_id, func.count())
            .join(Step, Step.id == Lot.current_step_id)
            .where(
                Lot.state == LotState.WAITING,
                ~in_window,
                tuple_(Lot.fab_id, Step.tool_group_id).in_(sorted(set(queue_keys))),
            )
            .group_by(Lot.fab_id, Step.tool_group_id)
        ):
            queued[(fab_id, group_id)] = int(n)
    wanted = sorted(set(keys))
    committed: dict[Key, int] = dict.fromkeys(wanted, 0)
    closing = aliased(Step)
    # Lots whose window is open: they have left the opening step and not started the closing.
    open_rows = await session.execute(
        select(Lot.fab_id, closing.tool_group_id, func.count(func.distinct(Lot.id)))
        .join(QTimeWindow, QTimeWindow.lot_id == Lot.id)
        .join(closing, closing.id == QTimeWindow.to_step_id)
        .where(
            QTimeWindow.status == QTimeStatus.OPEN,
            Lot.state.not_in(list(FINAL_STATES)),
            tuple_(Lot.fab_id, closing.tool_group_id).in_(wanted),
        )
        .group_by(Lot.fab_id, closing.tool_group_id)
    )
    # Lots running at an opening step: their window opens at the track-out.
    opening = aliased(Step)
    running_rows = await session.execute(
        select(Lot.fab_id, closing.tool_group_id, func.count())
        .join(opening, opening.id == Lot.current_step_id)
        .join(
            closing,
            and_(
                closing.route_version_id == opening.route_version_id,
                closing.sequence == opening.qtime_to_sequence,
            ),
        )
        .where(
            Lot.state == LotState.RUNNING,
            opening.qtime_max_s.is_not(None),
            tuple_(Lot.fab_id, closing.tool_group_id).in_(wanted),
        )
        .group_by(Lot.fab_id, closing.tool_group_id)
    )
    for fab_id, group_id, n in [*open_rows.all(), *running_rows.all()]:
        committed[(fab_id, group_id)] += int(n)
    free: dict[Key, dict[int, float]] = {key: {} for key in wanted}
    t_now = now.timestamp()
    tools = await session.execute(
        select(
            Equipment.id,
            Equipment.fab_id,
            Equipment.tool_group_id,
            Lot.tracked_in_at,
            Step.process_time_s,
        )
        .outerjoin(Lot, and_(Lot.equipment_id == Equipment.id, Lot.state == LotState.RUNNING))
        .outerjoin(Step, Step.id == Lot.current_step_id)
        .where(
            Equipment.e10_state.in_(list(PRODUCTION_STATES)),
            tuple_(Equipment.fab_id, Equipment.tool_group_id).in_(wanted),
        )
    )
    for tool_id, fab_id, group_id, tracked_in_at, process_s in tools.all():
        left = 0.0
        if tracked_in_at is not None and process_s is not None:
            left = max(0.0, tracked_in_at.timestamp() + process_s - t_now)
        per_tool = free[(fab_id, group_id)]
        per_tool[tool_id] = max(per_tool.get(tool_id, 0.0), left)
    return {
        key: Downstream(committed[key], tuple(sorted(free[key].values())), queued.get(key, 0))
        for key in wanted
    }


async def check(
    session: AsyncSession,
    lot: Lot,
    steps: Sequence[rules.StepView],
    step: rules.StepView,
    *,
    actor: Principal,
    override: str | None,
    inside_window: bool,
    now: datetime,
) -> dict[str, Any] | None:
    """The gate at track-in: refuse (409 ``lot.qtime_gated``) a start the closing group could
    not take in time, unless a supervisor overrides it with a reason. Returns what the
    TRACK_IN event records of it (None: the step opens no window, or the lot is inside a
    window closing here: the gate stands at the first step of a chain, and holding a lot that
    is already committed back could only make it miss the window it is in)."""
    chain = chain_of(steps, step)
    if not chain or inside_window:
        return None
    found = await downstream(session, [(lot.fab_id, leg.to_group_id) for leg in chain], now)
    verdict = gate_chain(chain, {group: d for (_fab, group), d in found.items()})
    assert verdict is not None  # every group of the chain was read
    record: dict[str, Any] = {"ok": verdict.ok, "why": verdict.why}
    if verdict.ok:
        return record
    if override is None:
        raise RuleViolation(
            "lot.qtime_gated",
            f"{verdict.why}; wait, or a supervisor may start it with a reason "
            "(qtime_gate_override)",
        )
    if actor.kind != AccountKind.HUMAN or Role.SUPERVISOR not in actor.roles:
        raise Forbidden(
            "only a supervisor may start a lot past the Q-time gate",
            code="lot.qtime_override_forbidden",
        )
    record["override"] = override
    return record
