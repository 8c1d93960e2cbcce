"""Rule-set search: random search over the weights of the policy's ranking rules, every trial
scored by the weighted cost (``kpi``) on the same training seeds (common random numbers), the
best one checked against the baselines on held-out seeds it was not chosen on.

A trial weighs each rule of ``RULES`` with ``10^u`` (``u`` uniform in [-1, 3]) or leaves it out
(probability ``drop``); the ``batch`` rule is always kept (at least as the weight-0 gate), so
batches keep their minimum. The best set is written as the body ``POST /dispatch/rule-sets``
takes, as a shadow set: it goes to production unchanged, first beside the running set.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mes.simulation import kpi, model, runner
from mes.simulation.rulesets import BATCH_GATE, SimRules, from_spec

RULES = (
    "priority",
    "critical_ratio",
    "least_slack",
    "edd",
    "setup",
    "fifo",
    "wip_balance",
    "qtime",
    "setup_demand",
)


@dataclass(frozen=True)
class Trial:
    rules: SimRules
    cost: float  # mean weighted cost over the seeds it was scored on


def sample(rng: random.Random, drop: float = 0.3) -> list[dict[str, Any]]:
    spec: list[dict[str, Any]] = []
    for name in RULES:
        if rng.random() >= drop:
            spec.append({"rule": name, "weight": round(10 ** rng.uniform(-1, 3), 3)})
    spec.append(dict(BATCH_GATE))
    return spec


def score(
    fab: model.FabModel, rules: SimRules, seeds: Sequence[int], days: float, warmup: float
) -> float:
    costs = []
    for seed in seeds:
        result = runner.run_one(fab, rules, seed, days, warmup)
        cost = kpi.weighted_cost(kpi.lot_types([result]))
        costs.append(cost if cost is not None else float("inf"))
    return statistics.fmean(costs)


def search(
    fab: model.FabModel,
    *,
    trials: int,
    train: Sequence[int],
    days: float,
    warmup: float,
    seed: int = 0,
    start: Sequence[SimRules] = (),
    note: Callable[[int, Trial], None] | None = None,
) -> list[Trial]:
    """Every trial scored on ``train`` (the ``start`` sets first), best first."""
    rng = random.Random(seed)
    done: list[Trial] = []
    candidates = list(start)
    for n in range(trials):
        candidates.append(from_spec(f"trial{n + 1}", sample(rng)))
    for i, rules in enumerate(candidates, start=1):
        trial = Trial(rules, score(fab, rules, train, days, warmup))
        done.append(trial)
        if note is not None:
            note(i, trial)
    return sorted(done, key=lambda t: t.cost)


def document(best: SimRules, fab: str, note: str) -> dict[str, Any]:
    """The ``POST /dispatch/rule-sets`` body for the fab's default scope, as a shadow set."""
    return {"fab": fab, "rules": [dict(e) for e in best.spec], "note": note, "shadow": True}
