"""Dispatching against the database: rule sets as versioned data, and the snapshots the pure
policy decides on, read set-based (a fixed number of queries whatever the number of tools and
lots), for one tool, for every tool of a fab, or for the tools of a group in every fab."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.dispatch import policy
from mes.dispatch.models import DispatchRuleSet, FabTransferTime, SetupChange, SetupMinRun
from mes.durables.models import Durable
from mes.durables.rules import DurableLocation, DurableState
from mes.equipment import pm_rules
from mes.equipment import service as equipment_service
from mes.equipment.models import Chamber, Equipment, PmPlan, PmRecord
from mes.equipment.states import PRODUCTION_STATES
from mes.errors import InvalidInput, NotFound, RuleViolation
from mes.fabs import service as fabs_service
from mes.fabs.models import Fab, ToolGroup
from mes.kit.lookup import get_by_key
from mes.lots import service as lots_service
from mes.lots.models import Lot, LotEvent, QTimeWindow
from mes.lots.schemas import ShipRequest
from mes.lots.states import LotState, QTimeStatus
from mes.products.models import Product
from mes.recipes import rules as recipe_rules
from mes.recipes import service as recipes_service
from mes.recipes.models import Recipe, RecipeQualification, RecipeVersion, RecipeVersionStatus
from mes.routes.models import RouteVersion, Step

# --- rule sets -----------------------------------------------------------------------------


def scope_key(fab: str, *, area: str | None = None, tool_group: str | None = None) -> str:
    if area is not None and tool_group is not None:
        raise InvalidInput(
            "a rule set applies to a fab, an area or a tool group, not both",
            code="dispatch.invalid_scope",
        )
    if area is not None:
        return f"{fab}/area/{area}"
    if tool_group is not None:
        return f"{fab}/group/{tool_group}"
    return fab


SHADOW_SUFFIX = "#shadow"


def build_rule_set(row: DispatchRuleSet) -> policy.RuleSet:
    return policy.RuleSet.build(row.definition["rules"], name=row.scope_key, version=row.version)


async def publish_rule_set(
    session: AsyncSession,
    *,
    fab: str,
    area: str | None,
    tool_group: str | None,
    rules: Sequence[dict[str, Any]],
    note: str | None,
    actor: str,
    shadow: bool = False,
) -> DispatchRuleSet:
    """Store a new version of a scope's rule set and make it the scope's active one (or its
    active shadow set: ranked beside production in every dispatch cycle, logged, never run)."""
    try:
        policy.RuleSet.build(rules)
    except policy.RuleSetError as exc:
        raise InvalidInput(str(exc), code="dispatch.invalid_rule_set") from exc
    fab_row = await fabs_service.get_fab(session, fab)
    area_id = group_id = None
    if area is not None:
        area_id = (await fabs_service.get_area(session, fab_row, area)).id
    if tool_group is not None:
        group_id = (await fabs_service.get_tool_group(session, tool_group)).id
    key = scope_key(fab, area=area, tool_group=tool_group) + (SHADOW_SUFFIX if shadow else "")
    previous = list(
        await session.scalars(
            select(DispatchRuleSet)
            .where(DispatchRuleSet.scope_key == key, DispatchRuleSet.active.is_(True))
            .with_for_update()
        )
    )
    # Locking the active version serialises two engineers publishing for one scope; the
    # unique (scope, version) key refuses the loser if there was no active version to lock.
    latest = await session.scalar(
        select(func.max(DispatchRuleSet.version)).where(DispatchRuleSet.scope_key == key)
    )
    for row in previous:
        row.active = False
    await session.flush()  # the one-active index must see the old version retired first
    row = DispatchRuleSet(
        fab_id=fab_row.id,
        area_id=area_id,
        tool_group_id=group_id,
        scope_key=key,
        version=(latest or 0) + 1,
        definition={"rules": [dict(r) for r in rules]},
        active=True,
        shadow=shadow,
        created_by=actor,
        note=note,
    )
    session.add(row)
    await session.flush()
    return row


async def rule_sets(
    session: AsyncSession, *, fab: str | None, include_history: bool
) -> list[DispatchRuleSet]:
    stmt = select(DispatchRuleSet).order_by(DispatchRuleSet.scope_key, DispatchRuleSet.version)
    if fab is not None:
        stmt = stmt.join(Fab, Fab.id == DispatchRuleSet.fab_id).where(Fab.code == fab)
    if not include_history:
        stmt = stmt.where(DispatchRuleSet.active.is_(True))
    return list(await session.scalars(stmt))


@dataclass(frozen=True)
class RuleSets:
    """The active rule sets of some fabs, to pick the one that applies to a tool."""

    by_group: dict[tuple[int, int], policy.RuleSet]
    by_area: dict[int, policy.RuleSet]
    by_fab: dict[int, policy.RuleSet]

    def for_tool(self, tool: policy.ToolSnapshot) -> policy.RuleSet:
        """Tool group in the tool's fab, else its area, else the fab's default, else built-in."""
        return self.own(tool) or policy.DEFAULT_RULE_SET

    def own(self, tool: policy.ToolSnapshot) -> policy.RuleSet | None:
        """The stored set that applies to the tool, without the built-in fallback."""
        found = self.by_group.get((tool.fab_id, tool.tool_group_id))
        if found is None and tool.area_id is not None:
            found = self.by_area.get(tool.area_id)
        if found is None:
            found = self.by_fab.get(tool.fab_id)
        return found


async def active_rule_sets(
    session: AsyncSession, fab_ids: Iterable[int], *, shadow: bool = False
) -> RuleSets:
    """The active production rule sets of the fabs (``shadow``: their active shadow sets)."""
    rows = await session.scalars(
        select(DispatchRuleSet).where(
            DispatchRuleSet.active.is_(True),
            DispatchRuleSet.shadow.is_(shadow),
            DispatchRuleSet.fab_id.in_(list(fab_ids)),
        )
    )
    sets = RuleSets({}, {}, {})
    for row in rows:
        built = build_rule_set(row)
        if row.tool_group_id is not None:
            sets.by_group[(row.fab_id, row.tool_group_id)] = built
        elif row.area_id is not None:
            sets.by_area[row.area_id] = built
        else:
            sets.by_fab[row.fab_id] = built
    return sets


# --- snapshots -----------------------------------------------------------------------------


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


async def _pm_due(session: AsyncSession, tools: Sequence[Equipment], now: datetime) -> set[int]:
    """Tools with a due PM: calendar and wafer plans set-based, process-hour plans per tool."""
    if not tools:
        return set()
    ids = [t.id for t in tools]
    groups = {t.tool_group_id for t in tools}
    plans = list(
        await session.scalars(
            select(PmPlan).where(
                PmPlan.active.is_(True),
                (PmPlan.equipment_id.in_(ids)) | (PmPlan.tool_group_id.in_(groups)),
            )
        )
    )
    if not plans:
        return set()
    last: dict[tuple[int, int], tuple[datetime, int]] = {}
    rows = await session.execute(
        select(
            PmRecord.pm_plan_id,
            PmRecord.equipment_id,
            PmRecord.completed_at,
            PmRecord.wafers_at_completion,
        )
        .where(
            PmRecord.pm_plan_id.in_([p.id for p in plans]),
            PmRecord.completed_at.is_not(None),
        )
        .order_by(PmRecord.completed_at, PmRecord.id)
    )
    for plan_id, done_on, completed_at, wafers in rows.all():
        if completed_at is not None:
            last[(plan_id, done_on)] = (completed_at, wafers or 0)
    due = set()
    for tool in tools:
        for plan in plans:
            if plan.equipment_id not in (None, tool.id) or plan.tool_group_id not in (
                None,
                tool.tool_group_id,
            ):
                continue
            if plan.trigger == pm_rules.PmTrigger.PROCESS_HOURS:
                usage = await equipment_service.usage_since_pm(session, tool, plan, now)
            else:
                since, wafers_then = last.get((plan.id, tool.id), (plan.starts_at, 0))
                usage = pm_rules.PmUsage(since, tool.wafers_processed - wafers_then, 0.0)
            state = pm_rules.status(equipment_service.plan_view(plan), usage, now)
            if state.status == pm_rules.PmStatus.DUE:
                due.add(tool.id)
    return due


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
    for on_tool, step_id, recipe, tracked_in_at, process_s in (
        await session.execute(
            select(
                Lot.equipment_id,
                Lot.current_step_id,
                Step.recipe_name,
                Lot.tracked_in_at,
                Step.process_time_s,
            )
            .join(Step, Step.id == Lot.current_step_id)
            .where(Lot.state == LotState.RUNNING, Lot.equipment_id.in_(ids))
        )
    ).all():
        if on_tool is None or step_id is None:
            continue
        running[on_tool].append((step_id, recipe))
        end = (_ts(tracked_in_at) or t_now) + process_s
        busy[on_tool] = max(busy[on_tool], end - t_now)
    qualified: dict[int, set[str]] = defaultdict(set)
    for tool_id, name in (
        await session.execute(
            select(RecipeQualification.equipment_id, Recipe.name)
            .join(RecipeVersion, RecipeVersion.id == RecipeQualification.recipe_version_id)
            .join(Recipe, Recipe.id == RecipeVersion.recipe_id)
            .where(
                RecipeQualification.equipment_id.in_(ids),
                RecipeVersion.status == RecipeVersionStatus.APPROVED,
                recipes_service.standing(now),
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
                # The equipment row has no control state until the OPC UA adapter records it:
                # until then every tool counts as OnlineRemote (the policy checks it already).
                control_state=policy.ONLINE_REMOTE,
                area_id=t.area_id,
                chambers_up=None
                if not states
                else sum(1 for s in states if s in PRODUCTION_STATES),
                max_lots=t.max_lots,
                running=tuple(running.get(t.id, ())),
                busy_for_s=max(0.0, busy.get(t.id, 0.0)),
                pm_due=t.id in pm_due,
                qualified=frozenset(qualified.get(t.id, ())),
                reticles=reticles.get(t.id, {}),
                current_setup=t.current_setup,
                lots_since_setup=t.setup_lots,
            )
        )
    return snapshots


@dataclass(frozen=True)
class _RouteInfo:
    steps: dict[int, policy.StepSnapshot]  # by step id
    remaining_s: dict[int, float]  # by step id: this and later steps
    next_group: dict[int, int | None]  # by step id
    by_sequence: dict[int, dict[int, int]]  # route version → sequence → step id


# Steps of a route version that lots run never change (only drafts are edited), so their
# structure is cached per process, keyed by id and creation time (ids of rolled-back rows can
# come back). Reticles are not cached: they follow recipe approvals.
_ROUTE_CACHE: dict[tuple[int, str], _RouteInfo] = {}
_ROUTE_CACHE_SIZE = 256


async def _route_info(session: AsyncSession, route_version_ids: set[int]) -> _RouteInfo:
    keys = {
        rv_id: (rv_id, created.isoformat())
        for rv_id, created in (
            await session.execute(
                select(RouteVersion.id, RouteVersion.created_at).where(
                    RouteVersion.id.in_(list(route_version_ids))
                )
            )
        ).all()
    }
    missing = {rv for rv, key in keys.items() if key not in _ROUTE_CACHE}
    if missing:
        if len(_ROUTE_CACHE) + len(missing) > _ROUTE_CACHE_SIZE:
            _ROUTE_CACHE.clear()
        loaded = await _load_routes(session, missing)
        for rv in missing:
            _ROUTE_CACHE[keys[rv]] = loaded[rv]
    parts = [_ROUTE_CACHE[key] for key in keys.values()]
    if len(parts) == 1:
        return parts[0]
    merged = _RouteInfo({}, {}, {}, {})
    for part in parts:
        merged.steps.update(part.steps)
        merged.remaining_s.update(part.remaining_s)
        merged.next_group.update(part.next_group)
        merged.by_sequence.update(part.by_sequence)
    return merged


async def _load_routes(session: AsyncSession, route_version_ids: set[int]) -> dict[int, _RouteInfo]:
    rows = (
        await session.execute(
            select(
                Step.id,
                Step.route_version_id,
                Step.sequence,
                Step.tool_group_id,
                Step.operation,
                Step.recipe_name,
                Step.process_time_s,
                Step.batch_min,
                Step.batch_max,
                Step.setup,
                Step.same_tool_as_sequence,
            )
            .where(Step.route_version_id.in_(list(route_version_ids)))
            .order_by(Step.route_version_id, Step.sequence.desc())
        )
    ).all()
    out = {rv: _RouteInfo({}, {}, {}, {rv: {}}) for rv in route_version_ids}
    current_rv, acc, following = None, 0.0, None
    for r in rows:  # last step first, per route version
        info = out[r.route_version_id]
        if r.route_version_id != current_rv:
            current_rv, acc, following = r.route_version_id, 0.0, None
        acc += r.process_time_s
        info.steps[r.id] = policy.StepSnapshot(
            id=r.id,
            sequence=r.sequence,
            tool_group_id=r.tool_group_id,
            operation=r.operation,
            recipe=r.recipe_name,
            process_time_s=float(r.process_time_s),
            batch_min=r.batch_min,
            batch_max=r.batch_max,
            setup=r.setup,
            same_tool_as_sequence=r.same_tool_as_sequence,
        )
        info.remaining_s[r.id] = acc
        info.next_group[r.id] = following
        following = r.tool_group_id
        info.by_sequence[r.route_version_id][r.sequence] = r.id
    return out


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
            )
            .join(Step, Step.id == Lot.current_step_id)
            .where(Lot.state.in_((LotState.WAITING, LotState.ON_HOLD)), *where)
        )
    ).all()
    if not rows:
        return []
    route = await _route_info(session, {r.route_version_id for r in rows})
    lot_ids = [r.id for r in rows]
    deadlines: dict[tuple[int, int], float] = {}
    for chunk in _chunks(lot_ids):
        for lot_id, step_id, deadline in (
            await session.execute(
                select(QTimeWindow.lot_id, QTimeWindow.to_step_id, QTimeWindow.deadline_at).where(
                    QTimeWindow.lot_id.in_(chunk), QTimeWindow.status == QTimeStatus.OPEN
                )
            )
        ).all():
            key = (lot_id, step_id)
            deadlines[key] = min(deadlines.get(key, float("inf")), deadline.timestamp())
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
                wafer_count=r.wafer_count,
                step=step,
                queued_at=r.step_entered_at.timestamp(),
                due_at=_ts(r.due_at),
                remaining_process_s=route.remaining_s[r.current_step_id],
                next_tool_group_id=route.next_group[r.current_step_id],
                qtime_deadline=closes,
                dedicated_tool_id=dedicated.get(r.id),
                recipe_by_tool=overrides.get(r.id),
            )
        )
    return lots


def _chunks(ids: Sequence[int], size: int = 5000) -> Iterable[list[int]]:
    for i in range(0, len(ids), size):
        yield list(ids[i : i + size])


async def _dedicated_tools(
    session: AsyncSession, rows: Sequence[Any], route: _RouteInfo
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
    route: _RouteInfo,
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
    queued_stmt = (
        select(Lot.fab_id, Step.tool_group_id, func.count(), func.sum(Step.process_time_s))
        .join(Step, Step.id == Lot.current_step_id)
        .where(Lot.state == LotState.WAITING)
        .group_by(Lot.fab_id, Step.tool_group_id)
    )
    up_stmt = (
        select(Equipment.fab_id, Equipment.tool_group_id, func.count())
        .where(Equipment.e10_state.in_(PRODUCTION_STATES))
        .group_by(Equipment.fab_id, Equipment.tool_group_id)
    )
    if groups is not None:
        wanted = sorted(groups)
        queued_stmt = queued_stmt.where(Step.tool_group_id.in_(wanted))
        up_stmt = up_stmt.where(Equipment.tool_group_id.in_(wanted))
    queued = (await session.execute(queued_stmt)).all()
    up = dict(((fab, group), n) for fab, group, n in (await session.execute(up_stmt)).all())
    for fab, group, n, work in queued:
        loads[(fab, group)] = policy.GroupLoad(n, float(work or 0), up.get((fab, group), 0))
    for key, n in up.items():
        loads.setdefault(key, policy.GroupLoad(0, 0.0, n))
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


# --- what-next -----------------------------------------------------------------------------


async def dispatch_list(
    session: AsyncSession, tool_code: str, *, clock: Clock
) -> policy.DispatchList:
    """What-next for one tool: its lots ranked by its rule set, and the excluded ones."""
    now = clock.now()
    found = await tool_snapshots(session, [Equipment.code == tool_code], now)
    if not found:
        raise NotFound(f"tool {tool_code!r} does not exist", code="tool.not_found")
    (tool,) = found
    lots = await lot_snapshots(
        session,
        [Lot.fab_id == tool.fab_id, Step.tool_group_id == tool.tool_group_id],
        now,
        [tool],
    )
    sets = await active_rule_sets(session, [tool.fab_id])
    # Only the loads WIP balancing looks at: the tool groups of the lots' next steps.
    nexts = {lot.next_tool_group_id for lot in lots if lot.next_tool_group_id is not None}
    sit = await situation(session, now, nexts)
    return policy.rank_lots(tool, lots, sit, sets.for_tool(tool))


@dataclass(frozen=True)
class FabSnapshot:
    """One consistent read of a fab for a dispatch cycle: its tools, the lots waiting per tool
    group, the rule sets (production and shadow) and the situation."""

    fab_id: int
    tools: list[policy.ToolSnapshot]
    lots_by_group: dict[int, list[policy.LotSnapshot]]
    rule_sets: RuleSets
    shadow_sets: RuleSets
    situation: policy.Situation

    def rank(
        self,
        tool: policy.ToolSnapshot,
        *,
        explain: bool = False,
        shadow: bool = False,
        without: Collection[int] = (),
    ) -> policy.DispatchList | None:
        """What-next for the tool with its production set (``shadow``: its shadow set, or None
        when no shadow set applies to it), leaving out the lots ``without`` (ids: lots given to
        other tools earlier in the same cycle)."""
        rule_set = self.shadow_sets.own(tool) if shadow else self.rule_sets.for_tool(tool)
        if rule_set is None:
            return None
        lots = self.lots_by_group.get(tool.tool_group_id, [])
        if without:
            lots = [lot for lot in lots if lot.id not in without]
        return policy.rank_lots(
            tool,
            lots,
            self.situation,
            rule_set,
            explain_all=explain,
        )


async def fab_snapshot(session: AsyncSession, fab_code: str, now: datetime) -> FabSnapshot:
    fab = await fabs_service.get_fab(session, fab_code)
    tools = await tool_snapshots(session, [Equipment.fab_id == fab.id], now)
    lots = await lot_snapshots(session, [Lot.fab_id == fab.id], now, tools)
    by_group: dict[int, list[policy.LotSnapshot]] = defaultdict(list)
    for lot in lots:
        by_group[lot.step.tool_group_id].append(lot)
    return FabSnapshot(
        fab.id,
        tools,
        dict(by_group),
        await active_rule_sets(session, [fab.id]),
        await active_rule_sets(session, [fab.id], shadow=True),
        await situation(session, now),
    )


async def refresh_fab(
    session: AsyncSession, fab_code: str, *, clock: Clock, explain: bool = False
) -> list[policy.DispatchList]:
    """What-next for every tool of a fab, from one set of reads (the dispatcher's cycle)."""
    snap = await fab_snapshot(session, fab_code, clock.now())
    out = []
    for tool in snap.tools:
        listing = snap.rank(tool, explain=explain)
        assert listing is not None
        out.append(listing)
    return out


# --- where-next ----------------------------------------------------------------------------


async def where_next(session: AsyncSession, lot_code: str, *, clock: Clock) -> policy.WhereNext:
    """Where-next for one lot: the tools of its step's group in every fab, soonest start first."""
    now = clock.now()
    lot = await get_by_key(session, Lot, Lot.code, lot_code, code="lot.not_found", what="lot")
    if lot.current_step_id is None:
        raise RuleViolation("lot.finished", f"lot {lot_code} is {lot.state.value}")
    group_id = (
        await session.execute(select(Step.tool_group_id).where(Step.id == lot.current_step_id))
    ).scalar_one()
    tools = await tool_snapshots(session, [Equipment.tool_group_id == group_id], now)
    found = await lot_snapshots(session, [Lot.id == lot.id], now, tools)
    if not found:
        snapshot = await _any_state_snapshot(session, lot, now)
    else:
        (snapshot,) = found
    return policy.rank_tools(snapshot, tools, await situation(session, now, {group_id}))


async def _any_state_snapshot(session: AsyncSession, lot: Lot, now: datetime) -> policy.LotSnapshot:
    """A lot that is running or travelling: answered with its exclusion, not a 404."""
    assert lot.current_step_id is not None
    route = await _route_info(session, {lot.route_version_id})
    return policy.LotSnapshot(
        id=lot.id,
        code=lot.code,
        fab_id=lot.fab_id,
        state=lot.state.value,
        holds=0,
        priority=lot.priority_class.value,
        wafer_count=lot.wafer_count,
        step=route.steps[lot.current_step_id],
        queued_at=lot.step_entered_at.timestamp(),
    )


async def send_to_fab(
    session: AsyncSession,
    lot_code: str,
    to_fab: str,
    *,
    version: int | None,
    actor: str,
    clock: Clock,
) -> Lot:
    """Follow a where-next answer to another fab: ship the lot there (an inter-fab transfer).

    Refused unless a tool of that fab is among the lot's options, so the dispatcher never sends
    a lot where nothing can run its step.
    """
    answer = await where_next(session, lot_code, clock=clock)
    fab = await fabs_service.get_fab(session, to_fab)
    if answer.lot_exclusion is not None:
        raise RuleViolation(answer.lot_exclusion.code, answer.lot_exclusion.detail)
    if not any(o.tool.fab_id == fab.id for o in answer.options):
        raise RuleViolation(
            "dispatch.no_option",
            f"no tool in fab {to_fab} can run lot {lot_code}'s step "
            "(see where-next for the reasons)",
        )
    return await lots_service.ship(
        session, lot_code, ShipRequest(to_fab=to_fab, version=version), actor=actor, clock=clock
    )


# --- master data for the rules -------------------------------------------------------------


async def set_transfer_time(
    session: AsyncSession, from_fab: str, to_fab: str, time_s: int
) -> FabTransferTime:
    a = await fabs_service.get_fab(session, from_fab)
    b = await fabs_service.get_fab(session, to_fab)
    if a.id == b.id:
        raise InvalidInput("a transfer goes between two fabs", code="dispatch.same_fab")
    row = await session.scalar(
        select(FabTransferTime).where(
            FabTransferTime.from_fab_id == a.id, FabTransferTime.to_fab_id == b.id
        )
    )
    if row is None:
        row = FabTransferTime(from_fab_id=a.id, to_fab_id=b.id, time_s=time_s)
        session.add(row)
    else:
        row.time_s = time_s
    await session.flush()
    return row


async def set_setup_change(
    session: AsyncSession, from_setup: str | None, to_setup: str, time_s: int
) -> SetupChange:
    """Time to change a tool over to ``to_setup`` (from ``from_setup``; None: from any)."""
    key = from_setup or "*"
    row = await session.scalar(
        select(SetupChange).where(SetupChange.from_setup == key, SetupChange.to_setup == to_setup)
    )
    if row is None:
        row = SetupChange(from_setup=key, to_setup=to_setup, time_s=time_s)
        session.add(row)
    else:
        row.time_s = time_s
    await session.flush()
    return row


async def set_min_run(session: AsyncSession, setup: str, min_run: int) -> SetupMinRun:
    row = await session.scalar(select(SetupMinRun).where(SetupMinRun.setup == setup))
    if row is None:
        row = SetupMinRun(setup=setup, min_run=min_run)
        session.add(row)
    else:
        row.min_run = min_run
    await session.flush()
    return row


async def setup_data(session: AsyncSession) -> tuple[list[SetupChange], list[SetupMinRun]]:
    changes = await session.scalars(
        select(SetupChange).order_by(SetupChange.to_setup, SetupChange.from_setup)
    )
    runs = await session.scalars(select(SetupMinRun).order_by(SetupMinRun.setup))
    return list(changes), list(runs)


async def fab_codes(session: AsyncSession) -> dict[int, str]:
    return dict((await session.execute(select(Fab.id, Fab.code))).all())
