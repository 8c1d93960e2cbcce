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

The snapshots decided on are in ``policy_inputs``; the building blocks of what-next (which lots
a tool may run, their ranking scored rule by rule over all candidates (``column_rules``),
explanations, batch formation) in ``what_next``; where-next in ``where_next``. This module makes
the decisions (``rank_lots``, ``choose_starts``, ``decide``) and re-exports the names of the
others, so callers and the simulator import ``policy`` alone.

Times are float seconds since the epoch (UTC): cheaper than datetimes in a loop, and the fab
simulator runs on its own clock. The simulator calls ``rank_lots``/``rank_tools`` unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import mes.dispatch.column_rules as column_rules
import mes.dispatch.what_next as what_next
from mes.dispatch.constraint_rules import (
    Exclusion,
    gate_exclusion,
    lot_exclusion,
    pair_exclusion,
    tool_exclusion,
    with_committed,
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
    InQueueOrder,
    RuleDef,
    RuleFn,
    RuleSet,
    RuleSetError,
    Valued,
    WeightedRule,
    in_queue_order,
)
from mes.dispatch.what_next import (
    BatchKey,
    Contribution,
    DispatchList,
    Excluded,
    Ranked,
    Starts,
    candidates_of,
    chosen,
    eligible_lots,
    explain,
    explained_score,
    first_of_batch,
    may_run,
    ranking,
    top_of,
    values_of,
    waits,
)
from mes.dispatch.where_next import ToolOption, ToolRefused, WhereNext, rank_tools
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
    "InQueueOrder",
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
    "decide",
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
    With ``explain_all`` False only the contributions of the top lot, and of the first lot of
    every batch (``choose_starts`` reads its batch rule), are kept (refresh loops).
    """
    blocked = tool_exclusion(tool)
    excluded: list[Excluded] = []
    eligible = eligible_lots(tool, lots, situation, blocked, excluded)
    ranked = []
    batches: set[BatchKey] = set()
    for i, (neg, _q, _c, _n, candidate, done) in enumerate(
        ranking(tool, eligible, situation, rule_set, explain_all)
    ):
        if done is None and (first_of_batch(candidate.lot, tool, batches) or i == 0):
            done = explain(candidate, situation, rule_set)
        if done is not None:
            ranked.append(Ranked(done.lot, i + 1, done.score, done.contributions))
        else:
            ranked.append(Ranked(candidate.lot, i + 1, -neg, ()))
    excluded.sort(key=lambda e: e.lot.code)
    return DispatchList(
        tool, rule_set.name, rule_set.version, tuple(ranked), tuple(excluded), blocked
    )


def choose_starts(listing: DispatchList, situation: Situation | None = None) -> Starts:
    """Batch formation decides for a batch step: when the ``batch`` rule says the top lot's
    batch is worth waiting for (value < 0), the best ranked batch that is ready starts instead
    (or the best ranked lot of a step that is no batch step); only when there is none, nothing
    starts. A batch starts with every compatible lot offered (up to the free batch size).
    Other steps: the top lot. With ``situation``, the Q-time gate trims a batch (``chosen``)."""
    if not listing.ranked or listing.tool_exclusion is not None:
        return Starts(())
    waiting: str | None = None
    batches: set[BatchKey] = set()
    for i, r in enumerate(listing.ranked):
        if not first_of_batch(r.lot, listing.tool, batches) and r.lot.step.batch_max is not None:
            continue  # a lot of a batch ranked above: it starts with that batch or not at all
        if r.lot.step.batch_max is not None:
            why = next((c.why for c in r.contributions if waits(c.rule, c.value)), None)
            if why is not None:
                waiting = waiting or why
                continue
        picked = chosen(listing.tool, [r.lot for r in listing.ranked], i, situation)
        return Starts(tuple(listing.ranked[k] for k in picked))
    return Starts((), waiting)


def _alone(
    lot: LotSnapshot, tool: ToolSnapshot, situation: Situation, rule_set: RuleSet, explain: bool
) -> Starts:
    """``lot``, the top lot of a step that is no batch step, starts alone."""
    top = Candidate(lot, tool)
    if explain:
        full = what_next.explain(top, situation, rule_set)
        return Starts((Ranked(lot, 1, full.score, full.contributions),))
    return Starts((Ranked(lot, 1, what_next.score_of(top, situation, rule_set), ()),))


def decide(
    tool: ToolSnapshot,
    lots: Iterable[LotSnapshot],
    situation: Situation,
    rule_set: RuleSet = DEFAULT_RULE_SET,
    *,
    explain: bool = False,
) -> Starts:
    """What an automatic dispatcher starts on ``tool``: the same as
    ``choose_starts(rank_lots(tool, lots, situation, rule_set, explain_all=False))`` (a test
    holds them equal), without building the list's entries nobody reads (the fab simulator
    decides ~25,000 times a simulated day). With ``explain`` False the started lots carry no
    contributions."""
    blocked = tool_exclusion(tool)
    if blocked is not None:
        return Starts(())
    if rule_set.queue_order_only:
        # The ranking is the queue order, whatever the time: the first lot the tool may run
        # is the top lot. A batch step needs every compatible lot: the general way below.
        if not isinstance(lots, Collection):
            lots = list(lots)  # read twice (a dict's values are not copied)
        for lot in in_queue_order(lots):
            if may_run(lot, tool, situation):
                if lot.step.batch_max is not None:
                    break
                return _alone(lot, tool, situation, rule_set, explain)
        else:
            return Starts(())
    eligible = eligible_lots(tool, lots, situation, None, None)
    if not eligible:
        return Starts(())
    if all(lot.step.batch_max is None for lot in eligible):
        # No batch step: the top lot starts, alone; no need to rank the others.
        scores = column_rules.scores(
            eligible, tool, situation, rule_set, lambda: candidates_of(tool, eligible, situation)
        )
        return _alone(eligible[top_of(eligible, scores)], tool, situation, rule_set, explain)
    entries = ranking(tool, eligible, situation, rule_set, False)
    # As choose_starts walks the list rank_lots makes (whose top lot and first lot of each
    # batch are explained there, and here).
    waiting: str | None = None
    batches: set[BatchKey] = set()
    for i, (neg, _q, _c, _n, candidate, _none) in enumerate(entries):
        lot = candidate.lot
        batch = lot.step.batch_max is not None
        if not first_of_batch(lot, tool, batches) and batch:
            continue
        explained = i == 0 or batch  # rank_lots explains these
        values = values_of(candidate, situation, rule_set) if explained else []
        if batch:
            why = next(
                (
                    why.format(*args)
                    for rule, (value, why, args) in zip(rule_set.rules, values, strict=True)
                    if waits(rule.name, value)
                ),
                None,
            )
            if why is not None:
                waiting = waiting or why
                continue
        if not explained:
            lead = Ranked(lot, i + 1, -neg, ())
        elif explain:
            full = what_next.explain(candidate, situation, rule_set)
            lead = Ranked(lot, i + 1, full.score, full.contributions)
        else:
            lead = Ranked(lot, i + 1, explained_score(rule_set, values), ())
        picked = chosen(tool, [e[4].lot for e in entries], i, situation)
        return Starts(
            tuple(
                lead if k == i else Ranked(entries[k][4].lot, k + 1, -entries[k][0], ())
                for k in picked
            )
        )
    return Starts((), waiting)


def window_first(rule_set: RuleSet) -> bool:
    """Does the rule set rank a lot in a Q-time window before the others (``qtime`` rule)? The
    Q-time gate counts the other lots waiting at a closing group as ahead where it does not."""
    return any(rule.name == "qtime" and rule.weight > 0 for rule in rule_set.rules)
