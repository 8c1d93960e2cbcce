"""What-next, the building blocks ``policy`` decides with: which lots a tool may run
(``eligible_lots``), their ranking (``ranking``: scores column-wise, ``column_rules``; ties to
the longest-waiting lot, then the lot code), a lot's explanation (``explain``), and batch
formation (``chosen``: the lots that start with a batch's lead). Pure; callers import
``policy``, which re-exports the result types.
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
    with_committed,
)
from mes.dispatch.policy_inputs import WAITING, LotSnapshot, Situation, ToolSnapshot
from mes.dispatch.ranking_rules import HOUR, Candidate, RuleSet, Valued


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


def values_of(candidate: Candidate, situation: Situation, rule_set: RuleSet) -> list[Valued]:
    return [rule.fn(candidate, situation, rule.params) for rule in rule_set.rules]


def explained_score(rule_set: RuleSet, values: list[Valued]) -> float:
    # The score ``explain`` gives: added up rule by rule, in the rule set's order.
    total = 0.0
    for rule, (value, _why, _args) in zip(rule_set.rules, values, strict=True):
        total += rule.weight * value
    return total


def score_of(candidate: Candidate, situation: Situation, rule_set: RuleSet) -> float:
    """``explained_score`` of the candidate's values, evaluating only the rules that weigh: a
    rule of weight 0 adds 0.0 or -0.0, which leaves a sum started at 0.0 as it was."""
    total = 0.0
    for rule in rule_set.weighted:
        total += rule.weight * rule.fn(candidate, situation, rule.params)[0]
    return total


def explain(candidate: Candidate, situation: Situation, rule_set: RuleSet) -> Ranked:
    parts = []
    total = 0.0
    for rule, (value, why, args) in zip(
        rule_set.rules, values_of(candidate, situation, rule_set), strict=True
    ):
        contribution = rule.weight * value
        total += contribution
        parts.append(Contribution(rule.name, rule.weight, value, contribution, why.format(*args)))
    return Ranked(candidate.lot, 0, total, tuple(parts))


BatchKey = tuple[str | None, str | None]


def batch_key(lot: LotSnapshot, tool: ToolSnapshot) -> BatchKey:
    """Lots that may share a batch on ``tool``: the same recipe there (whatever their product,
    route or step) and the same setup."""
    return (lot.recipe_on(tool.id), lot.step.setup)


def batch_groups(
    lots: Sequence[LotSnapshot], tool: ToolSnapshot, situation: Situation
) -> dict[tuple[str | None, str | None], tuple[int, float, bool]]:
    """Per batch key of the eligible lots: how many, the longest wait, any urgent."""
    groups: dict[tuple[str | None, str | None], tuple[int, float, bool]] = {}
    for lot in lots:
        if lot.step.batch_max is None:
            continue
        key = batch_key(lot, tool)
        n, oldest, urgent = groups.get(key, (0, 0.0, False))
        wait = situation.now - lot.queued_at
        lot_urgent = lot.priority != "normal" or (
            lot.qtime_deadline is not None and lot.qtime_deadline - situation.now < 2 * HOUR
        )
        groups[key] = (n + 1, max(oldest, wait), urgent or lot_urgent)
    return groups


def plain(lot: LotSnapshot, tool: ToolSnapshot, situation: Situation) -> bool:
    """The common case, where no constraint keeps ``lot`` off ``tool`` (a waiting lot, no
    reticle, no dedication to another tool, no Q-time gate data, its window if any still open
    once set up, an empty tool qualified for its recipe): checked in one go, as the constraint
    functions' calls cost. A lot that is not plain may still be eligible: the constraints say."""
    step = lot.step
    deadline = lot.qtime_deadline
    return (
        not tool.running
        and lot.state == WAITING
        and lot.holds <= 0
        and lot.qtime_earliest is None
        and (lot.dedicated_tool_id is None or lot.dedicated_tool_id == tool.id)
        and lot.recipe_by_tool is None
        and not (step.qtime_chain and situation.downstream)  # else the gate has no say
        and step.reticle is None
        and lot.fab_id == tool.fab_id
        and step.tool_group_id == tool.tool_group_id
        and step.recipe is not None
        and step.recipe in tool.qualified
        and (
            deadline is None
            or situation.now + situation.setup_time(tool.current_setup, step.setup) <= deadline
        )
    )


def may_run(lot: LotSnapshot, tool: ToolSnapshot, situation: Situation) -> bool:
    """No constraint keeps ``lot`` off ``tool`` (the tool's own state aside)."""
    if plain(lot, tool, situation):
        return True
    if lot.dedicated_tool_id not in (None, tool.id):
        return False  # excluded, whatever else (and no need to say why)
    return (
        lot_exclusion(lot) is None
        and gate_exclusion(lot, situation) is None
        and pair_exclusion(lot, tool, situation) is None
    )


def eligible_lots(
    tool: ToolSnapshot,
    lots: Iterable[LotSnapshot],
    situation: Situation,
    blocked: Exclusion | None,
    excluded: list[Excluded] | None,
) -> list[LotSnapshot]:
    """The lots the tool may run now; the others go to ``excluded`` with every reason (when a
    list is given: a decision alone does not need them)."""
    eligible: list[LotSnapshot] = []
    # ``plain`` inline (the calls cost: a decision looks at every lot waiting for the group).
    fab, group, qualified, tool_id = tool.fab_id, tool.tool_group_id, tool.qualified, tool.id
    free = blocked is None and not tool.running
    now, setup_time, current = situation.now, situation.setup_time, tool.current_setup
    gated = bool(situation.downstream)
    for lot in lots:
        step = lot.step
        if (
            free
            and lot.state == WAITING
            and lot.holds <= 0
            and lot.qtime_earliest is None
            and (lot.dedicated_tool_id is None or lot.dedicated_tool_id == tool_id)
            and lot.recipe_by_tool is None
            and not (step.qtime_chain and gated)
            and step.reticle is None
            and lot.fab_id == fab
            and step.tool_group_id == group
            and step.recipe is not None
            and step.recipe in qualified
            and (
                lot.qtime_deadline is None
                or now + setup_time(current, step.setup) <= lot.qtime_deadline
            )
        ):
            eligible.append(lot)
            continue
        if excluded is None and lot.dedicated_tool_id not in (None, tool_id):
            continue  # dedicated to another tool: excluded, whatever else
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
Entry = tuple[float, float, str, int, Candidate, "Ranked | None"]


def candidates_of(
    tool: ToolSnapshot, eligible: list[LotSnapshot], situation: Situation
) -> list[Candidate]:
    groups = batch_groups(eligible, tool, situation)
    out = []
    for lot in eligible:
        if lot.step.batch_max is None:
            out.append(Candidate(lot, tool))
        else:
            peers, oldest, urgent = groups[batch_key(lot, tool)]
            out.append(Candidate(lot, tool, peers, oldest, urgent))
    return out


def ranking(
    tool: ToolSnapshot,
    eligible: list[LotSnapshot],
    situation: Situation,
    rule_set: RuleSet,
    explain_all: bool,
) -> list[Entry]:
    candidates = candidates_of(tool, eligible, situation)
    entries: list[Entry] = []
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


def top_of(eligible: list[LotSnapshot], score: list[float]) -> int:
    """Where in ``eligible`` the lot ``ranking`` would put first: the highest score, then the
    earliest ``queued_at``, the lowest code, the first given (a sort's first, without sorting)."""
    best = max(score)
    if score.count(best) == 1:  # built-ins: mostly one lot has the best score
        return score.index(best)
    tied = [n for n, x in enumerate(score) if x == best]
    return min(tied, key=lambda n: (eligible[n].queued_at, eligible[n].code, n))


@dataclass(frozen=True, slots=True)
class Starts:
    """What an automatic dispatcher starts on a tool from its list: nothing, the top lot, or
    the top lot's batch (the compatible lots ranked after it, up to the free batch size)."""

    lots: tuple[Ranked, ...]
    # Why nothing starts although lots are offered (a batch worth waiting for).
    waiting: str | None = None


def first_of_batch(lot: LotSnapshot, tool: ToolSnapshot, seen: set[BatchKey]) -> bool:
    """``lot`` (taken best first) is the first of its batch (recipe and setup) on the tool."""
    if lot.step.batch_max is None:
        return False
    key = batch_key(lot, tool)
    if key in seen:
        return False
    seen.add(key)
    return True


def waits(rule: str, value: float) -> bool:
    """The top lot's batch is worth waiting for: its ``batch`` rule value is below 0."""
    return rule == "batch" and value < 0


def chosen(
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
    key = batch_key(lead, tool)
    size = min(step.batch_max, tool.max_lots)
    batch: list[int] = []
    for i in range(first, len(ranked)):
        lot = ranked[i]
        other = lot.step.batch_max
        if other is None or batch_key(lot, tool) != key:
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
