"""Runs of rule sets by seeds on one testbed, in this process or in ``jobs`` worker processes,
with a progress line on stderr; the figures of each rule set pooled over its seeds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from mes.simulation import kpi, model
from mes.simulation.engine import Simulation
from mes.simulation.rulesets import SimRules, resolve
from mes.simulation.state import InitialState

_MODELS: dict[str, model.FabModel] = {}  # per process: a worker reads the testbed once
EXAMPLE = Path(__file__).resolve().parent / "example_fab"


def folder_of(name: str | Path) -> str:
    """``example`` names the mini fab shipped with the package."""
    return str(EXAMPLE) if str(name) == "example" else str(name)


def _model(folder: str) -> model.FabModel:
    folder = folder_of(folder)
    if folder not in _MODELS:
        _MODELS[folder] = model.load(folder)
    return _MODELS[folder]


@dataclass(frozen=True)
class Plan:
    folder: str
    rules: tuple[str, ...]  # names or rule-set files, as ``resolve`` takes them
    seeds: tuple[int, ...]
    days: float
    warmup_days: float = 0.0
    qtime_gating: bool = False


def run_one(
    fab: model.FabModel,
    rules: SimRules,
    seed: int,
    days: float,
    warmup_days: float = 0.0,
    progress: Callable[[float], None] | None = None,
    initial: InitialState | None = None,
    *,
    qtime_gating: bool = False,
) -> kpi.RunResult:
    wall, cpu = time.perf_counter(), time.process_time()
    sim = Simulation(
        fab,
        rules,
        seed=seed,
        days=days,
        warmup_days=warmup_days,
        progress=progress,
        initial=initial,
        qtime_gating=qtime_gating,
    )
    sim.run()
    return kpi.collect(sim, wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu)


def _work(
    folder: str, rules: str, seed: int, days: float, warmup: float, gating: bool
) -> kpi.RunResult:
    return run_one(_model(folder), resolve(rules), seed, days, warmup, qtime_gating=gating)


def run_plan(
    plan: Plan, *, jobs: int = 1, out: TextIO | None = sys.stderr
) -> dict[str, list[kpi.RunResult]]:
    """Every (rule set, seed) of the plan; results by rule-set name, in seed order."""
    plan = replace(plan, folder=folder_of(plan.folder))
    tasks = [(r, s) for r in plan.rules for s in plan.seeds]
    done: dict[tuple[str, int], kpi.RunResult] = {}

    def note(i: int, rules: str, seed: int, result: kpi.RunResult) -> None:
        if out is not None:
            print(
                f"\r[{i}/{len(tasks)}] {rules} seed {seed}: {plan.days:g} days in "
                f"{result.wall_s:.1f} s ({result.counters['events']} events, "
                f"{result.counters['decisions']} decisions)",
                file=out,
                flush=True,
            )

    if jobs <= 1:
        fab = _model(plan.folder)
        for i, (rules, seed) in enumerate(tasks, start=1):
            bar = _bar(out, f"{rules} seed {seed}", plan.days)
            done[(rules, seed)] = run_one(
                fab,
                resolve(rules),
                seed,
                plan.days,
                plan.warmup_days,
                progress=bar,
                qtime_gating=plan.qtime_gating,
            )
            note(i, rules, seed, done[(rules, seed)])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(
                    _work, plan.folder, r, s, plan.days, plan.warmup_days, plan.qtime_gating
                ): (r, s)
                for r, s in tasks
            }
            for i, future in enumerate(as_completed(futures), start=1):
                key = futures[future]
                done[key] = future.result()
                note(i, *key, done[key])
    by_rules: dict[str, list[kpi.RunResult]] = {}
    for rules, seed in tasks:
        by_rules.setdefault(done[(rules, seed)].rules, []).append(done[(rules, seed)])
    return by_rules


def _bar(out: TextIO | None, label: str, days: float) -> Callable[[float], None] | None:
    """A progress line for long runs (one update per simulated day, on a terminal only)."""
    if out is None or not out.isatty() or days < 5:
        return None

    def show(day: float) -> None:
        filled = int(30 * day / days)
        print(
            f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] day {day:.0f}/{days:g}",
            end="",
            file=out,
            flush=True,
        )

    return show


def summaries(results: Mapping[str, list[kpi.RunResult]]) -> dict[str, dict[str, Any]]:
    return {name: kpi.summarize(runs) for name, runs in results.items()}


def plan_for(
    folder: str | Path, rules: Sequence[str], seeds: int, days: float, warmup: float
) -> Plan:
    return Plan(str(folder), tuple(rules), tuple(range(1, seeds + 1)), days, warmup)


def run_start(
    fab: model.FabModel,
    rules: Sequence[SimRules],
    *,
    seeds: int,
    days: float,
    initial: InitialState | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, list[kpi.RunResult]]:
    """Rule sets from one given start (what-if), in this process; ``progress`` gets the
    fraction of all runs done."""
    out: dict[str, list[kpi.RunResult]] = {}
    total, done = len(rules) * seeds, 0
    for chosen in rules:
        for seed in range(1, seeds + 1):

            def step(day: float, done: int = done) -> None:
                if progress is not None:
                    progress((done + day / days) / total)

            out.setdefault(chosen.name, []).append(
                run_one(fab, chosen, seed, days, 0.0, step, initial)
            )
            done += 1
    if progress is not None:
        progress(1.0)
    return out
