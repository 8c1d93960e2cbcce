"""Dispatching policy: which lot next on a tool (what-next), which tool next for a lot
(where-next). Pure: plain frozen snapshots in, ranked lists with explanations out, no I/O.

SEMI leaves dispatching to the MES (E94 only orders the control jobs a host creates); this
module follows common fab practice. A decision has two halves:

* **Hard constraints** (``constraint_rules``): a lot is never offered to a tool that cannot
  legally run it. Each failed constraint gives an ``Exclusion`` with a stable code
  (``lot.on_hold``, ``tool.not_qualified``, ``tool.pm_due`` …), the same codes track-in
  answers with.
* **Ranking rules** (``ranking_rules``): each rule maps (lot, tool, situation) to a value,
  mostly in [0, 1], and a rule set weighs them: ``score = Σ weight * value``. The explanation
  of a lot's place is the list of contributions ``weight * value`` with the rule's own words.
  A rule whose weight is larger than the sum of all lower weights dominates them
  (lexicographic order by weights): the default rule set gives the priority class 1000, so hot
  lots come first whatever else. Ties go to the longest-waiting lot, then the lot code, so a
  ranking is deterministic.

The snapshots decided on are in ``policy_inputs``. This module makes the decisions and
re-exports the names of the other three, so callers and the simulator import ``policy`` alone.

Times are float seconds since the epoch (UTC): cheaper than datetimes in a loop, and the fab
simulator runs on its own clock. The simulator calls ``rank_lots``/``rank_tools`` unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from mes.dispatch.constraint_rules import (
    Exclusion,
    gate_exclusion,
    lot_exclusion,
    pair_exclusion,
    tool_exclusion,
)
from mes.dispatch.policy_inputs import (
    LOT_TYPES,
    ONLINE_REMOTE,
    PRIORITY_CLASSES,
    UP_FOR_PRODUCTION,
    WAITING,
    GroupLoad,
    LotSnapshot,
    Situation,
    StepSnapshot,
    ToolSnapshot,
)
from mes.dispatch.ranking_rules import (
    DAY,
    DEFAULT_RULE_SET,
    DEFAULT_RULE_SET_SPEC,
    HOUR,
    RULES,
    Candidate,
    RuleDef,
    RuleFn,
    RuleSet,
    RuleSetError,
    Valued,
    WeightedRule,
)
from mes.lots.qtime_gate_rules import Chain, Downstream

__all__ = [
    "DAY",
    "DEFAULT_RULE_SET",
    "DEFAULT_RULE_SET_SPEC",
    "HOUR",
    "LOT_TYPES",
    "ONLINE_REMOTE",
    "PRIORITY_CLASSES",
    "RULES",
    "UP_FOR_PRODUCTION",
    "WAITING",
    "Candidate",
    "Chain",
    "Contribution",
    "DispatchList",
    "Downstream",
    "Excluded",
    "Exclusion",
    "GroupLoad",
    "LotSnapshot",
    "Ranked",
    "RuleDef",
    "RuleFn",
    "RuleSet",
    "RuleSetError",
    "Situation",
    "Starts",
    "StepSnapshot",
    "ToolOption",
    "ToolRefused",
    "ToolSnapshot",
    "Valued",
    "WeightedRule",
    "WhereNext",
    "choose_starts",
    "explain",
    "gate_exclusion",
    "lot_exclusion",
    "pair_exclusion",
    "rank_lots",
    "rank_tools",
    "tool_exclusion",
    "window_first",
    "with_committed",
]

# --- what-next -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contribution:
    rule: str
    weight: float
    value: float
    contribution: float
    why: str


@dataclass(frozen=True, slots=True)
class Ranked:
    lot: LotSnapshot
    rank: int
    score: float
    contributions: tuple[Contribution, ...]


@dataclass(frozen=True, slots=True)
class Excluded:
    lot: LotSnapshot
    reasons: tuple[Exclusion, ...]


@dataclass(frozen=True, slots=True)
class DispatchList:
    tool: ToolSnapshot
    rule_set: str
    rule_set_version: int
    ranked: tuple[Ranked, ...]
    excluded: tuple[Excluded, ...]
    tool_exclusion: Exclusion | None


def explain(candidate: Candidate, situation: Situation, rule_set: RuleSet) -> Ranked:
    parts = []
    total = 0.0
    for rule in rule_set.rules:
        value, why, args = rule.fn(candidate, situation, rule.params)
        contribution = rule.weight * value
        total += contribution
        parts.append(Contribution(rule.name, rule.weight, value, contribution, why.format(*args)))
    return Ranked(candidate.lot, 0, total, tuple(parts))


def _score_only(candidate: Candidate, situation: Situation, rule_set: RuleSet) -> float:
    return sum(r.weight * r.fn(candidate, situation, r.params)[0] for r in rule_set.rules)


def _batch_key(lot: LotSnapshot, tool: ToolSnapshot) -> tuple[str | None, str | None]:
    """Lots that may share a batch on ``tool``: the same recipe there (whatever their product,
    route or step) and the same setup."""
    return (lot.recipe_on(tool.id), lot.step.setup)


def _batch_groups(
    lots: Sequence[LotSnapshot], tool: ToolSnapshot, situation: Situation
) -> dict[tuple[str | None, str | None], tuple[int, float, bool]]:
    """Per batch key of the eligible lots: how many, the longest wait, any urgent."""
    groups: dict[tuple[str | None, str | None], tuple[int, float, bool]] = {}
    for lot in lots:
        if lot.step.batch_max is None:
            continue
        key = _batch_key(lot, tool)
        n, oldest, urgent = groups.get(key, (0, 0.0, False))
        wait = situation.now - lot.queued_at
        lot_urgent = lot.priority != "normal" or (
            lot.qtime_deadline is not None and lot.qtime_deadline - situation.now < 2 * HOUR
        )
        groups[key] = (n + 1, max(oldest, wait), urgent or lot_urgent)
    return groups


def rank_lots(
    tool: ToolSnapshot,
    lots: Iterable[LotSnapshot],
    situation: Situation,
    rule_set: RuleSet = DEFAULT_RULE_SET,
    *,
    explain_all: bool = True,
) -> DispatchList:
    """What-next: the lots ``tool`` may run, best first, and every other lot with its reasons.

    ``lots`` are the lots at steps of the tool's group (others are excluded as wrong group).
    With ``explain_all`` False only the contributions of the top lot are kept (refresh loops).
    """
    blocked = tool_exclusion(tool)
    eligible: list[LotSnapshot] = []
    excluded: list[Excluded] = []
    for lot in lots:
        reasons = []
        own = lot_exclusion(lot)
        if own is not None:
            reasons.append(own)
        else:
            gated = gate_exclusion(lot, situation)
            if gated is not None:
                reasons.append(gated)
        if blocked is not None:
            reasons.append(blocked)
        pair = pair_exclusion(lot, tool, situation)
        if pair is not None:
            reasons.append(pair)
        if reasons:
            excluded.append(Excluded(lot, tuple(reasons)))
        else:
            eligible.append(lot)
    groups = _batch_groups(eligible, tool, situation)
    scored: list[tuple[float, float, str, Candidate, Ranked | None]] = []
    for lot in eligible:
        n, oldest, urgent = groups.get(_batch_key(lot, tool), (1, 0.0, False))
        candidate = Candidate(lot, tool, n, oldest, urgent)
        if explain_all:
            full = explain(candidate, situation, rule_set)
            scored.append((-full.score, lot.queued_at, lot.code, candidate, full))
        else:
            score = _score_only(candidate, situation, rule_set)
            scored.append((-score, lot.queued_at, lot.code, candidate, None))
    scored.sort(key=lambda t: t[:3])
    ranked = []
    for i, (neg, _q, _c, candidate, done) in enumerate(scored):
        if done is None and i == 0:
            done = explain(candidate, situation, rule_set)
        if done is not None:
            ranked.append(Ranked(done.lot, i + 1, done.score, done.contributions))
        else:
            ranked.append(Ranked(candidate.lot, i + 1, -neg, ()))
    excluded.sort(key=lambda e: e.lot.code)
    return DispatchList(
        tool, rule_set.name, rule_set.version, tuple(ranked), tuple(excluded), blocked
    )


@dataclass(frozen=True, slots=True)
class Starts:
    """What an automatic dispatcher starts on a tool from its list: nothing, the top lot, or
    the top lot's batch (the compatible lots ranked after it, up to the free batch size)."""

    lots: tuple[Ranked, ...]
    # Why nothing starts although lots are offered (a batch worth waiting for).
    waiting: str | None = None


def choose_starts(listing: DispatchList, situation: Situation | None = None) -> Starts:
    """Batch formation decides for a batch step: when the ``batch`` rule says the batch is
    worth waiting for (value < 0), nothing starts; else the batch starts now with every
    compatible lot offered (up to the free batch size). Other steps: the top lot.

    With ``situation``, a batch at a step that opens a Q-time window keeps only the lots the
    gate still lets in once the lots before them in the batch are committed too."""
    tool = listing.tool
    if not listing.ranked or listing.tool_exclusion is not None:
        return Starts(())
    top = listing.ranked[0]
    step = top.lot.step
    free = tool.max_lots - len(tool.running)
    if step.batch_max is None:
        return Starts((top,))  # one lot per tool and cycle; the next cycle sees the rest
    for c in top.contributions:
        if c.rule == "batch" and c.value < 0:
            return Starts((), c.why)
    key = _batch_key(top.lot, tool)
    # Lots of other steps (products, routes) on the same recipe fill the batch too; it holds
    # as many lots as the smallest batch size among its steps allows.
    batch: list[Ranked] = []
    size = min(step.batch_max, tool.max_lots)
    for r in listing.ranked:
        other = r.lot.step.batch_max
        if other is None or _batch_key(r.lot, tool) != key:
            continue
        if len(tool.running) + len(batch) + 1 > min(size, other):
            continue
        batch.append(r)
        size = min(size, other)
    batch = batch[: max(1, free)]
    if situation is not None and any(r.lot.step.qtime_chain for r in batch):
        fits = 1  # the top lot passed the gate (it is ranked, not excluded)
        while fits < len(batch):
            committed = with_committed(situation, [r.lot for r in batch[:fits]])
            if gate_exclusion(batch[fits].lot, committed) is not None:
                break
            fits += 1
        batch = batch[:fits]
    return Starts(tuple(batch))


def with_committed(situation: Situation, lots: Iterable[LotSnapshot]) -> Situation:
    """The situation after these lots started: those at a window's opening step are now
    committed to it, so the gate counts them for the lots decided after them (same cycle)."""
    added: dict[tuple[int, int], int] = {}
    for lot in lots:
        # Committed to the window the step opens (the later ones of the chain count when the
        # lot reaches them: the database counts open windows and lots running at their step).
        if lot.step.qtime_chain:
            key = (lot.fab_id, lot.step.qtime_chain[0].to_group_id)
            if key in situation.downstream:
                added[key] = added.get(key, 0) + 1
    if not added:
        return situation
    downstream = dict(situation.downstream)
    for key, n in added.items():
        downstream[key] = replace(downstream[key], committed=downstream[key].committed + n)
    return replace(situation, downstream=downstream)


def window_first(rule_set: RuleSet) -> bool:
    """Does the rule set rank a lot in a Q-time window before the others (``qtime`` rule)? The
    Q-time gate counts the other lots waiting at a closing group as ahead where it does not."""
    return any(rule.name == "qtime" and rule.weight > 0 for rule in rule_set.rules)


# --- where-next ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolOption:
    tool: ToolSnapshot
    rank: int
    # When the lot could start there, in seconds from now, and of what that is made.
    start_in_s: float
    transfer_s: float
    queue_s: float
    setup_s: float
    busy_s: float


@dataclass(frozen=True, slots=True)
class ToolRefused:
    tool: ToolSnapshot
    reasons: tuple[Exclusion, ...]


@dataclass(frozen=True, slots=True)
class WhereNext:
    lot: LotSnapshot
    lot_exclusion: Exclusion | None
    options: tuple[ToolOption, ...]
    refused: tuple[ToolRefused, ...]


def rank_tools(lot: LotSnapshot, tools: Iterable[ToolSnapshot], situation: Situation) -> WhereNext:
    """Where-next: the tools of every fab that could run the lot's step, soonest start first.

    Expected start = transfer to the tool's fab + the fab's queue for the group (queued work
    per tool up) + what runs on the tool now + its setup change. Busy tools and tools not in
    remote control stay options (the lot waits for them); down, unqualified, PM-due and
    dedicated-elsewhere tools are refused, as are tools the lot's Q-time window cannot reach.
    """
    own = lot_exclusion(lot)
    options: list[ToolOption] = []
    refused: list[ToolRefused] = []
    for tool in tools:
        reasons = []
        if own is not None:
            reasons.append(own)
        blocked = tool_exclusion(tool, capacity=False)
        if blocked is not None:
            reasons.append(blocked)
        transfer = situation.transfer(lot.fab_id, tool.fab_id)
        load = situation.loads.get((tool.fab_id, tool.tool_group_id), GroupLoad())
        queue = load.workload_s if not math.isinf(load.workload_s) else 0.0
        setup = situation.setup_time(tool.current_setup, lot.step.setup)
        wait = transfer + max(queue, tool.busy_for_s)
        pair = pair_exclusion(lot, tool, situation, capacity=False, same_fab=False, start_in_s=wait)
        if pair is not None:
            reasons.append(pair)
        if reasons:
            refused.append(ToolRefused(tool, tuple(reasons)))
            continue
        options.append(ToolOption(tool, 0, wait + setup, transfer, queue, setup, tool.busy_for_s))
    options.sort(key=lambda o: (o.start_in_s, o.transfer_s, o.tool.code))
    ranked = tuple(
        ToolOption(o.tool, i + 1, o.start_in_s, o.transfer_s, o.queue_s, o.setup_s, o.busy_s)
        for i, o in enumerate(options)
    )
    refused.sort(key=lambda r: r.tool.code)
    return WhereNext(lot, own, ranked, tuple(refused))
