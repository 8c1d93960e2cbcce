"""The snapshots the pure policy decides on, read from the database set-based (a fixed number
of queries whatever the number of tools and lots): tools with their state, load,
qualifications, reticles and setup; waiting lots with their route ahead, Q-time deadline,
dedicated tool and context-resolved recipes; and the situation (loads, setup and transfer
times)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch import policy
from mes.dispatch.models import SetupChange, SetupMinRun
from mes.dispatch.route_cache import RouteInfo, route_info
from mes.durables.models import Durable
from mes.durables.rules import DurableLocation, DurableState
from mes.equipment import pm_rules
from mes.equipment import service as equipment_service
from mes.equipment.models import Chamber, Equipment
from mes.equipment.states import PRODUCTION_STATES, E10State
from mes.fabs.models import FabTransferTime, ProcessingKind, ToolGroup
from mes.jobs.models import EquipmentJob
from mes.jobs.states import JobStatus
from mes.lots import service as lots_service
from mes.lots.models import Lot, LotEvent, QTimeWindow
from mes.lots.states import LotState, QTimeStatus
from mes.products.models import Product
from mes.recipes import rules as recipe_rules
from mes.recipes import service as recipes_service
from mes.recipes.models import Recipe, RecipeQualification, RecipeVersion, RecipeVersionStatus
from mes.routes.models import Step


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


async def _pm_due(session: AsyncSession, tools: Sequence[Equipment], now: datetime) -> set[int]:
    """Tools with a due PM, read for all of them at once (the states track-in checks, baselines
    and process hours included)."""
    states = await equipment_service.pm_states_many(session, tools, now)
    return {
        tool_id
        for tool_id, found in states.items()
        if any(st.status == pm_rules.PmStatus.DUE for st in found)
    }


async def tool_snapshots(
    session: AsyncSession, where: Sequence[ColumnElement[bool]], now: datetime
) -> list[policy.ToolSnapshot]:
    """Tools matching ``where`` with their state, load, qualifications, reticles and setup."""
    tools = list(await session.scalars(select(Equipment).where(*where).order_by(Equipment.code)))
    if not tools:
        return []
    ids = [t.id for t in tools]
    chambers: dict[int, list[str]] = defaultdict(list)
    for tool_id, state in (
        await session.execute(
            select(Chamber.equipment_id, Chamber.e10_state).where(Chamber.equipment_id.in_(ids))
        )
    ).all():
        chambers[tool_id].append(state)
    running: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
    busy: dict[int, float] = defaultdict(float)
    t_now = now.timestamp()
    on_tools = (
        await session.execute(
            select(
                Lot.id,
                Lot.equipment_id,
                Lot.current_step_id,
                Step.recipe_name,
                Lot.tracked_in_at,
                Step.process_time_s,
            )
            .join(Step, Step.id == Lot.current_step_id)
            .where(Lot.state == LotState.RUNNING, Lot.equipment_id.in_(ids))
        )
    ).all()
    # The recipe each running lot was tracked in with (context rules may have resolved the
    # logical one to another): a candidate joins a batch only if it resolves to the same.
    ran = await _recipes_tracked_in(session, [row[0] for row in on_tools])
    for lot_id, on_tool, step_id, logical, tracked_in_at, process_s in on_tools:
        if on_tool is None or step_id is None:
            continue
        running[on_tool].append((step_id, ran.get(lot_id, logical)))
        end = (_ts(tracked_in_at) or t_now) + process_s
        busy[on_tool] = max(busy[on_tool], end - t_now)
    qualified: dict[int, set[str]] = defaultdict(set)
    for tool_id, name in (
        await session.execute(
            select(RecipeQualification.equipment_id, Recipe.name)
            .join(RecipeVersion, RecipeVersion.id == RecipeQualification.recipe_version_id)
            .join(Recipe, Recipe.id == RecipeVersion.recipe_id)
            .outerjoin(Chamber, Chamber.id == RecipeQualification.chamber_id)
            .where(
                RecipeQualification.equipment_id.in_(ids),
                RecipeVersion.status == RecipeVersionStatus.APPROVED,
                recipes_service.standing(now),
                # A chamber's own qualification counts while that chamber can run lots.
                or_(
                    RecipeQualification.chamber_id.is_(None),
                    Chamber.e10_state.in_((E10State.SBY, E10State.PRD)),
                ),
            )
            .distinct()
        )
    ).all():
        qualified[tool_id].add(name)
    reticles: dict[int, dict[str, int | None]] = defaultdict(dict)
    for at_tool, design, count, limit in (
        await session.execute(
            select(Durable.equipment_id, Durable.design, Durable.usage_count, Durable.usage_limit)
            .where(
                Durable.equipment_id.in_(ids),
                Durable.location == DurableLocation.TOOL,
                Durable.state == DurableState.AVAILABLE,
            )
            .order_by(Durable.id)
        )
    ).all():
        if at_tool is None:
            continue
        left = None if limit is None else max(0, limit - count)
        have = reticles[at_tool]
        if design not in have:
            have[design] = left
        elif have[design] is not None:
            have[design] = None if left is None else max(left, have[design] or 0)
    pm_due = await _pm_due(session, tools, now)
    started = set(
        await session.scalars(
            select(EquipmentJob.equipment_id)
            .where(
                EquipmentJob.equipment_id.in_(ids),
                # A job written but not yet sent (no adapter has picked it up: at start, during
                # a reconnect) commits the tool as much as one on it: the tool would refuse a
                # second job as busy.
                EquipmentJob.status.in_(
                    [JobStatus.REQUESTED, JobStatus.SENT, JobStatus.RUNNING, JobStatus.PAUSED]
                ),
            )
            .distinct()
        )
    )
    batch_groups = set(
        await session.scalars(
            select(ToolGroup.id).where(
                ToolGroup.id.in_({t.tool_group_id for t in tools}),
                ToolGroup.processing_kind.in_([ProcessingKind.BATCH, ProcessingKind.WET_BENCH]),
            )
        )
    )
    snapshots = []
    for t in tools:
        states = chambers.get(t.id)
        snapshots.append(
            policy.ToolSnapshot(
                id=t.id,
                code=t.code,
                fab_id=t.fab_id,
                tool_group_id=t.tool_group_id,
                e10_state=t.e10_state.value,
                # As the tool's adapter last reported it; a tool no adapter has reported on yet
                # counts as OnlineRemote (the adapter checks again before it starts a job).
                control_state=t.control_state or policy.ONLINE_REMOTE,
                area_id=t.area_id,
                chambers_up=None
                if not states
                else sum(1 for s in states if s in PRODUCTION_STATES),
                max_lots=t.max_lots,
                running=tuple(running.get(t.id, ())),
                busy_for_s=max(0.0, busy.get(t.id, 0.0)),
                job_started=t.id in started,
                batch_busy=t.id in started and t.tool_group_id in batch_groups,
                pm_due=t.id in pm_due,
                qualified=frozenset(qualified.get(t.id, ())),
                reticles=reticles.get(t.id, {}),
                current_setup=t.current_setup,
                lots_since_setup=t.setup_lots,
            )
        )
    return snapshots


async def _reticles_of(session: AsyncSession, recipes: set[str]) -> dict[str, str]:
    """Reticle design named by the newest approved version of each recipe (if any).

    Only recipes whose body names a reticle matter, and those are few; the JSON is read in
    Python so the query stays the same on both databases.
    """
    if not recipes:
        return {}
    found: dict[str, str] = {}
    rows = await session.execute(
        select(Recipe.name, RecipeVersion.body)
        .join(RecipeVersion, RecipeVersion.recipe_id == Recipe.id)
        .where(Recipe.name.in_(list(recipes)), RecipeVersion.status == RecipeVersionStatus.APPROVED)
        .order_by(Recipe.name, RecipeVersion.version)
    )
    for name, body in rows.all():
        design = next(
            (
                p.get("value")
                for p in body.get("parameters", [])
                if p.get("name") == "reticle" and isinstance(p.get("value"), str)
            ),
            None,
        )
        if design is None:
            found.pop(name, None)
        else:
            found[name] = design
    return found


async def lot_snapshots(
    session: AsyncSession,
    where: Sequence[ColumnElement[bool]],
    now: datetime,
    tools: Sequence[policy.ToolSnapshot] = (),
) -> list[policy.LotSnapshot]:
    """Waiting and held lots matching ``where`` (on Lot and its current Step), with their
    route ahead, Q-time deadline, dedicated tool and context-resolved recipes on ``tools``."""
    rows = (
        await session.execute(
            select(
                Lot.id,
                Lot.code,
                Lot.fab_id,
                Lot.state,
                Lot.priority_class,
                Lot.wafer_count,
                Lot.current_step_id,
                Lot.route_version_id,
                Lot.step_entered_at,
                Lot.due_at,
                Lot.product_id,
                Lot.lot_type,
            )
            .join(Step, Step.id == Lot.current_step_id)
            .where(Lot.state.in_((LotState.WAITING, LotState.ON_HOLD)), *where)
        )
    ).all()
    if not rows:
        return []
    route = await route_info(session, {r.route_version_id for r in rows})
    lot_ids = [r.id for r in rows]
    deadlines: dict[tuple[int, int], float] = {}
    earliest: dict[tuple[int, int], float] = {}
    for chunk in _chunks(lot_ids):
        for lot_id, step_id, deadline, not_before in (
            await session.execute(
                select(
                    QTimeWindow.lot_id,
                    QTimeWindow.to_step_id,
                    QTimeWindow.deadline_at,
                    QTimeWindow.earliest_at,
                ).where(QTimeWindow.lot_id.in_(chunk), QTimeWindow.status == QTimeStatus.OPEN)
            )
        ).all():
            key = (lot_id, step_id)
            deadlines[key] = min(deadlines.get(key, float("inf")), deadline.timestamp())
            if not_before is not None:
                earliest[key] = max(earliest.get(key, 0.0), not_before.timestamp())
    reticle_of = await _reticles_of(
        session, {route.steps[row.current_step_id].recipe or "" for row in rows} - {""}
    )
    dedicated = await _dedicated_tools(session, rows, route)
    overrides = await _recipe_overrides(session, rows, route, tools)
    lots = []
    for r in rows:
        step = route.steps[r.current_step_id]
        if step.recipe is not None and step.recipe in reticle_of:
            step = replace(step, reticle=reticle_of[step.recipe])
        closes = deadlines.get((r.id, r.current_step_id))
        lots.append(
            policy.LotSnapshot(
                id=r.id,
                code=r.code,
                fab_id=r.fab_id,
                state=r.state.value,
                holds=1 if r.state == LotState.ON_HOLD else 0,
                priority=r.priority_class.value,
                lot_type=r.lot_type.value,
                wafer_count=r.wafer_count,
                step=step,
                queued_at=r.step_entered_at.timestamp(),
                due_at=_ts(r.due_at),
                remaining_process_s=route.remaining_s[r.current_step_id],
                next_tool_group_id=route.next_group[r.current_step_id],
                qtime_deadline=closes,
                qtime_earliest=earliest.get((r.id, r.current_step_id)),
                dedicated_tool_id=dedicated.get(r.id),
                recipe_by_tool=overrides.get(r.id),
            )
        )
    return lots


async def _recipes_tracked_in(session: AsyncSession, lot_ids: list[int]) -> dict[int, str]:
    """The recipe each of these (running) lots runs, from its latest TRACK_IN event."""
    found: dict[int, str] = {}
    for chunk in _chunks(lot_ids):
        latest = (
            select(func.max(LotEvent.id))
            .where(LotEvent.lot_id.in_(chunk), LotEvent.event_type == "TRACK_IN")
            .group_by(LotEvent.lot_id)
        )
        for lot_id, after in (
            await session.execute(
                select(LotEvent.lot_id, LotEvent.after).where(LotEvent.id.in_(latest))
            )
        ).all():
            recipe = (after or {}).get("recipe")
            if isinstance(recipe, str):
                found[lot_id] = recipe
    return found


def _chunks(ids: Sequence[int], size: int = 5000) -> Iterable[list[int]]:
    for i in range(0, len(ids), size):
        yield list(ids[i : i + size])


async def _dedicated_tools(
    session: AsyncSession, rows: Sequence[Any], route: RouteInfo
) -> dict[int, int]:
    """Lot → the tool its dedicated step must run on (the tool that ran the named step)."""
    wanted: dict[tuple[int, int], int] = {}
    for r in rows:
        step = route.steps[r.current_step_id]
        if step.same_tool_as_sequence is None:
            continue
        earlier = route.by_sequence[r.route_version_id].get(step.same_tool_as_sequence)
        if earlier is not None:
            wanted[(r.id, earlier)] = r.id
    if not wanted:
        return {}
    found: dict[int, int] = {}
    lot_ids = sorted({lot for lot, _ in wanted})
    for chunk in _chunks(lot_ids):
        events = await session.execute(
            select(LotEvent.lot_id, LotEvent.step_id, LotEvent.equipment_id)
            .where(LotEvent.lot_id.in_(chunk), LotEvent.event_type == "TRACK_IN")
            .order_by(LotEvent.occurred_at, LotEvent.id)
        )
        for lot_id, step_id, tool_id in events.all():
            if (lot_id, step_id) in wanted and tool_id is not None:
                found[lot_id] = tool_id  # the latest wins
    return found


async def _recipe_overrides(
    session: AsyncSession,
    rows: Sequence[Any],
    route: RouteInfo,
    tools: Sequence[policy.ToolSnapshot],
) -> dict[int, dict[int, str]]:
    """Context rules (recipes/rules.py) that send a lot's logical recipe elsewhere on a tool."""
    logical = {route.steps[r.current_step_id].recipe for r in rows} - {None}
    if not logical or not tools:
        return {}
    candidates = [
        c
        for c, _ in await recipes_service.context_rules(
            session, logical_recipes=sorted(n for n in logical if n is not None)
        )
    ]
    if not candidates:
        return {}
    products = dict((await session.execute(select(Product.id, Product.code))).all())
    groups = dict((await session.execute(select(ToolGroup.id, ToolGroup.code))).all())
    out: dict[int, dict[int, str]] = {}
    for r in rows:
        step = route.steps[r.current_step_id]
        if step.recipe is None:
            continue
        for tool in tools:
            if tool.tool_group_id != step.tool_group_id:
                continue
            context = recipe_rules.Context(
                product=products.get(r.product_id, ""),
                step=step.operation,
                tool_group=groups.get(tool.tool_group_id, ""),
                tool=tool.code,
            )
            resolved = recipe_rules.resolve(step.recipe, candidates, context).recipe
            if resolved != step.recipe:
                out.setdefault(r.id, {})[tool.id] = resolved
    return out


async def situation(
    session: AsyncSession, now: datetime, groups: Collection[int] | None = None
) -> policy.Situation:
    """Loads per fab and tool group (only of ``groups`` if given), setup changes, minimum runs
    and transfer times."""
    loads: dict[tuple[int, int], policy.GroupLoad] = {}
    # Grouped by setup too (the step's, the tool's): ``setup_demand`` reads the counts per
    # setup, the other rules their sums.
    queued_stmt = (
        select(
            Lot.fab_id,
            Step.tool_group_id,
            Step.setup,
            func.count(),
            func.sum(Step.process_time_s),
        )
        .join(Step, Step.id == Lot.current_step_id)
        .where(Lot.state == LotState.WAITING)
        .group_by(Lot.fab_id, Step.tool_group_id, Step.setup)
    )
    up_stmt = (
        select(Equipment.fab_id, Equipment.tool_group_id, Equipment.current_setup, func.count())
        .where(Equipment.e10_state.in_(PRODUCTION_STATES))
        .group_by(Equipment.fab_id, Equipment.tool_group_id, Equipment.current_setup)
    )
    if groups is not None:
        wanted = sorted(groups)
        queued_stmt = queued_stmt.where(Step.tool_group_id.in_(wanted))
        up_stmt = up_stmt.where(Equipment.tool_group_id.in_(wanted))
    # Lots on their way to a fab join its queue: they will be there before long.
    arriving_stmt = (
        select(
            Lot.destination_fab_id, Step.tool_group_id, func.count(), func.sum(Step.process_time_s)
        )
        .join(Step, Step.id == Lot.current_step_id)
        .where(Lot.state == LotState.IN_TRANSIT)
        .group_by(Lot.destination_fab_id, Step.tool_group_id)
    )
    if groups is not None:
        arriving_stmt = arriving_stmt.where(Step.tool_group_id.in_(sorted(groups)))
    up: dict[tuple[int, int], int] = defaultdict(int)
    tools_by_setup: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    for fab, group, setup, n in (await session.execute(up_stmt)).all():
        up[(fab, group)] += n
        if setup is not None:
            tools_by_setup[(fab, group)][setup] = n
    queued: dict[tuple[int, int], int] = defaultdict(int)
    queued_work: dict[tuple[int, int], float] = defaultdict(float)
    queued_by_setup: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    for fab, group, setup, n, work in (await session.execute(queued_stmt)).all():
        queued[(fab, group)] += n
        queued_work[(fab, group)] += float(work or 0)
        if setup is not None:
            queued_by_setup[(fab, group)][setup] = n
    for key, n in queued.items():
        loads[key] = policy.GroupLoad(n, queued_work[key], up.get(key, 0))
    for to_fab, group, n, work in (await session.execute(arriving_stmt)).all():
        if to_fab is None:
            continue  # the lot table's check constraint rules it out
        had = loads.get((to_fab, group), policy.GroupLoad(0, 0.0, up.get((to_fab, group), 0)))
        loads[(to_fab, group)] = replace(
            had,
            queued_lots=had.queued_lots + n,
            queued_work_s=had.queued_work_s + float(work or 0),
            arriving_lots=n,
        )
    for key, n in up.items():
        loads.setdefault(key, policy.GroupLoad(0, 0.0, n))
    for key in queued_by_setup.keys() | tools_by_setup.keys():
        loads[key] = replace(
            loads.get(key, policy.GroupLoad()),
            queued_by_setup=queued_by_setup.get(key, {}),
            tools_by_setup=tools_by_setup.get(key, {}),
        )
    setup_times = {
        (None if a == "*" else a, b): float(t)
        for a, b, t in (
            await session.execute(
                select(SetupChange.from_setup, SetupChange.to_setup, SetupChange.time_s)
            )
        ).all()
    }
    min_run = dict(
        (s, n)
        for s, n in (await session.execute(select(SetupMinRun.setup, SetupMinRun.min_run))).all()
    )
    transfer = {
        (a, b): float(t)
        for a, b, t in (
            await session.execute(
                select(
                    FabTransferTime.from_fab_id, FabTransferTime.to_fab_id, FabTransferTime.time_s
                )
            )
        ).all()
    }
    return policy.Situation(
        now=now.timestamp(),
        loads=loads,
        setup_times=setup_times,
        min_run=min_run,
        transfer_s=transfer,
        default_transfer_s=lots_service.TRANSIT_TIME.total_seconds(),
    )


async def any_state_snapshot(session: AsyncSession, lot: Lot, now: datetime) -> policy.LotSnapshot:
    """A lot that is running or travelling: answered with its exclusion, not a 404."""
    assert lot.current_step_id is not None
    route = await route_info(session, {lot.route_version_id})
    return policy.LotSnapshot(
        id=lot.id,
        code=lot.code,
        fab_id=lot.fab_id,
        state=lot.state.value,
        holds=0,
        priority=lot.priority_class.value,
        lot_type=lot.lot_type.value,
        wafer_count=lot.wafer_count,
        step=route.steps[lot.current_step_id],
        queued_at=lot.step_entered_at.timestamp(),
    )
