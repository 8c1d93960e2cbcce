"""Q-time violations with and without gating, on the fab simulator.

    python bench/qtime_gating.py                       # the shipped mini fab, 30 days, 3 seeds
    python bench/qtime_gating.py --qtime-scale 0.25                # its windows made 4x tighter
    python bench/qtime_gating.py --data ../shared/data/smt2020/SMT2020_HVLM --days 30 --seeds 1

Each seed runs twice with the same random numbers (releases, process times, breakdowns): once
without gating, once with it (``Simulation(qtime_gating=True)``: a lot is not started at a
window's opening step when the closing tool family could not take it in time,
mes/lots/qtime_gate_rules.py). Per run it prints the windows checked (lots that started a closing
step), those violated (started after the deadline), the rate, lots completed per day and the
mean cycle time; the last line is one JSON object with every figure. ``--qtime-scale`` multiplies
every window of the testbed (the mini fab's are generous: nothing is violated, nothing gated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataclasses import replace  # noqa: E402

from mes.simulation import model, runner  # noqa: E402
from mes.simulation.rulesets import resolve  # noqa: E402
from mes.smt2020 import tables  # noqa: E402

DAY = 86400.0


def _figures(result: Any) -> dict[str, Any]:
    checked = result.counters["qtime_checked"]
    violated = result.counters["qtime_violated"]
    evaluated = result.days - result.warmup_days
    cycle = [ct / DAY for _part, _prior, ct, _slack, _raw in result.lots]
    return {
        "qtime_checked": checked,
        "qtime_violated": violated,
        "violation_rate": round(violated / checked, 4) if checked else None,
        "gated_decisions": result.counters.get("qtime_gated", 0),
        "completed_per_day": round(result.completed_after_warmup / evaluated, 3),
        "cycle_time_days_mean": round(statistics.fmean(cycle), 3) if cycle else None,
        "cpu_s": round(result.cpu_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="example", help="an SMT2020-format folder")
    parser.add_argument("--rules", default="default", help="one rule set (as mes simulate)")
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--qtime-scale", type=float, default=1.0, help="multiply every window")
    args = parser.parse_args()
    testbed = tables.read_testbed(runner.folder_of(args.data))
    if args.qtime_scale != 1.0:
        testbed = replace(
            testbed,
            routes={
                name: tuple(
                    replace(s, cqt_s=s.cqt_s * args.qtime_scale) if s.cqt_s is not None else s
                    for s in steps
                )
                for name, steps in testbed.routes.items()
            },
        )
    fab = model.build(testbed)
    rules = resolve(args.rules)
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    started = time.perf_counter()
    for seed in range(1, args.seeds + 1):
        for label, gating in (("without", False), ("with", True)):
            result = runner.run_one(fab, rules, seed, args.days, args.warmup, qtime_gating=gating)
            figures = {"seed": seed, **_figures(result)}
            runs[label].append(figures)
            print(
                f"seed {seed} {label:>7} gating: {figures['qtime_violated']:>5} of "
                f"{figures['qtime_checked']:>6} windows violated "
                f"({100 * (figures['violation_rate'] or 0):.2f} %), "
                f"{figures['gated_decisions']} gate refusals, "
                f"{figures['completed_per_day']} lots/day, "
                f"cycle time {figures['cycle_time_days_mean']} d, {figures['cpu_s']} s CPU",
                flush=True,
            )
    totals = {}
    for label, rows in runs.items():
        checked = sum(r["qtime_checked"] for r in rows)
        violated = sum(r["qtime_violated"] for r in rows)
        totals[label] = {
            "qtime_checked": checked,
            "qtime_violated": violated,
            "violation_rate": round(violated / checked, 4) if checked else None,
            "completed_per_day_mean": round(
                statistics.fmean(r["completed_per_day"] for r in rows), 3
            ),
        }
        print(
            f"total {label:>7} gating: {violated} of {checked} violated, "
            f"{totals[label]['completed_per_day_mean']} lots/day"
        )
    print(
        json.dumps(
            {
                "data": args.data,
                "rules": rules.name,
                "days": args.days,
                "warmup_days": args.warmup,
                "qtime_scale": args.qtime_scale,
                "seeds": args.seeds,
                "wall_s": round(time.perf_counter() - started, 1),
                "totals": totals,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
