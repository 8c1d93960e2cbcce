"""Where a simulated SMT2020 fab loses its flow: one rule set, one seed, figures over the time
after the warm-up, set beside the testbed's steady-state demand and its published reference.

    python bench/smt2020_flow.py --data ../shared/data/smt2020/SMT2020_HVLM --rules testbed \
        --days 120 --warmup 60 --watch DE_FE_62

Prints:
1. per part: lots released per day (order.txt), completed per day, lots in the fab at the warm-up
   and at the end, and where they are along the route (lots per tenth of the route);
2. per (part, step) of the ``--watch`` family: lots entering and starting per day (a step
   entered more often than its part is released shows lots going round twice);
3. per family, the families whose queue grew most first: lots started per day against the
   steady-state demand (release rate x sampling), availability, utilisation and setup as shares
   of the available time (the reference's ``util`` is a share of the available time: the demand
   of the tables matches it within 0.4 points for the 47 HV/LM families without batches,
   cascades or setups), the reference's figures, and the queue at the warm-up and at the end.

A diagnostic, not a benchmark: it wraps the engine's ``start_job`` and ``_enter`` to count.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mes.simulation import model  # noqa: E402
from mes.simulation.engine import Simulation  # noqa: E402
from mes.simulation.rulesets import resolve  # noqa: E402
from mes.simulation.state import WARMUP, SimLot, Tool  # noqa: E402

DAY = 86400.0


def reference(folder: Path) -> dict[str, list[float]]:
    """``name avail util br pm setup`` per family, when the reference file is beside the data."""
    path = folder.parent / "reference" / f"machines_{folder.name}.txt"
    if not path.exists():
        return {}
    rows = path.read_text().splitlines()[1:]
    return {r.split()[0]: [float(x) for x in r.split()[1:]] for r in rows if r.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--rules", default="testbed")
    ap.add_argument("--days", type=float, default=120)
    ap.add_argument("--warmup", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--watch", default="DE_FE_62", help="a family to count per step")
    ap.add_argument("--top", type=int, default=25, help="families to print")
    args = ap.parse_args()
    folder = Path(args.data)
    fab = model.load(folder)
    ref = reference(folder)
    rate: dict[str, float] = defaultdict(float)  # part -> lots released per day
    for order in fab.testbed.orders:
        if order.repeat_s:
            rate[order.part] += DAY / order.repeat_s
    demand: dict[int, float] = defaultdict(float)  # family id -> lot visits per day
    for part, per_day in rate.items():
        for step in fab.routes[part].steps:
            demand[step.family] += per_day * step.sample_p
    sim = Simulation(
        fab, resolve(args.rules), seed=args.seed, days=args.days, warmup_days=args.warmup
    )
    watch = fab.family_by_name[args.watch].id
    started: dict[int, int] = defaultdict(int)
    entered_at: dict[tuple[str, int], int] = defaultdict(int)
    started_at: dict[tuple[str, int], int] = defaultdict(int)
    start_job, enter = sim.start_job, sim._enter

    def counting_start(tool: Tool, lots: list[SimLot]) -> None:
        if sim.now >= sim.warmup_at:
            started[tool.family.id] += len(lots)
            if tool.family.id == watch:
                for lot in lots:
                    started_at[(lot.part, lot.route.steps[lot.index].seq)] += 1
        start_job(tool, lots)

    def counting_enter(lot: SimLot, i: int) -> None:
        step = lot.route.steps[i]
        if sim.now >= sim.warmup_at and step.family == watch:
            entered_at[(lot.part, step.seq)] += 1
        enter(lot, i)

    sim.start_job = counting_start  # type: ignore[method-assign]
    sim._enter = counting_enter  # type: ignore[method-assign]
    at_warmup: dict[str, Any] = {}
    on_warmup = sim.handlers[WARMUP]

    def noting_warmup(a: object, b: object) -> None:
        on_warmup(a, b)
        at_warmup["queues"] = {fid: len(q) for fid, q in sim.queues.items()}
        at_warmup["done"] = len(sim.completed)
        at_warmup["parts"] = {p: sum(1 for lot in sim.lots.values() if lot.part == p) for p in rate}

    sim.handlers[WARMUP] = noting_warmup
    sim.run()
    span = args.days - args.warmup
    done = sim.completed[at_warmup["done"] :]
    print(f"{args.rules}, seed {args.seed}, days {args.warmup:g}-{args.days:g}")
    for part, per_day in rate.items():
        n = len(fab.routes[part].steps)
        tenths = [0] * 10
        for lot in sim.lots.values():
            if lot.part == part:
                tenths[min(9, 10 * lot.index // n)] += 1
        print(
            f"{part}: released {per_day:.2f}/day, completed "
            f"{sum(1 for c in done if c.part == part) / span:.2f}/day, in the fab "
            f"{at_warmup['parts'][part]} -> {sum(tenths)}, by tenth of the route {tenths}"
        )
    print(f"{args.watch}, per day (part, step): entered / started")
    for key in sorted(set(entered_at) | set(started_at)):
        print(f"  {key}: {entered_at[key] / span:.1f} / {started_at[key] / span:.1f}")
    rows = []
    queues: dict[int, int] = at_warmup["queues"]
    for fam in fab.families:
        tools = sim.tools_of.get(fam.id)
        if not tools:
            continue
        base = [sim.base[t.id] for t in tools]
        idle, busy, broken, maint = (
            sum(t.buckets[i] - b[0][i] for t, b in zip(tools, base, strict=True)) for i in range(4)
        )
        setup = sum(t.setup_s - b[1] for t, b in zip(tools, base, strict=True))
        up = idle + busy
        avail = 100 * up / (up + broken + maint)
        r = ref.get(fam.name, [float("nan")] * 5)
        rows.append(
            (
                len(sim.queues[fam.id]) - queues[fam.id],
                f"{fam.name:18} {fam.count:4} {started[fam.id] / span:8.1f} {demand[fam.id]:8.1f}"
                f" {avail:6.1f} {r[0]:6.1f} {100 * (busy - setup) / up:6.1f} {r[1]:6.1f}"
                f" {100 * setup / up:6.1f} {100 * r[4] / r[0]:6.1f}"
                f" {queues[fam.id]:6} {len(sim.queues[fam.id]):6}",
            )
        )
    rows.sort(key=lambda row: -row[0])
    print(
        "family             tools  started   demand  avail    ref  util%a    ref setup%a    ref"
        "  queue    end"
    )
    for _growth, text in rows[: args.top]:
        print(text)


if __name__ == "__main__":
    main()
