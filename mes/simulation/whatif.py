"""What-if from the live MES: one consistent read of a fab turned into a simulation start
(the testbed tables the simulator reads, plus where everything stands now), then the same
runs as ``mes simulate``.

Read: the fab's tool groups and tools (state, setup, PM due), the route versions its lots run
(steps with batch sizes, setups, Q-time, dedication, sampling, rework targets), the setup tables,
the lots in the fab (waiting and held at their step since their arrival, running on their tool
until their step's process time is up), their open Q-time windows, and the production rule sets.

Assumptions (the MES does not hold these): a down tool is back after ``repair_s``, a tool due
for PM does it first, for ``pm_s``; held lots count as waiting (released at once); no rework
percentages, breakdowns or PM calendars, and no releases beyond the WIP (the start plan is not
read yet). A tool group whose tools each hold several lots without batch steps is a pure delay.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import mes.smt2020.tables as tables
from mes.dispatch import policy, rule_sets, setups, snapshots
from mes.equipment.models import Equipment
from mes.fabs import service as fabs_service
from mes.fabs.models import Area, ToolGroup
from mes.lots.models import Lot, QTimeWindow
from mes.lots.states import LotState, QTimeStatus
from mes.products.models import Product
from mes.routes.models import Step
from mes.simulation.rulesets import SimRules
from mes.simulation.state import InitialState, ToolStart

PRIOR = {"normal": 10, "hot": 20, "super_hot": 30}


@dataclass
class LiveFab:
    """A fab as read now: the tables to simulate, the state to start from, and what was read."""

    testbed: tables.Testbed
    initial: InitialState
    production: SimRules
    counts: dict[str, int] = field(default_factory=dict)


async def read_fab(
    session: AsyncSession,
    fab_code: str,
    now: datetime,
    *,
    repair_s: float = 2 * 3600.0,
    pm_s: float = 4 * 3600.0,
) -> LiveFab:
    fab = await fabs_service.get_fab(session, fab_code)
    tools = await snapshots.tool_snapshots(session, [Equipment.fab_id == fab.id], now)
    group_code = dict((await session.execute(select(ToolGroup.id, ToolGroup.code))).all())
    area_code = dict((await session.execute(select(Area.id, Area.code))).all())
    product_code = dict((await session.execute(select(Product.id, Product.code))).all())
    lots = (
        await session.execute(
            select(
                Lot.id,
                Lot.code,
                Lot.state,
                Lot.priority_class,
                Lot.wafer_count,
                Lot.current_step_id,
                Lot.route_version_id,
                Lot.product_id,
                Lot.due_at,
                Lot.step_entered_at,
                Lot.tracked_in_at,
                Lot.equipment_id,
            ).where(
                Lot.fab_id == fab.id,
                Lot.state.in_((LotState.WAITING, LotState.ON_HOLD, LotState.RUNNING)),
                Lot.current_step_id.is_not(None),
            )
        )
    ).all()
    versions = sorted({r.route_version_id for r in lots})
    steps = list(
        await session.scalars(
            select(Step)
            .where(Step.route_version_id.in_(versions))
            .order_by(Step.route_version_id, Step.sequence)
        )
    )
    by_version: dict[int, list[Step]] = defaultdict(list)
    for s in steps:
        by_version[s.route_version_id].append(s)
    step_of = {s.id: s for s in steps}

    # Tool groups as families; a tool's number in its family, in code order.
    tools_of: dict[int, list[policy.ToolSnapshot]] = defaultdict(list)
    for t in sorted(tools, key=lambda t: t.code):
        tools_of[t.tool_group_id].append(t)
    batch_groups = {s.tool_group_id for s in steps if s.batch_max is not None}
    families: dict[str, tables.ToolFamily] = {}
    for gid in sorted({s.tool_group_id for s in steps} | set(tools_of), key=group_code.__getitem__):
        members = tools_of.get(gid, [])
        delay = bool(members) and gid not in batch_groups and all(t.max_lots > 1 for t in members)
        area = next((area_code[t.area_id] for t in members if t.area_id in area_code), None)
        families[group_code[gid]] = tables.ToolFamily(
            name=group_code[gid],
            area=area or group_code[gid],
            count=len(members),
            location="Delay" if delay else "Fab",
            cascading=False,
            load_s=0.0,
            unload_s=0.0,
            rule="",
            ranking=(),
            wake_rank="",
            setup_group="",
        )

    # Route versions as routes, one part per (product, route version).
    routes: dict[str, tuple[tables.RouteStep, ...]] = {}
    for rv, rv_steps in by_version.items():
        forward = {
            s.same_tool_as_sequence: s.sequence
            for s in rv_steps
            if s.same_tool_as_sequence is not None
        }
        routes[f"rv{rv}"] = tuple(_route_step(f"rv{rv}", s, group_code, forward) for s in rv_steps)
    parts = {
        (r.product_id, r.route_version_id): tables.Part(
            f"{product_code[r.product_id]}@rv{r.route_version_id}",
            product_code[r.product_id],
            "",
            f"rv{r.route_version_id}",
        )
        for r in lots
    }

    windows: dict[str, dict[int, float]] = defaultdict(dict)
    code_of = {r.id: r.code for r in lots}
    for lot_id, to_step, deadline in (
        await session.execute(
            select(QTimeWindow.lot_id, QTimeWindow.to_step_id, QTimeWindow.deadline_at).where(
                QTimeWindow.fab_id == fab.id, QTimeWindow.status == QTimeStatus.OPEN
            )
        )
    ).all():
        if lot_id in code_of and to_step in step_of:
            seq = step_of[to_step].sequence
            known = windows[code_of[lot_id]].get(seq, deadline.timestamp())
            windows[code_of[lot_id]][seq] = min(known, deadline.timestamp())

    number = {
        t.id: (group_code[t.tool_group_id], n + 1)
        for ts in tools_of.values()
        for n, t in enumerate(ts)
    }
    wip, running, entered = [], {}, {}
    t_now = now.timestamp()
    for r in lots:
        step = step_of[r.current_step_id]
        wip.append(
            tables.Lot(
                name=r.code,
                part=parts[(r.product_id, r.route_version_id)].part,
                priority=PRIOR.get(r.priority_class.value, 10),
                pieces=r.wafer_count,
                start=now,
                due=r.due_at,
                step=step.sequence,
            )
        )
        if r.state == LotState.RUNNING and r.equipment_id in number:
            began = (r.tracked_in_at or now).timestamp()
            running[r.code] = (*number[r.equipment_id], max(t_now, began + step.process_time_s))
        else:
            entered[r.code] = min(t_now, r.step_entered_at.timestamp())

    starts = {}
    for t in tools:
        down = t.e10_state not in policy.UP_FOR_PRODUCTION
        starts[number[t.id]] = ToolStart(
            setup=t.current_setup,
            lots_since_setup=t.lots_since_setup,
            down_for_s=repair_s if down else 0.0,
            pm_for_s=pm_s if t.pm_due else 0.0,
        )
    changes, runs = await setups.setup_data(session)
    testbed = tables.Testbed(
        families=families,
        parts=tuple(parts.values()),
        routes=routes,
        wip=tuple(wip),
        setup_times=tuple(
            tables.SetupTime(None if c.from_setup == "*" else c.from_setup, c.to_setup, c.time_s)
            for c in changes
        ),
        min_runs=tuple(tables.MinRun("", m.setup, m.min_run) for m in runs),
    )
    active = await rule_sets.active_rule_sets(session, [fab.id])
    production = _production_rules(active, tools_of, group_code)
    return LiveFab(
        testbed,
        InitialState(running=running, entered_at=entered, windows=dict(windows), tools=starts),
        production,
        {
            "tools": len(tools),
            "tools_down": sum(1 for s in starts.values() if s.down_for_s > 0),
            "tools_pm_due": sum(1 for s in starts.values() if s.pm_for_s > 0),
            "lots": len(wip),
            "lots_running": len(running),
            "lots_held": sum(1 for r in lots if r.state == LotState.ON_HOLD),
            "qtime_windows_open": sum(len(w) for w in windows.values()),
            "route_versions": len(routes),
        },
    )


def _route_step(
    route: str, s: Step, group_code: dict[int, str], forward: dict[int, int]
) -> tables.RouteStep:
    batch = s.batch_max is not None
    return tables.RouteStep(
        route=route,
        step=s.sequence,
        desc=s.operation,
        family=group_code[s.tool_group_id],
        process_s=float(s.process_time_s),
        process_spread_s=0.0,
        per="per_batch" if batch else "per_lot",
        batch_min_wafers=(s.batch_min or 1) * tables.WAFERS_PER_LOT if batch else None,
        batch_max_wafers=(s.batch_max or 1) * tables.WAFERS_PER_LOT if batch else None,
        setup=s.setup,
        setup_time_s=None,
        same_tool_for_step=forward.get(s.sequence),
        rework_step=s.rework_to_sequence,
        rework_percent=0.0,
        step_percent=100.0 * s.sampling_rate,
        cqt_step=s.qtime_to_sequence,
        cqt_s=float(s.qtime_max_s) if s.qtime_max_s is not None else None,
    )


def _production_rules(
    active: rule_sets.RuleSets,
    tools_of: dict[int, list[policy.ToolSnapshot]],
    group_code: dict[int, str],
) -> SimRules:
    """The rule set production applies to each tool group (its first tool's), as specs."""
    per_family: dict[str, tuple[dict[str, Any], ...]] = {}
    for gid, members in tools_of.items():
        if members:
            chosen = active.for_tool(members[0])
            per_family[group_code[gid]] = tuple(
                {"rule": r.name, "weight": r.weight, "params": dict(r.params)} for r in chosen.rules
            )
    default = tuple(policy.DEFAULT_RULE_SET_SPEC)
    return SimRules("production", default, family_specs=per_family)
