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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import mes.dispatch.column_rules as column_rules
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
    RuleDef,
    RuleFn,
    RuleSet,
    RuleSetError,
    Valued,
    WeightedRule,
    in_queue_order,
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


def _values(candidate: Candidate, situation: Situation, rule_set: RuleSet) -> list[Valued]:
    return [rule.fn(candidate, situation, rule.params) for rule in rule_set.rules]


def _explained_score(rule_set: RuleSet, values: list[Valued]) -> float:
    # The score ``explain`` gives: added up rule by rule, in the rule set's order.
    total = 0.0
    for rule, (value, _why, _args) in zip(rule_set.rules, values, strict=True):
        total += rule.weight * value
    return total


def explain(candidate: Candidate, situation: Situation, rule_set: RuleSet) -> Ranked:
    parts = []
    total = 0.0
    for rule, (value, why, args) in zip(
        rule_set.rules, _values(candidate, situation, rule_set), strict=True
    ):
        contribution = rule.weight * value
        total += contribution
        parts.append(Contribution(rule.name, rule.weight, value, contribution, why.format(*args)))
    return Ranked(candidate.lot, 0, total, tuple(parts))


_explain = explain  # ``decide`` has a parameter of that name


_BatchKey = tuple[str | None, str | None]


def _batch_key(lot: LotSnapshot, tool: ToolSnapshot) -> _BatchKey:
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


def _eligible(
    tool: ToolSnapshot,
    lots: Iterable[LotSnapshot],
    situation: Situation,
    blocked: Exclusion | None,
    excluded: list[Excluded] | None,
) -> list[LotSnapshot]:
    """The lots the tool may run now; the others go to ``excluded`` with every reason (when a
    list is given: a decision alone does not need them)."""
    eligible: list[LotSnapshot] = []
    # The common case inline (a waiting lot, no window, reticle or dedication, an empty tool
    # qualified for its recipe), where every constraint passes; any other lot is checked in
    # full. Most of a decision's lots are the common case, and the calls cost.
    fab, group, qualified, idle = tool.fab_id, tool.tool_group_id, tool.qualified, not tool.running
    for lot in lots:
        step = lot.step
        if (
            blocked is None
            and idle
            and lot.state == WAITING
            and lot.holds <= 0
            and lot.qtime_deadline is None
            and lot.qtime_earliest is None
            and lot.dedicated_tool_id is None
            and lot.recipe_by_tool is None
            and not step.qtime_chain
            and step.reticle is None
            and lot.fab_id == fab
            and step.tool_group_id == group
            and step.recipe is not None
            and step.recipe in qualified
        ):
            eligible.append(lot)
            continue
        own = lot_exclusion(lot) or gate_exclusion(lot, situation)
        if own is None and blocked is None:
            pair = pair_exclusion(lot, tool, situation)
            if pair is None:
                eligible.append(lot)
            elif excluded is not None:
                excluded.append(Excluded(lot, (pair,)))
            continue
        if excluded is None:
            continue
        reasons = []
        if own is not None:
            reasons.append(own)
        if blocked is not None:
            reasons.append(blocked)
        pair = pair_exclusion(lot, tool, situation)
        if pair is not None:
            reasons.append(pair)
        excluded.append(Excluded(lot, tuple(reasons)))
    return eligible


# (-score, queued_at, code, position, candidate, explanation): sorting these tuples is the
# ranking; the position breaks full ties in the lots' given order (a stable sort on the
# first three) and keeps candidates out of the comparison.
_Entry = tuple[float, float, str, int, Candidate, "Ranked | None"]


def _candidates(
    tool: ToolSnapshot, eligible: list[LotSnapshot], situation: Situation
) -> list[Candidate]:
    groups = _batch_groups(eligible, tool, situation)
    out = []
    for lot in eligible:
        if lot.step.batch_max is None:
            out.append(Candidate(lot, tool))
        else:
            peers, oldest, urgent = groups[_batch_key(lot, tool)]
            out.append(Candidate(lot, tool, peers, oldest, urgent))
    return out


def _ranking(
    tool: ToolSnapshot,
    eligible: list[LotSnapshot],
    situation: Situation,
    rule_set: RuleSet,
    explain_all: bool,
) -> list[_Entry]:
    candidates = _candidates(tool, eligible, situation)
    entries: list[_Entry] = []
    if explain_all:
        for n, candidate in enumerate(candidates):
            full = explain(candidate, situation, rule_set)
            lot = candidate.lot
            entries.append((-full.score, lot.queued_at, lot.code, n, candidate, full))
    else:
        score = column_rules.scores(eligible, tool, situation, rule_set, lambda: candidates)
        for n, candidate in enumerate(candidates):
            lot = candidate.lot
            entries.append((-score[n], lot.queued_at, lot.code, n, candidate, None))
    entries.sort()
    return entries


def _top(eligible: list[LotSnapshot], score: list[float]) -> int:
    """Where in ``eligible`` the lot ``_ranking`` would put first: the highest score, then the
    earliest ``queued_at``, the lowest code, the first given (a sort's first, without sorting)."""
    best = max(score)
    tied = [n for n, x in enumerate(score) if x == best]
    if len(tied) == 1:
        return tied[0]
    return min(tied, key=lambda n: (eligible[n].queued_at, eligible[n].code, n))


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
    eligible = _eligible(tool, lots, situation, blocked, excluded)
    ranked = []
    batches: set[_BatchKey] = set()
    for i, (neg, _q, _c, _n, candidate, done) in enumerate(
        _ranking(tool, eligible, situation, rule_set, explain_all)
    ):
        if done is None and (_first_of_batch(candidate.lot, tool, batches) or i == 0):
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


def _first_of_batch(lot: LotSnapshot, tool: ToolSnapshot, seen: set[_BatchKey]) -> bool:
    """``lot`` (taken best first) is the first of its batch (recipe and setup) on the tool."""
    if lot.step.batch_max is None:
        return False
    key = _batch_key(lot, tool)
    if key in seen:
        return False
    seen.add(key)
    return True


def _waits(rule: str, value: float) -> bool:
    """The top lot's batch is worth waiting for: its ``batch`` rule value is below 0."""
    return rule == "batch" and value < 0


def _chosen(
    tool: ToolSnapshot,
    ranked: Sequence[LotSnapshot],
    first: int,
    situation: Situation | None = None,
) -> list[int]:
    """Positions in ``ranked`` (best first) of the lots that start with ``ranked[first]``: that
    lot, or for a batch step the lots of its batch key in rank order — other steps (products,
    routes) on the same recipe and setup too — up to the free batch size, which is the smallest
    batch size among the batch's steps. With ``situation``, a batch at a step that opens a
    Q-time window keeps only the lots the gate still lets in once the lots before them in the
    batch are committed too."""
    lead = ranked[first]
    step = lead.step
    if step.batch_max is None:
        return [first]  # one lot per tool and cycle; the next cycle sees the rest
    free = tool.max_lots - len(tool.running)
    key = _batch_key(lead, tool)
    size = min(step.batch_max, tool.max_lots)
    batch: list[int] = []
    for i in range(first, len(ranked)):
        lot = ranked[i]
        other = lot.step.batch_max
        if other is None or _batch_key(lot, tool) != key:
            continue
        if len(tool.running) + len(batch) + 1 > min(size, other):
            continue
        batch.append(i)
        size = min(size, other)
    batch = batch[: max(1, free)]
    if situation is not None and any(ranked[i].step.qtime_chain for i in batch):
        fits = 1  # the lead passed the gate (it is ranked, not excluded)
        while fits < len(batch):
            committed = with_committed(situation, [ranked[i] for i in batch[:fits]])
            if gate_exclusion(ranked[batch[fits]], committed) is not None:
                break
            fits += 1
        batch = batch[:fits]
    return batch


def choose_starts(listing: DispatchList, situation: Situation | None = None) -> Starts:
    """Batch formation decides for a batch step: when the ``batch`` rule says the top lot's
    batch is worth waiting for (value < 0), the best ranked batch that is ready starts instead
    (or the best ranked lot of a step that is no batch step); only when there is none, nothing
    starts. A batch starts with every compatible lot offered (up to the free batch size).
    Other steps: the top lot. With ``situation``, the Q-time gate trims a batch (``_chosen``)."""
    if not listing.ranked or listing.tool_exclusion is not None:
        return Starts(())
    waiting: str | None = None
    batches: set[_BatchKey] = set()
    for i, r in enumerate(listing.ranked):
        if not _first_of_batch(r.lot, listing.tool, batches) and r.lot.step.batch_max is not None:
            continue  # a lot of a batch ranked above: it starts with that batch or not at all
        if r.lot.step.batch_max is not None:
            why = next((c.why for c in r.contributions if _waits(c.rule, c.value)), None)
            if why is not None:
                waiting = waiting or why
                continue
        chosen = _chosen(listing.tool, [r.lot for r in listing.ranked], i, situation)
        return Starts(tuple(listing.ranked[k] for k in chosen))
    return Starts((), waiting)


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
        lots = list(lots)
        for lot in in_queue_order(lots):
            if (
                lot_exclusion(lot) is None
                and gate_exclusion(lot, situation) is None
                and pair_exclusion(lot, tool, situation) is None
            ):
                if lot.step.batch_max is not None:
                    break
                top = Candidate(lot, tool)
                if explain:
                    full = _explain(top, situation, rule_set)
                    return Starts((Ranked(lot, 1, full.score, full.contributions),))
                score = _explained_score(rule_set, _values(top, situation, rule_set))
                return Starts((Ranked(lot, 1, score, ()),))
        else:
            return Starts(())
    eligible = _eligible(tool, lots, situation, None, None)
    if not eligible:
        return Starts(())
    if all(lot.step.batch_max is None for lot in eligible):
        # No batch step: the top lot starts, alone; no need to rank the others.
        lot = eligible[
            _top(
                eligible,
                column_rules.scores(
                    eligible,
                    tool,
                    situation,
                    rule_set,
                    lambda: _candidates(tool, eligible, situation),
                ),
            )
        ]
        top = Candidate(lot, tool)
        if explain:
            full = _explain(top, situation, rule_set)
            return Starts((Ranked(lot, 1, full.score, full.contributions),))
        return Starts(
            (Ranked(lot, 1, _explained_score(rule_set, _values(top, situation, rule_set)), ()),)
        )
    entries = _ranking(tool, eligible, situation, rule_set, False)
    # As choose_starts walks the list rank_lots makes (whose top lot and first lot of each
    # batch are explained there, and here).
    waiting: str | None = None
    batches: set[_BatchKey] = set()
    for i, (neg, _q, _c, _n, candidate, _none) in enumerate(entries):
        lot = candidate.lot
        batch = lot.step.batch_max is not None
        if not _first_of_batch(lot, tool, batches) and batch:
            continue
        explained = i == 0 or batch  # rank_lots explains these
        values = _values(candidate, situation, rule_set) if explained else []
        if batch:
            why = next(
                (
                    why.format(*args)
                    for rule, (value, why, args) in zip(rule_set.rules, values, strict=True)
                    if _waits(rule.name, value)
                ),
                None,
            )
            if why is not None:
                waiting = waiting or why
                continue
        if not explained:
            lead = Ranked(lot, i + 1, -neg, ())
        elif explain:
            full = _explain(candidate, situation, rule_set)
            lead = Ranked(lot, i + 1, full.score, full.contributions)
        else:
            lead = Ranked(lot, i + 1, _explained_score(rule_set, values), ())
        chosen = _chosen(tool, [e[4].lot for e in entries], i, situation)
        return Starts(
            tuple(
                lead if k == i else Ranked(entries[k][4].lot, k + 1, -entries[k][0], ())
                for k in chosen
            )
        )
    return Starts((), waiting)


def window_first(rule_set: RuleSet) -> bool:
    """Does the rule set rank a lot in a Q-time window before the others (``qtime`` rule)? The
    Q-time gate counts the other lots waiting at a closing group as ahead where it does not."""
    return any(rule.name == "qtime" and rule.weight > 0 for rule in rule_set.rules)
