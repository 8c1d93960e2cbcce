"""The fab simulator on an SMT2020-format testbed: the KPIs of rule sets side by side, and the
simulator's speed and memory.

    python bench/smt2020.py --data ../shared/data/smt2020/SMT2020_HVLM --days 30
    python bench/smt2020.py --data ... --days 730 --warmup 365 --seeds 10 --jobs 2 --out var/sim

1. Reads the testbed (``mes.smt2020.tables``) and runs every rule set with seeds 1..N (common
   random numbers: the same releases and breakdowns for every rule set).
2. Prints per rule set and lot type: completed lots, mean / p90 cycle time, flow factor, on-time
   %, tardiness, the weighted cost (mes/simulation/kpi.py says how it is weighed), throughput,
   WIP; with ``--families`` the per-family table too; the testbed's published reference
   (``reference/lots_*.txt`` beside the folder) when it is there.
3. Speed: events and dispatch decisions per CPU second, simulated days per CPU second, CPU and
   wall time per simulated month; with ``--policy-share`` (one process) the share of the time
   spent inside ``policy.decide``. Memory: peak RSS.
4. With ``--baseline REF`` (a git commit, e.g. ``main``) the same plan runs again on that
   commit's code (``git archive`` into a scratch folder, a child process, after this run):
   both speeds, their ratio and both sets of KPIs side by side.
5. The last line is one JSON object with every figure.

Goals (issue 17): ≥ 2 simulated days per CPU second on HV/LM with FIFO; a 2-year run < 500 MB.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mes.dispatch.policy as policy  # noqa: E402
from mes.simulation import goals, report, runner  # noqa: E402

GOAL_DAYS_PER_CPU_S = 2.0
GOAL_MEMORY_MB = 500.0


def reference(folder: Path) -> dict[str, dict[str, float]]:
    """The testbed's published lot figures (``name th act on_time``), if shipped beside it."""
    found = sorted((folder.parent / "reference").glob(f"lots_{folder.name}*.txt"))
    out: dict[str, dict[str, float]] = {}
    for path in found[:1]:
        for line in path.read_text("utf-8").splitlines()[1:]:
            parts = line.split()
            if len(parts) == 4:
                out[parts[0]] = {
                    "th": float(parts[1]),
                    "ct_days": float(parts[2]),
                    "on_time_pct": float(parts[3]),
                }
    return out


def timed_policy() -> list[float]:
    """Wrap ``policy.decide`` to add up the time spent in it (the engine calls it by name)."""
    spent = [0.0, 0.0]
    original = policy.decide

    def decide(*args: Any, **kwargs: Any) -> policy.Starts:
        t = time.process_time()  # CPU time: the machine may be shared
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - t
            spent[1] += 1

    policy.decide = decide  # type: ignore[assignment]
    return spent


SPEED_KEYS = (
    "sim_days_per_cpu_s",
    "cpu_s_per_sim_month",
    "events_per_cpu_s",
    "us_per_decision_all_in",
    "policy_us_per_decision",
    "policy_share_pct",
    "peak_rss_mb",
)


def run_baseline(ref: str, argv: list[str]) -> dict[str, Any]:
    """This bench with ``argv`` on the code of commit ``ref``, in a child process: its JSON."""
    tree = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True)
    with tempfile.TemporaryDirectory(prefix="bench-smt2020-") as scratch:
        with tarfile.open(fileobj=io.BytesIO(tree.stdout)) as tar:
            tar.extractall(scratch, filter="data")
        done = subprocess.run(
            [sys.executable, "bench/smt2020.py", *argv],
            cwd=scratch,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"baseline {ref} failed:\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def compare(ref: str, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Print speed and KPIs of ``before`` (commit ``ref``) and ``after`` (this code)."""
    print(f"\nbefore ({ref}) → after (this code), same plan:")
    for key in SPEED_KEYS:
        if key in before or key in after:
            print(f"  {key:<24}{before.get(key)!s:>12} → {after.get(key)!s:<12}")
    ratio = None
    if before.get("sim_days_per_cpu_s") and after.get("sim_days_per_cpu_s"):
        ratio = round(after["sim_days_per_cpu_s"] / before["sim_days_per_cpu_s"], 2)
        print(f"  speed-up (simulated days per CPU second): {ratio}x")
    for name, kpis in after["rules"].items():
        old = before.get("rules", {}).get(name, {})
        print(
            f"  {name}: throughput {old.get('throughput_lots_per_day')} → "
            f"{kpis['throughput_lots_per_day']} lots/day, weighted cost "
            f"{old.get('weighted_cost')} → {kpis['weighted_cost']}, WIP "
            f"{old.get('wip_mean')} → {kpis['wip_mean']}"
        )
        for lot_type, t in kpis["lot_types"].items():
            o = old.get("lot_types", {}).get(lot_type, {})
            print(
                f"    {lot_type:<22} CT {o.get('ct_mean_days')} → {t['ct_mean_days']} d, "
                f"on time {o.get('on_time_pct')} → {t['on_time_pct']} %, completed "
                f"{o.get('completed')} → {t['completed']}"
            )
    return {"ref": ref, "speedup": ratio, **{k: before.get(k) for k in SPEED_KEYS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="an SMT2020-format folder (or 'example')")
    parser.add_argument("--rules", default="fifo,cr")
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write results.json/.csv/.png here")
    parser.add_argument("--families", action="store_true", help="print the per-family table")
    parser.add_argument("--policy-share", action="store_true", help="time inside the policy")
    parser.add_argument("--baseline", metavar="REF", help="run the plan on commit REF too")
    args = parser.parse_args()

    folder = runner.folder_of(args.data)
    t = time.perf_counter()
    fab = runner._model(folder)
    load_s = time.perf_counter() - t
    steps = sum(len(r.steps) for r in {id(r): r for r in fab.routes.values()}.values())
    print(
        f"testbed {folder}: {len(fab.families)} families, "
        f"{sum(f.count for f in fab.families if not f.is_delay)} tools, {steps} route steps, "
        f"{len(fab.testbed.wip)} WIP lots, {len(fab.testbed.orders)} release streams "
        f"(read in {load_s:.2f} s)"
    )
    spent = timed_policy() if args.policy_share and args.jobs == 1 else None
    plan = runner.plan_for(folder, args.rules.split(","), args.seeds, args.days, args.warmup)
    wall = time.perf_counter()
    results = runner.run_plan(plan, jobs=args.jobs)
    wall = time.perf_counter() - wall
    if args.out is not None:
        summaries, written = report.write_all(args.out, results)
        print("wrote " + ", ".join(str(p) for p in written))
    else:
        summaries = runner.summaries(results)
    print(report.table(summaries))
    if args.families:
        for name, s in summaries.items():
            print(f"\n{name}: family availability / utilisation / setup / breakdown / PM %, queue")
            for f in s["families"]:
                print(
                    f"  {f['family']:<20}{f['availability_pct']:>7}{f['utilisation_pct']:>7}"
                    f"{f['setup_pct']:>7}{f['breakdown_pct']:>7}{f['pm_pct']:>7}"
                    f"{f['queue_mean_lots']:>8}"
                )
    judged: dict[str, list[goals.Goal]] = {}
    if "fifo" in summaries and "cr" in summaries:
        for name in summaries:
            if name not in ("fifo", "cr"):
                judged[name] = goals.judge(summaries, name)
                print(f"\n{name} against the quality goals (FIFO and CR of the same seeds):")
                print(goals.table(judged[name]))
    ref = reference(Path(folder))
    if ref:
        print(
            "\npublished reference (AutoSched AP, testbed rules): "
            + "; ".join(
                f"{k} {v['ct_days']:.1f} d / {v['on_time_pct']:.0f} %" for k, v in ref.items()
            )
        )

    runs = [r for rs in results.values() for r in rs]
    cpu = sum(r.cpu_s for r in runs)
    days = sum(r.days for r in runs)
    events = sum(r.counters["events"] for r in runs)
    decisions = sum(r.counters["decisions"] for r in runs)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    speed = {
        "runs": len(runs),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "sim_days_per_cpu_s": round(days / cpu, 3) if cpu else None,
        "cpu_s_per_sim_month": round(30 * cpu / days, 1) if days else None,
        "wall_s_per_sim_month": round(30 * sum(r.wall_s for r in runs) / days, 1) if days else None,
        "events_per_cpu_s": round(events / cpu) if cpu else None,
        "decisions_per_sim_day": round(decisions / days) if days else None,
        "us_per_decision_all_in": round(1e6 * cpu / decisions, 1) if decisions else None,
        "peak_rss_mb": round(max(own, children), 1),
    }
    if spent is not None and spent[1]:
        speed["policy_share_pct"] = round(100 * spent[0] / cpu, 1) if cpu else None
        speed["policy_us_per_decision"] = round(1e6 * spent[0] / spent[1], 1)
    print("\nspeed: " + ", ".join(f"{k} {v}" for k, v in speed.items()))
    print(
        f"goals: {GOAL_DAYS_PER_CPU_S} sim days per CPU s (measured {speed['sim_days_per_cpu_s']}),"
        f" peak RSS < {GOAL_MEMORY_MB:.0f} MB (measured {speed['peak_rss_mb']})"
    )
    figures = {
        "bench": "smt2020",
        "testbed": Path(folder).name,
        "days": args.days,
        "warmup_days": args.warmup,
        "seeds": args.seeds,
        **speed,
        "goals": {
            name: {g.name: {"met": g.met, "measured": g.measured} for g in found}
            for name, found in judged.items()
        },
        "rules": {
            name: {
                "weighted_cost": s["weighted_cost"],
                "throughput_lots_per_day": s["throughput_lots_per_day"],
                "wip_mean": s["wip_mean"],
                "wip_trend_lots_per_day": s["wip_trend_lots_per_day"],
                "lot_types": {
                    t["lot_type"]: {
                        k: t[k]
                        for k in (
                            "completed",
                            "ct_mean_days",
                            "ct_p90_days",
                            "flow_factor",
                            "on_time_pct",
                            "tardiness_mean_days",
                        )
                    }
                    for t in s["lot_types"]
                },
            }
            for name, s in summaries.items()
        },
    }
    if args.baseline:
        data = args.data if args.data == "example" else str(Path(args.data).resolve())
        argv = ["--data", data, "--rules", args.rules, "--days", str(args.days)]
        argv += ["--warmup", str(args.warmup), "--seeds", str(args.seeds), "--jobs", str(args.jobs)]
        if args.policy_share:
            argv.append("--policy-share")
        print(f"\nbaseline: the same plan on {args.baseline} ...", flush=True)
        figures["baseline"] = compare(args.baseline, run_baseline(args.baseline, argv), figures)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
