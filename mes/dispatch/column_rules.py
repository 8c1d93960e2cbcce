"""The ranking rules column-wise: one rule's value for every candidate lot of a decision in one
pass, and the candidates' scores from them. Pure.

The per-lot rules (``ranking_rules``) stay the definition, and explain a lot's place; these
give the same floats, operation for operation (a test holds them equal on random fab states,
and seeded simulator runs to the same figures bit for bit), for the ranking alone, which is
most of a decision's cost: no ``Candidate`` per lot and rule where no rule reads one, no
explanation tuples, values that depend on a lot's setup or next tool group computed once per
setup or group. A rule without a column form here (``batch``: it reads the candidate's batch
peers) is evaluated lot by lot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from mes.dispatch.policy_inputs import GroupLoad, LotSnapshot, Situation, ToolSnapshot
from mes.dispatch.ranking_rules import (
    Candidate,
    RuleFn,
    RuleSet,
    _critical_ratio,
    _decay,
    _edd,
    _fifo,
    _least_slack,
    _logistic,
    _lot_type,
    _priority,
    _qtime,
    _setup,
    _setup_demand,
    _spt,
    _srpt,
    _wip_balance,
)

Column = Callable[
    [Sequence[LotSnapshot], ToolSnapshot, Situation, Mapping[str, float]], list[float]
]


def _priority_col(
    lots: Sequence[LotSnapshot], _t: ToolSnapshot, _s: Situation, p: Mapping[str, float]
) -> list[float]:
    table = {"super_hot": p["super_hot"], "hot": p["hot"]}
    normal = p["normal"]
    return [table.get(lot.priority, normal) for lot in lots]


def _lot_type_col(
    lots: Sequence[LotSnapshot], _t: ToolSnapshot, _s: Situation, p: Mapping[str, float]
) -> list[float]:
    return [p.get(lot.lot_type, 0.0) for lot in lots]


def _fifo_col(
    lots: Sequence[LotSnapshot], _t: ToolSnapshot, s: Situation, p: Mapping[str, float]
) -> list[float]:
    now, scale = s.now, p["scale_s"]
    out = []
    for lot in lots:
        wait = max(0.0, now - lot.queued_at)
        out.append(1.0 - (1.0 if wait <= 0 else scale / (scale + wait)))
    return out


def _critical_ratio_col(
    lots: Sequence[LotSnapshot], _t: ToolSnapshot, s: Situation, p: Mapping[str, float]
) -> list[float]:
    now, factor, scale, exp = s.now, p["flow_factor"], p["scale"], math.exp
    out: list[float] = []
    append = out.append
    for lot in lots:
        due = lot.due_at
        if due is None:
            append(0.0)
            continue
        flow = lot.remaining_process_s * factor
        z = ((due - now) / (flow if flow > 1.0 else 1.0) - 1.0) / scale  # max(1.0, flow)
        append(0.0 if z > 50 else 1.0 if z < -50 else 1.0 / (1.0 + exp(z)))
    return out


def _edd_col(
    lots: Sequence[LotSnapshot], _t: ToolSnapshot, s: Situation, p: Mapping[str, float]
) -> list[float]:
    now, scale = s.now, p["scale_s"]
    return [0.0 if lot.due_at is None else _logistic(lot.due_at - now, scale) for lot in lots]


def _spt_col(
    lots: Sequence[LotSnapshot], _t: ToolSnapshot, _s: Situation, p: Mapping[str, float]
) -> list[float]:
    scale = p["scale_s"]
    return [_decay(lot.step.process_time_s, scale) for lot in lots]


def _srpt_col(
    lots: Sequence[LotSnapshot], _t: ToolSnapshot, _s: Situation, p: Mapping[str, float]
) -> list[float]:
    scale = p["scale_s"]
    return [_decay(lot.remaining_process_s, scale) for lot in lots]


def _least_slack_col(
    lots: Sequence[LotSnapshot], _t: ToolSnapshot, s: Situation, p: Mapping[str, float]
) -> list[float]:
    now, factor, scale = s.now, p["flow_factor"], p["scale_s"]
    return [
        0.0
        if lot.due_at is None
        else _logistic(lot.due_at - now - max(1.0, lot.remaining_process_s * factor), scale)
        for lot in lots
    ]


def _once_per_setup(rule: RuleFn) -> Column:
    """The column of a rule whose value depends on the lot's setup alone (and the tool's):
    computed once per setup wanted."""

    def column(
        lots: Sequence[LotSnapshot], tool: ToolSnapshot, s: Situation, p: Mapping[str, float]
    ) -> list[float]:
        by_setup: dict[str | None, float] = {}
        out = []
        for lot in lots:
            wanted = lot.step.setup
            value = by_setup.get(wanted)
            if value is None:
                value = by_setup[wanted] = rule(Candidate(lot, tool), s, p)[0]
            out.append(value)
        return out

    return column


def _qtime_col(
    lots: Sequence[LotSnapshot], _t: ToolSnapshot, s: Situation, p: Mapping[str, float]
) -> list[float]:
    now, scale = s.now, p["scale_s"]
    return [
        0.0 if lot.qtime_deadline is None else _decay(lot.qtime_deadline - now, scale)
        for lot in lots
    ]


def _wip_balance_col(
    lots: Sequence[LotSnapshot], tool: ToolSnapshot, s: Situation, p: Mapping[str, float]
) -> list[float]:
    # The value depends on the lot's next tool group alone: once per group.
    by_group: dict[int | None, float] = {}
    out = []
    for lot in lots:
        nxt = lot.next_tool_group_id
        value = by_group.get(nxt)
        if value is None:
            if nxt is None:
                value = 0.0
            else:
                w = s.loads.get((tool.fab_id, nxt), GroupLoad()).workload_s
                value = 0.0 if math.isinf(w) else _decay(w, p["scale_s"])
            by_group[nxt] = value
        out.append(value)
    return out


COLUMNS: Mapping[object, Column] = {
    _priority: _priority_col,
    _lot_type: _lot_type_col,
    _fifo: _fifo_col,
    _critical_ratio: _critical_ratio_col,
    _edd: _edd_col,
    _spt: _spt_col,
    _srpt: _srpt_col,
    _least_slack: _least_slack_col,
    _setup: _once_per_setup(_setup),
    _setup_demand: _once_per_setup(_setup_demand),
    _qtime: _qtime_col,
    _wip_balance: _wip_balance_col,
}


def scores(
    lots: Sequence[LotSnapshot],
    tool: ToolSnapshot,
    situation: Situation,
    rule_set: RuleSet,
    candidates: Callable[[], Sequence[Candidate]],
) -> list[float]:
    """The ranking score of each lot: ``w * value`` for one rule of non-zero weight, else
    ``sum([w * value, ...])`` over the rules in the rule set's order (rules of weight 0 left out:
    they add ±0.0). ``candidates`` builds the lots' candidates, for rules without a column
    form."""
    weighted: list[tuple[float, list[float]]] = []
    built: Sequence[Candidate] | None = None
    for rule in rule_set.rules:
        w = rule.weight
        if w == 0:
            continue
        column = COLUMNS.get(rule.fn)
        if column is not None:
            values = column(lots, tool, situation, rule.params)
        else:
            if built is None:
                built = candidates()
            fn, params = rule.fn, rule.params
            values = [fn(c, situation, params)[0] for c in built]
        weighted.append((w, values))
    # ``sum`` of floats adds from 0 (0.0 + the first, then the others in order): the same
    # floats, written out for up to three rules (one pass, no list per lot).
    if not weighted:
        return [0] * len(lots)  # what ``sum([])`` gives per lot
    if len(weighted) == 1:
        w, values = weighted[0]
        return [w * v for v in values]
    if len(weighted) == 2:
        (w1, v1), (w2, v2) = weighted
        return [0.0 + w1 * a + w2 * b for a, b in zip(v1, v2, strict=True)]
    if len(weighted) == 3:
        (w1, v1), (w2, v2), (w3, v3) = weighted
        return [0.0 + w1 * a + w2 * b + w3 * c for a, b, c in zip(v1, v2, v3, strict=True)]
    columns = [[w * v for v in values] for w, values in weighted]
    return [sum(parts) for parts in zip(*columns, strict=True)]
