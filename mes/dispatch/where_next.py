"""Where-next: the tools of every fab that could run a lot's step, soonest expected start
first, and the tools refused with their reasons. Pure, like ``policy``, which re-exports it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from mes.dispatch.constraint_rules import Exclusion, lot_exclusion, pair_exclusion, tool_exclusion
from mes.dispatch.policy_inputs import GroupLoad, LotSnapshot, Situation, ToolSnapshot


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
