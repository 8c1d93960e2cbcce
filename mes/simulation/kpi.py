"""Key figures of simulation runs: per lot type, per tool family, WIP over time, and one
weighted cost to compare rule sets by.

The protocol (docs/simulation.md): lot-type figures count the lots *released* at or after the
warm-up that completed within the horizon; tool figures and throughput count the time after the
warm-up. Runs of one rule set over several seeds are pooled (every lot counts once).

Weighted cost, per lot type ``t`` with ``n_t`` completed lots of which ``k_t`` were tardy by
``d_i`` days: ``cost_t = (10 k_t + Σ d_i) / n_t``; the rule set's cost is
``Σ_t w_t cost_t`` with ``w_t`` = 1 for normal lots, 2 for hot and 4 for super-hot lots.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mes.simulation.engine import DAY, Simulation
from mes.simulation.model import lot_type_name
from mes.simulation.state import TIME_SPLIT

LONGEST_WAITS = 5  # families listed per lot type where its lots queue longest
TARDY_LOT_COST = 10.0
PRIORITY_WEIGHT = {10: 1.0, 20: 2.0, 30: 4.0}


@dataclass
class RunResult:
    """What one run leaves for the figures (small and picklable: runs go between processes)."""

    rules: str
    seed: int
    days: float
    warmup_days: float
    # (part, priority, cycle time s, due - done s or None, raw process time s)
    lots: list[tuple[str, int, float, float | None, float]]
    released: dict[tuple[str, int], int]
    completed_after_warmup: int
    # family -> [tools, idle, busy, broken, maintenance, setup, queue length x s]
    families: dict[str, list[float]]
    wip: list[tuple[float, int]]  # (day, lots in the fab)
    wip_end: int
    counters: dict[str, int]
    wall_s: float = 0.0
    cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # Per lot type: [queue, in tool, transport, delay seconds, lots] summed over the lots
    # counted (``TIME_SPLIT``), and their queue seconds per family name.
    time_split: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    waits: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)


def collect(sim: Simulation, *, wall_s: float = 0.0, cpu_s: float = 0.0) -> RunResult:
    t0, start = sim.model.t0, sim.warmup_at
    lots = [
        (c.part, c.prior, c.done - c.released, None if c.due is None else c.due - c.done, c.raw_s)
        for c in sim.completed
        if c.released >= start and not c.wip_lot
    ]
    families: dict[str, list[float]] = {}
    for tool in sim.tools:
        base, base_setup = sim.base.get(tool.id, ([0.0] * 4, 0.0))
        row = families.setdefault(tool.family.name, [0.0] * 7)
        row[0] += 1
        for i in range(4):
            row[1 + i] += tool.buckets[i] - base[i]
        row[5] += tool.setup_s - base_setup
    for fid, area in sim.queue_area.items():
        name = sim.family[fid].name
        if name in families:
            families[name][6] = area - sim.base_queue.get(fid, 0.0)
    return RunResult(
        rules=sim.rules.name,
        seed=sim.seed,
        days=sim.days,
        warmup_days=sim.warmup_days,
        lots=lots,
        released=dict(sim.released_after_warmup),
        completed_after_warmup=sum(1 for c in sim.completed if c.done >= start),
        families=families,
        wip=[((t - t0) / DAY, n) for t, n in sim.wip_samples],
        wip_end=len(sim.lots),
        counters=dict(vars(sim.counters)),
        wall_s=wall_s,
        cpu_s=cpu_s,
        time_split={k: list(v) for k, v in sim.time_split.totals.items()},
        waits={
            key: {sim.family[fid].name: s for fid, s in waits.items()}
            for key, waits in sim.time_split.waits.items()
        },
    )


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def lot_types(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    pooled: dict[tuple[str, int], list[tuple[float, float | None, float]]] = defaultdict(list)
    released: dict[tuple[str, int], int] = defaultdict(int)
    for run in runs:
        for part, prior, ct, slack, raw in run.lots:
            pooled[(part, prior)].append((ct, slack, raw))
        for key, n in run.released.items():
            released[key] += n
    out = []
    for key in sorted(set(pooled) | set(released), key=lambda k: (k[1], k[0])):
        lots = pooled.get(key, [])
        cts = [ct / DAY for ct, _, _ in lots]
        dated = [slack for _, slack, _ in lots if slack is not None]
        tardy = [-s / DAY for s in dated if s < 0]
        n = len(lots)
        cost = (TARDY_LOT_COST * len(tardy) + sum(tardy)) / n if n else math.nan
        out.append(
            {
                "lot_type": lot_type_name(*key),
                "part": key[0],
                "priority": key[1],
                "released": released.get(key, 0),
                "completed": n,
                "ct_mean_days": _nan_none(statistics.fmean(cts) if cts else math.nan),
                "ct_p90_days": _nan_none(percentile(cts, 0.9)),
                "flow_factor": _nan_none(
                    statistics.fmean(ct / raw for ct, _, raw in lots if raw > 0) if n else math.nan
                ),
                "on_time_pct": _nan_none(
                    100.0 * sum(1 for s in dated if s >= 0) / len(dated) if dated else math.nan
                ),
                "tardiness_mean_days": _nan_none(sum(tardy) / n if n else math.nan),
                "cost": _nan_none(cost),
                "weight": PRIORITY_WEIGHT.get(key[1], 1.0),
                **_time_split(runs, key),
            }
        )
    return out


def _time_split(runs: Sequence[RunResult], key: tuple[str, int]) -> dict[str, Any]:
    """Where the lot type's cycle time went, in days per completed lot: queue, in tool (load,
    setup, process, unload, stops while loaded), transport, delay — they add up to the mean
    cycle time — and the families its lots queued longest at."""
    totals = [0.0] * (len(TIME_SPLIT) + 1)
    waits: dict[str, float] = defaultdict(float)
    for run in runs:
        for i, v in enumerate(run.time_split.get(key, ())):
            totals[i] += v
        for name, s in run.waits.get(key, {}).items():
            waits[name] += s
    n = totals[-1]
    out: dict[str, Any] = {
        f"{name}_days": round(totals[i] / n / DAY, 4) if n else None
        for i, name in enumerate(TIME_SPLIT)
    }
    longest = sorted(waits.items(), key=lambda kv: (-kv[1], kv[0]))[:LONGEST_WAITS]
    out["longest_waits"] = [
        {"family": name, "queue_days": round(s / n / DAY, 4)} for name, s in longest if n
    ]
    return out


def families(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    total: dict[str, list[float]] = {}
    for run in runs:
        for name, row in run.families.items():
            acc = total.setdefault(name, [0.0] * 7)
            for i, v in enumerate(row):
                acc[i] += v
    out = []
    for name, (tools, idle, busy, broken, maint, setup, queue) in sorted(total.items()):
        time = idle + busy + broken + maint
        span = time / tools if tools else 0.0  # seconds per tool (summed over runs)
        out.append(
            {
                "family": name,
                "tools": round(tools / max(1, len(runs))),
                "availability_pct": round(100 * (1 - (broken + maint) / time), 2) if time else None,
                "utilisation_pct": round(100 * (busy - setup) / time, 2) if time else None,
                "setup_pct": round(100 * setup / time, 2) if time else None,
                "breakdown_pct": round(100 * broken / time, 2) if time else None,
                "pm_pct": round(100 * maint / time, 2) if time else None,
                "queue_mean_lots": round(queue / span, 2) if span else None,
            }
        )
    return out


def weighted_cost(types: Iterable[dict[str, Any]]) -> float | None:
    parts = [t["weight"] * t["cost"] for t in types if t["cost"] is not None]
    return round(sum(parts), 4) if parts else None


def wip_trend(run: RunResult) -> float | None:
    """The WIP's least-squares slope over the evaluated days (lots per day): how the protocol
    judges a stable WIP. A fab that completes less than it releases grows by the difference;
    a stable one stays near 0 (the sampled WIP wanders by batches and breakdowns)."""
    points = [(day, n) for day, n in run.wip if day >= run.warmup_days]
    if len({day for day, _ in points}) < 2:  # no slope through one instant
        return None
    days, counts = zip(*points, strict=True)
    return statistics.linear_regression(days, counts).slope


def summarize(runs: Sequence[RunResult]) -> dict[str, Any]:
    """Figures of one rule set over its seeds."""
    types = lot_types(runs)
    evaluated = sum(r.days - r.warmup_days for r in runs)
    events = sum(r.counters.get("events", 0) for r in runs)
    cpu = sum(r.cpu_s for r in runs)
    wall = sum(r.wall_s for r in runs)
    wip = [n for r in runs for day, n in r.wip if day >= r.warmup_days]
    half = [n for r in runs for day, n in r.wip if day >= (r.warmup_days + r.days) / 2]
    return {
        "rules": runs[0].rules,
        "seeds": [r.seed for r in runs],
        "days": runs[0].days,
        "warmup_days": runs[0].warmup_days,
        "weighted_cost": weighted_cost(types),
        "lot_types": types,
        "families": families(runs),
        "throughput_lots_per_day": round(sum(r.completed_after_warmup for r in runs) / evaluated, 3)
        if evaluated
        else None,
        "wip_mean": round(statistics.fmean(wip), 1) if wip else None,
        "wip_mean_second_half": round(statistics.fmean(half), 1) if half else None,
        "wip_end": [r.wip_end for r in runs],
        "wip_trend_lots_per_day": [_round(wip_trend(r), 3) for r in runs],
        "wip": [r.wip for r in runs],
        "counters": {k: sum(r.counters.get(k, 0) for r in runs) for k in runs[0].counters},
        "speed": {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "events_per_cpu_s": round(events / cpu) if cpu else None,
            "sim_days_per_cpu_s": round(sum(r.days for r in runs) / cpu, 4) if cpu else None,
            "decisions": sum(r.counters.get("decisions", 0) for r in runs),
        },
    }


def cycle_times(runs: Sequence[RunResult]) -> dict[str, list[float]]:
    """Cycle times (days) per lot type, pooled over the runs (plots)."""
    out: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for part, prior, ct, _slack, _raw in run.lots:
            out[lot_type_name(part, prior)].append(ct / DAY)
    return dict(out)
