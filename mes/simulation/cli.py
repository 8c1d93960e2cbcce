"""``mes simulate``: run rule sets on an SMT2020-format testbed and compare them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from mes.clock import SystemClock
from mes.config import Settings
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.errors import MesError
from mes.simulation import kpi, model, report, runner, tune, whatif
from mes.simulation.rulesets import RuleChoiceError, SimRules, resolve, resolve_all
from mes.smt2020.tables import TestbedError

simulate_app = typer.Typer(help="Fab simulation on SMT2020-format testbeds.", no_args_is_help=True)


@simulate_app.command("run")
def simulate_run(
    folder: Annotated[
        Path, typer.Argument(help="an SMT2020-format folder, or 'example' for the shipped mini fab")
    ],
    rules: Annotated[
        str, typer.Option(help="rule sets: fifo, cr, default, testbed or rule-set JSON files")
    ] = "fifo,cr",
    days: Annotated[float, typer.Option(min=0.01, help="simulated days per run")] = 30.0,
    warmup: Annotated[float, typer.Option(min=0.0, help="days before the figures count")] = 0.0,
    seeds: Annotated[int, typer.Option(min=1, help="seeds 1..N per rule set")] = 1,
    jobs: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    out: Annotated[Path | None, typer.Option(help="folder for results.json/.csv/.png")] = None,
    qtime_gating: Annotated[
        bool,
        typer.Option(
            help="hold lots back at a Q-time window's opening step when the closing tool "
            "group could not take them in time (as the production dispatcher does)"
        ),
    ] = False,
) -> None:
    """Simulate every rule set with the same seeds (common random numbers) and compare."""
    if warmup >= days:
        raise typer.BadParameter("the warm-up must be shorter than the run", param_hint="--warmup")
    try:
        chosen = resolve_all(rules)
        runner._model(str(folder))
    except (RuleChoiceError, TestbedError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    plan = runner.Plan(
        str(folder),
        tuple(rules.split(",")),
        tuple(range(1, seeds + 1)),
        days,
        warmup,
        qtime_gating=qtime_gating,
    )
    results = runner.run_plan(plan, jobs=jobs)
    if len({r.name for r in chosen}) != len(results):
        typer.echo("error: two rule sets share a name", err=True)
        raise typer.Exit(2)
    _print(results, out)


def _print(results: Mapping[str, list[kpi.RunResult]], out: Path | None) -> None:
    if out is not None:
        summaries, written = report.write_all(out, results)
        typer.echo(report.table(summaries))
        typer.echo("wrote " + ", ".join(str(p) for p in written))
    else:
        summaries = runner.summaries(results)
        typer.echo(report.table(summaries))
    typer.echo(
        json.dumps(
            {
                name: {
                    "weighted_cost": s["weighted_cost"],
                    "throughput_lots_per_day": s["throughput_lots_per_day"],
                    "qtime_violated": s["counters"]["qtime_violated"],
                    "qtime_checked": s["counters"]["qtime_checked"],
                    "sim_days_per_cpu_s": s["speed"]["sim_days_per_cpu_s"],
                }
                for name, s in summaries.items()
            }
        )
    )


def choose(rules: str, production: SimRules) -> list[SimRules]:
    """Rule-set names as for ``simulate run``, plus ``production`` (the fab's own sets)."""
    chosen = [
        production if r.strip().lower() == "production" else resolve(r)
        for r in rules.split(",")
        if r.strip()
    ]
    if not chosen:
        raise RuleChoiceError("no rule set given")
    if len({c.name for c in chosen}) != len(chosen):
        raise RuleChoiceError("two rule sets share a name")
    return chosen


async def _read_live(fab: str) -> whatif.LiveFab:
    settings = Settings()
    database = Database.from_settings(settings)
    try:
        async with unit_of_work(database, write=False) as session:
            return await whatif.read_fab(session, fab, SystemClock().now())
    finally:
        await database.dispose()


@simulate_app.command("whatif")
def simulate_whatif(
    fab: Annotated[str, typer.Option(help="the fab to read from the MES database")],
    rules: Annotated[
        str, typer.Option(help="production (the fab's own rule sets), fifo, cr, ... or files")
    ] = "production,fifo",
    days: Annotated[float, typer.Option(min=0.01, help="days to simulate ahead")] = 14.0,
    seeds: Annotated[int, typer.Option(min=1)] = 1,
    out: Annotated[Path | None, typer.Option(help="folder for results.json/.csv/.png")] = None,
) -> None:
    """Simulate the fab from where it stands now under two or more rule sets."""
    try:
        live = asyncio.run(_read_live(fab))
        chosen = choose(rules, live.production)
    except (MesError, RuleChoiceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo("read " + ", ".join(f"{k} {v}" for k, v in live.counts.items()))
    results = runner.run_start(
        model.build(live.testbed), chosen, seeds=seeds, days=days, initial=live.initial
    )
    _print(results, out)


@simulate_app.command("tune")
def simulate_tune(
    folder: Annotated[Path, typer.Argument(help="an SMT2020-format folder, or 'example'")],
    out: Annotated[Path, typer.Option(help="where to write the best rule-set document")],
    fab: Annotated[str, typer.Option(help="the fab the document is for")] = "F1",
    trials: Annotated[int, typer.Option(min=1, help="random rule sets to try")] = 20,
    seeds: Annotated[int, typer.Option(min=1, help="training seeds (1..N)")] = 3,
    holdout: Annotated[int, typer.Option(min=1, help="held-out seeds (N+1..N+H)")] = 2,
    days: Annotated[float, typer.Option(min=0.01)] = 30.0,
    warmup: Annotated[float, typer.Option(min=0.0)] = 0.0,
    baselines: Annotated[str, typer.Option(help="rule sets to beat")] = "fifo,cr",
    search_seed: Annotated[int, typer.Option(help="seed of the search itself")] = 0,
) -> None:
    """Search rule-set weights on training seeds, check the best on held-out seeds, write it
    as a shadow rule set for ``POST /dispatch/rule-sets``."""
    if warmup >= days:
        raise typer.BadParameter("the warm-up must be shorter than the run", param_hint="--warmup")
    try:
        base = resolve_all(baselines)
        testbed = runner._model(str(folder))
    except (RuleChoiceError, TestbedError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    train = list(range(1, seeds + 1))
    held = list(range(seeds + 1, seeds + holdout + 1))

    def note(i: int, trial: tune.Trial) -> None:
        typer.echo(
            f"[{i}/{trials + len(base)}] {trial.rules.name}: cost {trial.cost:.3f}", err=True
        )

    ranked = tune.search(
        testbed,
        trials=trials,
        train=train,
        days=days,
        warmup=warmup,
        seed=search_seed,
        start=base,
        note=note,
    )
    best = ranked[0]
    typer.echo(f"best on the training seeds {train}: {best.rules.name} {list(best.rules.spec)}")
    held_costs = {
        r.name: tune.score(testbed, r, held, days, warmup)
        for r in [best.rules, *(b for b in base if b.name != best.rules.name)]
    }
    for name, cost in held_costs.items():
        typer.echo(f"held-out seeds {held}: {name} cost {cost:.3f}")
    doc = tune.document(
        best.rules,
        fab,
        f"mes simulate tune on {Path(folder).name}: cost {held_costs[best.rules.name]:.3f} on "
        f"held-out seeds {held} against "
        + ", ".join(f"{n} {c:.3f}" for n, c in held_costs.items() if n != best.rules.name),
    )
    out.write_text(json.dumps(doc, indent=1), "utf-8")
    typer.echo(
        json.dumps({"best": best.rules.name, "held_out_cost": held_costs, "wrote": str(out)})
    )
