"""Ranking rules of dispatching and the rule sets that weigh them. Pure.

Each rule maps (lot, tool, situation) to a value, mostly in [0, 1], and a rule set weighs them:
``score = Σ weight * value``. A rule whose weight is larger than the sum of all lower weights
dominates them (lexicographic order by weights): the default rule set gives the priority class
1000, so hot lots come first whatever else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Any, NamedTuple

from mes.dispatch.policy_inputs import GroupLoad, LotSnapshot, Situation, ToolSnapshot


class Candidate(NamedTuple):
    """A lot a tool could run, with what rules compare across the candidates. A named tuple,
    not a frozen dataclass: one is made per lot and decision, and it builds ~3x faster."""

    lot: LotSnapshot
    tool: ToolSnapshot
    # Compatible lots (same step and recipe) waiting for this tool, this one included.
    batch_peers: int = 1
    # The longest any of those has waited (s).
    batch_oldest_wait_s: float = 0.0
    batch_urgent: bool = False


# A rule's value, and its explanation as a format string with arguments: formatting is most of
# a rule's cost, so it happens only for the lots whose explanation is asked for.
Valued = tuple[float, str, tuple[Any, ...]]
RuleFn = Callable[[Candidate, Situation, Mapping[str, float]], Valued]


@dataclass(frozen=True)
class RuleDef:
    name: str
    fn: RuleFn
    defaults: Mapping[str, float]
    formula: str


_NO_LOAD = GroupLoad()


def _decay(x: float, scale: float) -> float:
    """1 at x ≤ 0, falling towards 0 as x grows: scale / (scale + x)."""
    return 1.0 if x <= 0 else scale / (scale + x)


def _logistic(x: float, scale: float) -> float:
    """1 / (1 + e^(x/scale)): 0.5 at x = 0, → 1 as x → -∞, → 0 as x → +∞."""
    z = x / scale
    if z > 50:
        return 0.0
    if z < -50:
        return 1.0
    return 1.0 / (1.0 + math.exp(z))


def _priority(c: Candidate, _s: Situation, p: Mapping[str, float]) -> Valued:
    value = {"super_hot": p["super_hot"], "hot": p["hot"]}.get(c.lot.priority, p["normal"])
    return value, "priority class {}", (c.lot.priority,)


def _lot_type(c: Candidate, _s: Situation, p: Mapping[str, float]) -> Valued:
    return p.get(c.lot.lot_type, 0.0), "{} lot", (c.lot.lot_type,)


def _fifo(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    wait = max(0.0, s.now - c.lot.queued_at)
    return 1.0 - _decay(wait, p["scale_s"]), "waiting {:.1f} h at the step", (wait / 3600,)


def _flow(c: Candidate, p: Mapping[str, float]) -> float:
    return max(1.0, c.lot.remaining_process_s * p["flow_factor"])


def _critical_ratio(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    if c.lot.due_at is None:
        return 0.0, "no due date", ()
    ratio = (c.lot.due_at - s.now) / _flow(c, p)
    return _logistic(ratio - 1.0, p["scale"]), "critical ratio {:.2f}", (ratio,)


def _edd(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    if c.lot.due_at is None:
        return 0.0, "no due date", ()
    left = c.lot.due_at - s.now
    return _logistic(left, p["scale_s"]), "due in {:.1f} d", (left / 86400,)


def _spt(c: Candidate, _s: Situation, p: Mapping[str, float]) -> Valued:
    t = c.lot.step.process_time_s
    return _decay(t, p["scale_s"]), "process time {:.0f} min", (t / 60,)


def _srpt(c: Candidate, _s: Situation, p: Mapping[str, float]) -> Valued:
    t = c.lot.remaining_process_s
    return _decay(t, p["scale_s"]), "remaining process time {:.1f} h", (t / 3600,)


def _least_slack(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    if c.lot.due_at is None:
        return 0.0, "no due date", ()
    slack = c.lot.due_at - s.now - _flow(c, p)
    return _logistic(slack, p["scale_s"]), "slack {:.1f} h", (slack / 3600,)


def _setup(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    wanted, current = c.lot.step.setup, c.tool.current_setup
    if wanted is None:
        return 1.0, "no setup change", ()
    if wanted == current:
        return 1.0, "same setup {}", (wanted,)
    if current is not None:
        need = s.min_run.get(current, 0)
        if c.tool.lots_since_setup < need:
            return (
                -1.0,
                "change {}→{} before the minimum run ({}/{} lots)",
                (current, wanted, c.tool.lots_since_setup, need),
            )
    t = s.setup_time(current, wanted)
    return (
        _decay(t, p["scale_s"]) - 1.0,
        "setup change {}→{} ({:.0f} min)",
        (current, wanted, t / 60),
    )


def _setup_demand(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    # Every change costs the tool about the same time, but one that opens a long run is
    # worth more than one for a setup few lots need or other tools already serve: a change
    # is valued by the lots waiting for the new setup per tool that would then run it.
    wanted, current = c.lot.step.setup, c.tool.current_setup
    if wanted is None or wanted == current:
        return 0.0, "no setup change", ()
    load = s.loads.get((c.tool.fab_id, c.tool.tool_group_id), _NO_LOAD)
    waiting = load.queued_by_setup.get(wanted, 0)
    tools = load.tools_by_setup.get(wanted, 0) + 1  # this tool, once changed over
    per_tool = waiting / tools
    return (
        per_tool / (per_tool + p["scale_lots"]) - 1.0,
        "change to {}: {} lots wait for it, {} tool(s) would run it",
        (wanted, waiting, tools),
    )


def _batch(c: Candidate, _s: Situation, p: Mapping[str, float]) -> Valued:
    step = c.lot.step
    if step.batch_max is None:
        return 0.0, "not a batch step", ()
    size = min(step.batch_max, c.tool.max_lots)
    fill = min(1.0, c.batch_peers / size)
    ready = (
        c.batch_peers >= (step.batch_min or 1)
        or c.batch_oldest_wait_s >= p["max_wait_s"]
        or c.batch_urgent
    )
    if ready:
        return fill, "batch of {}/{} ready", (min(c.batch_peers, size), size)
    return (
        fill - 1.0,
        "batch of {}/{} below minimum {}: worth waiting",
        (min(c.batch_peers, size), size, step.batch_min),
    )


def _qtime(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    if c.lot.qtime_deadline is None:
        return 0.0, "no Q-time window", ()
    left = c.lot.qtime_deadline - s.now
    return _decay(left, p["scale_s"]), "Q-time window closes in {:.0f} min", (left / 60,)


def _wip_balance(c: Candidate, s: Situation, p: Mapping[str, float]) -> Valued:
    nxt = c.lot.next_tool_group_id
    if nxt is None:
        return 0.0, "last step", ()
    load = s.loads.get((c.tool.fab_id, nxt), GroupLoad())
    w = load.workload_s
    if math.isinf(w):
        return 0.0, "next tool group has no tool up", ()
    return _decay(w, p["scale_s"]), "next tool group has {:.1f} h of work per tool", (w / 3600,)


HOUR, DAY = 3600.0, 86400.0

RULES: Mapping[str, RuleDef] = {
    r.name: r
    for r in (
        RuleDef(
            "priority",
            _priority,
            {"normal": 0.0, "hot": 0.5, "super_hot": 1.0},
            "class value: normal 0, hot 0.5, super_hot 1 (parameters)",
        ),
        RuleDef(
            "lot_type",
            _lot_type,
            {"production": 0.0, "engineering": 1.0, "monitor": 0.5, "dummy": 0.0, "rework": 0.5},
            "type value: production 0, engineering 1, monitor 0.5, dummy 0, rework 0.5 "
            "(parameters; any number, negative holds a type back)",
        ),
        RuleDef("fifo", _fifo, {"scale_s": DAY}, "1 - scale / (scale + wait)"),
        RuleDef(
            "critical_ratio",
            _critical_ratio,
            {"flow_factor": 2.0, "scale": 0.5},
            "CR = (due - now) / (remaining process time * flow factor); 1 / (1 + e^((CR-1)/scale))",
        ),
        RuleDef("edd", _edd, {"scale_s": 2 * DAY}, "1 / (1 + e^((due - now)/scale))"),
        RuleDef("spt", _spt, {"scale_s": HOUR}, "scale / (scale + step process time)"),
        RuleDef("srpt", _srpt, {"scale_s": 10 * DAY}, "scale / (scale + remaining process time)"),
        RuleDef(
            "least_slack",
            _least_slack,
            {"flow_factor": 2.0, "scale_s": DAY},
            "slack = due - now - remaining * flow factor; 1 / (1 + e^(slack/scale))",
        ),
        RuleDef(
            "setup",
            _setup,
            {"scale_s": 30 * 60.0},
            "same setup 1; change: scale / (scale + setup time) - 1; before min run -1",
        ),
        RuleDef(
            "setup_demand",
            _setup_demand,
            {"scale_lots": 10.0},
            "no change 0; a change to setup S: d / (d + scale) - 1, d = lots waiting for S per "
            "tool in S (this one included)",
        ),
        RuleDef(
            "batch",
            _batch,
            {"max_wait_s": 2 * HOUR},
            "fill = lots / batch size; fill if >= minimum, waited >= max wait or urgent, "
            "else fill - 1",
        ),
        RuleDef("qtime", _qtime, {"scale_s": HOUR}, "scale / (scale + time to Q-time deadline)"),
        RuleDef(
            "wip_balance",
            _wip_balance,
            {"scale_s": 4 * HOUR},
            "scale / (scale + queued work per tool up at the next step's tool group)",
        ),
    )
}


class RuleSetError(ValueError):
    """A rule set names an unknown rule or parameter, or a weight is not a number."""


@dataclass(frozen=True, slots=True)
class WeightedRule:
    name: str
    weight: float
    params: Mapping[str, float]
    fn: RuleFn


@dataclass(frozen=True)
class RuleSet:
    """Weighted rules, validated; build with ``RuleSet.build``."""

    rules: tuple[WeightedRule, ...]
    name: str = "default"
    version: int = 0

    @cached_property
    def weighted(self) -> tuple[WeightedRule, ...]:
        """The rules of non-zero weight, in order (those that move a score)."""
        return tuple(rule for rule in self.rules if rule.weight != 0)

    @cached_property
    def queue_order_only(self) -> bool:
        """``queue_order_only(self)``, once (the simulator asks at every decision)."""
        return queue_order_only(self)

    @staticmethod
    def build(
        spec: Iterable[Mapping[str, Any]], *, name: str = "default", version: int = 0
    ) -> RuleSet:
        """``spec``: [{"rule": "priority", "weight": 1000, "params": {...}}, ...]."""
        rules = []
        seen = set()
        for entry in spec:
            rule = RULES.get(str(entry.get("rule")))
            if rule is None:
                raise RuleSetError(f"unknown rule {entry.get('rule')!r}; known: {sorted(RULES)}")
            if rule.name in seen:
                raise RuleSetError(f"rule {rule.name} appears twice")
            seen.add(rule.name)
            weight = entry.get("weight", 1.0)
            if not isinstance(weight, int | float) or isinstance(weight, bool):
                raise RuleSetError(f"{rule.name}: weight must be a number")
            if not math.isfinite(weight):
                raise RuleSetError(f"{rule.name}: weight must be finite")
            given = dict(entry.get("params") or {})
            unknown = set(given) - set(rule.defaults)
            if unknown:
                raise RuleSetError(
                    f"{rule.name}: unknown parameters {sorted(unknown)}; known: "
                    f"{sorted(rule.defaults)}"
                )
            params = {**rule.defaults}
            for key, value in given.items():
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise RuleSetError(f"{rule.name}.{key} must be a number")
                positive = key.endswith("scale_s") or key in ("scale", "scale_lots", "flow_factor")
                if positive and not value > 0:
                    raise RuleSetError(f"{rule.name}.{key} must be positive")
                params[key] = float(value)
            rules.append(WeightedRule(rule.name, float(weight), params, rule.fn))
        return RuleSet(tuple(rules), name, version)


DEFAULT_RULE_SET_SPEC: tuple[Mapping[str, Any], ...] = (
    {"rule": "priority", "weight": 1000},
    {"rule": "qtime", "weight": 100},
    {"rule": "batch", "weight": 50},
    {"rule": "setup", "weight": 20},
    {"rule": "critical_ratio", "weight": 5},
    {"rule": "wip_balance", "weight": 2},
    {"rule": "fifo", "weight": 1},
)
DEFAULT_RULE_SET = RuleSet.build(DEFAULT_RULE_SET_SPEC)


# --- first come, first served ----------------------------------------------------------

_QUEUE_ORDER = attrgetter("queued_at", "code")
_QUEUED_AT = attrgetter("queued_at")


def queue_order_only(rule_set: RuleSet) -> bool:
    """Only ``fifo`` weighs (positive weight, finite scale): its value falls as ``queued_at``
    grows, and so do its float roundings, so sorting by (-score, queued_at, code) is sorting
    by (queued_at, code) at any time. A test holds ``decide`` to ``rank_lots`` on it."""
    weighted = [r for r in rule_set.rules if r.weight != 0]
    return (
        len(weighted) == 1
        and weighted[0].fn is _fifo
        and weighted[0].weight > 0
        and math.isfinite(weighted[0].params["scale_s"])
    )


class InQueueOrder(Collection[LotSnapshot]):
    """Lots their holder keeps in queue order already, by (queued_at, code): the fab simulator
    keeps each family's queue so. ``in_queue_order`` then reads them from the head instead of
    looking at every lot for the earliest (a saturated family queues thousands). A promise of
    the caller's, not checked here: a test holds the simulator's queues to it."""

    __slots__ = ("_lots",)

    def __init__(self, lots: Collection[LotSnapshot]) -> None:
        self._lots = lots

    def __iter__(self) -> Iterator[LotSnapshot]:
        return iter(self._lots)

    def __len__(self) -> int:
        return len(self._lots)

    def __contains__(self, lot: object) -> bool:
        return lot in self._lots


def in_queue_order(lots: Collection[LotSnapshot]) -> Iterator[LotSnapshot]:
    """By (queued_at, code), full ties in the given order (a stable sort); the first without
    sorting, as it is mostly the only one needed: the earliest arrival found with built-ins (no
    key tuple per lot), the code deciding among lots that arrived together."""
    if isinstance(lots, InQueueOrder):
        yield from lots
        return
    if not lots:
        return
    if not isinstance(lots, Sequence):
        lots = list(lots)
    times = list(map(_QUEUED_AT, lots))
    earliest = min(times)
    if times.count(earliest) == 1:
        first = lots[times.index(earliest)]
    else:  # the first of full ties
        first = min((lot for lot in lots if lot.queued_at == earliest), key=_QUEUE_ORDER)
    yield first
    yield from (lot for lot in sorted(lots, key=_QUEUE_ORDER) if lot is not first)
