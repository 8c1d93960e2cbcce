"""The benchmark protocol's quality goals, judged from the pooled figures of a run (``kpi``):
a candidate rule set against FIFO and critical ratio run on the same seeds. Pure.

- weighted cost at least 20 % below the better of FIFO and CR;
- every normal lot type's mean cycle time at most 0.9 x FIFO's;
- on time: every normal lot type ≥ 50 %, every hot and super-hot type ≥ 85 %;
- no lot type's mean cycle time above FIFO's;
- the WIP stable over the evaluated days: on every seed it drifts by at most 5 % of its mean
  (the least-squares slope x the evaluated days, ``kpi.wip_trend``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mes.simulation.model import priority_class

COST_CUT = 0.20
NORMAL_CT_RATIO = 0.9
ON_TIME_NORMAL_PCT = 50.0
ON_TIME_HOT_PCT = 85.0
WIP_DRIFT = 0.05


@dataclass(frozen=True)
class Goal:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: the figures to judge it are missing


def judge(summaries: Mapping[str, Mapping[str, Any]], candidate: str) -> list[Goal]:
    """The goals for ``candidate``; ``summaries`` must hold ``fifo`` and ``cr`` too."""
    s, fifo, cr = summaries[candidate], summaries.get("fifo"), summaries.get("cr")
    types = {t["lot_type"]: t for t in s["lot_types"] if t["completed"]}
    fifo_types = {t["lot_type"]: t for t in fifo["lot_types"] if t["completed"]} if fifo else {}
    return [
        _cost(s, fifo, cr),
        _ct_ratio(types, fifo_types, normal_only=True),
        _on_time(types, "normal", ON_TIME_NORMAL_PCT),
        _on_time(types, "hot", ON_TIME_HOT_PCT),
        _ct_ratio(types, fifo_types, normal_only=False),
        _wip(s),
    ]


def _cost(s: Mapping[str, Any], fifo: Any, cr: Any) -> Goal:
    goal = f"≥ {COST_CUT:.0%} below the better of FIFO and CR"
    costs = [b["weighted_cost"] for b in (fifo, cr) if b and b["weighted_cost"] is not None]
    if s["weighted_cost"] is None or len(costs) < 2 or min(costs) <= 0:
        return Goal("weighted cost", goal, "-", None)
    best = min(costs)
    return Goal(
        "weighted cost",
        goal,
        f"{s['weighted_cost']:.1f} vs {best:.1f}: {s['weighted_cost'] / best - 1:+.1%}",
        s["weighted_cost"] <= (1 - COST_CUT) * best,
    )


def _ct_ratio(
    types: Mapping[str, Mapping[str, Any]],
    fifo_types: Mapping[str, Mapping[str, Any]],
    *,
    normal_only: bool,
) -> Goal:
    limit = NORMAL_CT_RATIO if normal_only else 1.0
    name = "normal-lot cycle time" if normal_only else "no lot type slower than FIFO"
    goal = f"≤ {limit:g} x FIFO's, every {'normal ' if normal_only else ''}lot type"
    # Over the types FIFO completed: one the candidate completed none of is a miss (a set that
    # starves a lot type must not pass for having no cycle time to compare).
    ratios: dict[str, float] = {}
    for kind, base in fifo_types.items():
        if normal_only and priority_class(base["priority"]) != "normal":
            continue
        ct = (types.get(kind) or {}).get("ct_mean_days")
        if base["ct_mean_days"]:
            ratios[kind] = math.inf if ct is None else ct / base["ct_mean_days"]
    if not ratios:
        return Goal(name, goal, "-", None)
    measured = ", ".join(
        f"{k} {'none done' if math.isinf(v) else f'{v:.2f}'}" for k, v in sorted(ratios.items())
    )
    return Goal(name, goal, measured, max(ratios.values()) <= limit)


def _on_time(types: Mapping[str, Mapping[str, Any]], kind: str, limit: float) -> Goal:
    wanted = ("normal",) if kind == "normal" else ("hot", "super_hot")
    found = {
        name: t["on_time_pct"]
        for name, t in types.items()
        if priority_class(t["priority"]) in wanted and t["on_time_pct"] is not None
    }
    label = f"on time, {'normal' if kind == 'normal' else 'hot and super-hot'} lots"
    goal = f"≥ {limit:g} %, every such lot type"
    if not found:
        return Goal(label, goal, "-", None)
    measured = ", ".join(f"{k} {v:.0f} %" for k, v in sorted(found.items()))
    return Goal(label, goal, measured, min(found.values()) >= limit)


def _wip(s: Mapping[str, Any]) -> Goal:
    goal = f"drift ≤ {WIP_DRIFT:.0%} of the mean WIP over the evaluated days, every seed"
    slopes = s.get("wip_trend_lots_per_day") or []
    days = s["days"] - s["warmup_days"]
    if not slopes or any(x is None for x in slopes) or not s.get("wip_mean"):
        return Goal("WIP stable", goal, "-", None)
    drifts = [slope * days / s["wip_mean"] for slope in slopes]
    measured = ", ".join(f"{x:+.1%}" for x in drifts) + f" of {s['wip_mean']:.0f} lots"
    return Goal("WIP stable", goal, measured, all(abs(x) <= WIP_DRIFT for x in drifts))


def table(goals: list[Goal]) -> str:
    mark = {True: "met", False: "MISSED", None: "n/a"}
    return "\n".join(f"  {g.name:<33}{mark[g.met]:<8}{g.measured}  (goal {g.goal})" for g in goals)
