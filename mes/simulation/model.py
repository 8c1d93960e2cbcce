"""The static fab a simulation runs: an SMT2020 testbed turned into what the engine and the
policy need, computed once (step snapshots, expected remaining process time, the next step's
tool group, setup tables, calendars per family).

Ids follow the MES importer's meaning: one tool group per family, one recipe per (family,
step description), a step's ``same_tool_as_sequence`` names the earlier step whose tool it must
use. The fab id is 1 (a testbed is one fab).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import mes.dispatch.policy as policy
import mes.lots.qtime_gate_rules as gate_rules
import mes.smt2020.tables as tables

FAB_ID = 1


@dataclass(frozen=True, slots=True)
class Family:
    id: int
    name: str
    area: str
    count: int
    is_delay: bool
    cascading: bool
    load_s: float
    unload_s: float
    max_lots: int  # lots per job: the largest batch of its steps (1 without batches)
    recipes: frozenset[str]
    source: tables.ToolFamily


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a route with everything the engine needs, in its route order."""

    index: int
    seq: int
    family: int
    snapshot: policy.StepSnapshot
    per: str
    process_s: float  # mean, per wafer / lot / batch as ``per`` says
    spread_s: float
    setup: str | None
    sample_p: float  # probability that a lot runs the step
    rework_p: float
    rework_to: int | None  # route index a reworked lot returns to
    qtime_to: int | None  # route index whose start must come within qtime_s of this step's end
    qtime_s: float | None
    dedicated_from: int | None  # route index whose tool this step must use
    cascade_s: float | None
    cascade_per: str
    is_delay: bool
    next_group: int | None
    remaining_s: float  # expected raw process time of this and every later step


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    steps: tuple[Step, ...]
    raw_s: float  # expected raw process time of the whole route (flow factor)


def priority_class(prior: int) -> str:
    return "super_hot" if prior >= 30 else "hot" if prior >= 20 else "normal"


@dataclass(frozen=True)
class FabModel:
    testbed: tables.Testbed
    families: tuple[Family, ...]
    family_by_name: Mapping[str, Family]
    routes: Mapping[str, Route]  # by part
    setup_times: Mapping[tuple[str | None, str], float]
    min_run: Mapping[str, int]
    # (calendar, attachment) of the breakdowns and PMs of each family id.
    downs: Mapping[int, tuple[tuple[tables.DownCalendar, tables.Attachment], ...]]
    pms: Mapping[int, tuple[tuple[tables.PmCalendar, tables.Attachment], ...]]
    t0: float  # testbed time zero, epoch seconds
    # Relative due date (due - start) of each (part, priority) release stream.
    relative_due_s: Mapping[tuple[str, int], float]


def _expected(step: tables.RouteStep, wafers: int = tables.WAFERS_PER_LOT) -> float:
    return step.lot_process_s(wafers) * min(1.0, max(0.0, step.step_percent / 100.0))


def build(testbed: tables.Testbed) -> FabModel:
    batch_max: dict[str, int] = {}
    recipes: dict[str, set[str]] = {}
    for raw_steps in testbed.routes.values():
        for s in raw_steps:
            recipes.setdefault(s.family, set()).add(testbed.recipe_name(s))
            if s.batch_lots is not None:
                batch_max[s.family] = max(batch_max.get(s.family, 1), s.batch_lots[1])
    families = tuple(
        Family(
            id=i + 1,
            name=f.name,
            area=f.area,
            count=f.count,
            is_delay=f.is_delay,
            cascading=f.cascading,
            load_s=f.load_s,
            unload_s=f.unload_s,
            max_lots=batch_max.get(f.name, 1),
            recipes=frozenset(recipes.get(f.name, ())),
            source=f,
        )
        for i, f in enumerate(testbed.families.values())
    )
    by_name = {f.name: f for f in families}
    routes: dict[str, Route] = {}
    step_id = 0
    built_routes: dict[str, Route] = {}
    for route_name, raw in testbed.routes.items():
        index_of = {s.step: i for i, s in enumerate(raw)}
        dedicated = {
            index_of[s.same_tool_for_step]: i
            for i, s in enumerate(raw)
            if s.same_tool_for_step is not None
            and s.same_tool_for_step > s.step
            and s.same_tool_for_step in index_of
        }
        remaining = [0.0] * (len(raw) + 1)
        for i in range(len(raw) - 1, -1, -1):
            remaining[i] = remaining[i + 1] + _expected(raw[i])
        steps: list[Step] = []
        for i, s in enumerate(raw):
            step_id += 1
            fam = by_name[s.family]
            batch = s.batch_lots
            qtime = s.cqt_step is not None and s.cqt_s is not None and s.cqt_step in index_of
            qtime = qtime and index_of[s.cqt_step or 0] > i
            dedicated_from = dedicated.get(i)
            snapshot = policy.StepSnapshot(
                id=step_id,
                sequence=s.step,
                tool_group_id=fam.id,
                operation=s.desc,
                recipe=testbed.recipe_name(s),
                process_time_s=s.lot_process_s(),
                batch_min=batch[0] if batch else None,
                batch_max=batch[1] if batch else None,
                setup=s.setup,
                same_tool_as_sequence=raw[dedicated_from].step
                if dedicated_from is not None
                else None,
            )
            rework_to = index_of.get(s.rework_step) if s.rework_step is not None else None
            steps.append(
                Step(
                    index=i,
                    seq=s.step,
                    family=fam.id,
                    snapshot=snapshot,
                    per=s.per,
                    process_s=s.process_s,
                    spread_s=s.process_spread_s,
                    setup=s.setup,
                    sample_p=min(1.0, max(0.0, s.step_percent / 100.0)),
                    rework_p=min(1.0, max(0.0, s.rework_percent / 100.0))
                    if rework_to is not None and rework_to <= i
                    else 0.0,
                    rework_to=rework_to if rework_to is not None and rework_to <= i else None,
                    qtime_to=index_of[s.cqt_step] if qtime and s.cqt_step is not None else None,
                    qtime_s=s.cqt_s if qtime else None,
                    dedicated_from=dedicated_from,
                    cascade_s=s.cascade_s if fam.cascading else None,
                    cascade_per=s.cascade_per,
                    is_delay=fam.is_delay,
                    next_group=by_name[raw[i + 1].family].id if i + 1 < len(raw) else None,
                    remaining_s=remaining[i],
                )
            )
        built_routes[route_name] = Route(route_name, _with_chains(steps), remaining[0])
    for part in testbed.parts:
        routes[part.part] = built_routes[part.route]
    setup_times: dict[tuple[str | None, str], float] = {}
    for route_steps in testbed.routes.values():
        for s in route_steps:
            if s.setup and s.setup_time_s is not None:
                key = (None, s.setup)
                setup_times[key] = max(setup_times.get(key, 0.0), s.setup_time_s)
    for st in testbed.setup_times:
        setup_times[(st.from_setup, st.to_setup)] = st.time_s
    downs: dict[int, list[tuple[tables.DownCalendar, tables.Attachment]]] = {}
    pms: dict[int, list[tuple[tables.PmCalendar, tables.Attachment]]] = {}
    for a in testbed.attachments:
        if a.resource_type == "stngrp":
            targets = [f for f in families if f.area == a.resource]
        else:
            targets = [by_name[a.resource]] if a.resource in by_name else []
        for fam in targets:
            if fam.is_delay:
                continue
            if a.kind == "down":
                downs.setdefault(fam.id, []).append((testbed.downs[a.calendar], a))
            else:
                pms.setdefault(fam.id, []).append((testbed.pms[a.calendar], a))
    relative_due: dict[tuple[str, int], float] = {}
    for order in testbed.orders:
        if order.due is not None:
            relative_due.setdefault(
                (order.part, order.priority), (order.due - order.start).total_seconds()
            )
    return FabModel(
        testbed=testbed,
        families=families,
        family_by_name=by_name,
        routes=routes,
        setup_times=setup_times,
        min_run={m.setup: m.min_run for m in testbed.min_runs},
        downs={k: tuple(v) for k, v in downs.items()},
        pms={k: tuple(v) for k, v in pms.items()},
        t0=testbed.start.timestamp(),
        relative_due_s=relative_due,
    )


def _with_chains(steps: list[Step]) -> tuple[Step, ...]:
    """Each step that opens a Q-time window gets the chain a start there commits to (the gate's
    input); a window closing at a delay, which has no queue to wait in, ends the chain."""
    plain = [
        gate_rules.RouteStep(
            sequence=step.seq,
            group_id=step.family,
            process_s=step.snapshot.process_time_s,
            batch=step.snapshot.batch_max or 1,
            qtime_to_sequence=steps[step.qtime_to].seq if step.qtime_to is not None else None,
            qtime_max_s=step.qtime_s,
            gateable=not step.is_delay,
        )
        for step in steps
    ]
    out = list(steps)
    for i, step in enumerate(steps):
        if step.qtime_to is not None:
            chain = gate_rules.chain_from(plain, i)
            if chain:
                out[i] = replace(step, snapshot=replace(step.snapshot, qtime_chain=chain))
    return tuple(out)


def load(folder: Path | str) -> FabModel:
    return build(tables.read_testbed(folder))


def lot_type_name(part: str, priority: int) -> str:
    """``Lot_3``, ``HotLot_3``, ``SuperHotLot_3`` for part_3 (the testbed's stream names)."""
    suffix = part.split("_", 1)[1] if part.startswith("part_") else part
    kind = {10: "Lot", 20: "HotLot", 30: "SuperHotLot"}.get(priority, f"P{priority}Lot")
    return f"{kind}_{suffix}"
