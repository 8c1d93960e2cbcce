"""Q-time gating: whether a lot may start the step that opens a Q-time window. Pure.

Starting (tracking in) a lot at a window's opening step commits it to the window: once it has
run, the closing step must start before the deadline or the lot is held (and often reworked or
scrapped). The classic gating rule therefore looks downstream *before* the start: the lots
already committed to windows that close at the same tool group are served first, by the tools
of that group that are up, each as soon as it is free; the lot may start only if its own turn
at the closing step comes before its window would close.

Times are seconds from now. The approximation, on purpose simple enough to check by hand:
committed lots take the closing group's tools before this one (the ``qtime`` ranking rule puts
window lots first), each run holds ``to_batch`` lots and lasts ``to_process_s``, and lots of
other steps that compete for those tools are not counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chain:
    """The window a start at the opening step commits the lot to."""

    max_s: float  # the window: from leaving the opening step to starting the closing step
    lead_s: float  # the opening step's own process time (the window opens at its end)
    between_s: float  # raw process time of the steps inside the window, before the closing one
    to_sequence: int
    to_group_id: int
    to_process_s: float  # one run at the closing step
    to_batch: int = 1  # lots per run at the closing step
    min_s: float = 0.0  # minimum Q-time: the closing step may not start before it


@dataclass(frozen=True, slots=True)
class Downstream:
    """The closing tool group in the lot's fab, as the gate sees it."""

    committed: int  # lots committed to windows closing at this group, not started there yet
    free_in_s: tuple[float, ...]  # each tool up: seconds until it is free (0: idle)
    # Other lots waiting at the group that it would start before a window lot (all of them
    # when its dispatching does not put window lots first, as FIFO does not).
    queued: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    start_in_s: float  # expected start at the closing step (from now)
    deadline_in_s: float  # when the window would close (from now)
    why: str


def gate(chain: Chain, downstream: Downstream) -> Verdict:
    """May the lot start the opening step now? See the module's docstring for the model."""
    deadline = chain.lead_s + chain.max_s
    arrival = chain.lead_s + max(chain.between_s, chain.min_s)
    committed = max(0, downstream.committed)
    ahead = committed + max(0, downstream.queued)
    if chain.between_s >= chain.max_s:
        # The route itself cannot meet the window; holding lots back would only stop the line.
        return Verdict(
            True,
            arrival,
            deadline,
            f"window to step {chain.to_sequence} ({chain.max_s / 3600:.2f} h) is shorter than "
            f"the process time inside it ({chain.between_s / 3600:.2f} h): not gated",
        )
    if not downstream.free_in_s:
        return Verdict(
            False,
            float("inf"),
            deadline,
            f"no tool of step {chain.to_sequence}'s group is up ({committed} lots committed)",
        )
    # List scheduling: each run before the lot's own takes the tool that is free first.
    free = sorted(max(0.0, t) for t in downstream.free_in_s)
    for _ in range(ahead // max(1, chain.to_batch)):
        heapq.heapreplace(free, free[0] + chain.to_process_s)
    start = max(arrival, free[0])
    ok = start <= deadline
    verdict = "fits" if ok else "would miss it"
    return Verdict(
        ok,
        start,
        deadline,
        f"Q-time gate to step {chain.to_sequence}: {committed} lots committed"
        + (f" and {downstream.queued} queued ahead" if downstream.queued else "")
        + ", "
        f"{len(free)} tools up; start there in {start / 3600:.2f} h, window closes in "
        f"{deadline / 3600:.2f} h: {verdict}",
    )


@dataclass(frozen=True, slots=True)
class RouteStep:
    """What ``chain_from`` needs of a route's step (each caller maps its own step type)."""

    sequence: int
    group_id: int
    process_s: float  # one run, raw
    batch: int = 1  # lots per run
    qtime_to_sequence: int | None = None
    qtime_max_s: float | None = None
    qtime_min_s: float | None = None
    gateable: bool = True  # False: a closing step no queue precedes (a simulator delay)


def chain_from(steps: Sequence[RouteStep], index: int) -> tuple[Chain, ...]:
    """The windows a start at ``steps[index]`` commits the lot to: the one this step opens and,
    where its closing step opens the next (a chain), that one and so on. Each window's
    ``lead_s`` counts from the start of the chain, as if nothing waited on the way."""
    by_sequence = {s.sequence: i for i, s in enumerate(steps)}
    legs: list[Chain] = []
    lead = 0.0
    i = index
    while True:
        step = steps[i]
        if step.qtime_to_sequence is None or step.qtime_max_s is None:
            break
        j = by_sequence.get(step.qtime_to_sequence)
        if j is None or j <= i or not steps[j].gateable:
            break
        lead += step.process_s
        between = sum(steps[k].process_s for k in range(i + 1, j))
        closing = steps[j]
        legs.append(
            Chain(
                max_s=step.qtime_max_s,
                lead_s=lead,
                between_s=between,
                to_sequence=closing.sequence,
                to_group_id=closing.group_id,
                to_process_s=closing.process_s,
                to_batch=max(1, closing.batch),
                min_s=step.qtime_min_s or 0.0,
            )
        )
        lead += between
        i = j
    return tuple(legs)


def gate_chain(legs: Sequence[Chain], downstream: Mapping[int, Downstream]) -> Verdict | None:
    """The gate over every window of a chain (``downstream`` by closing tool group; a group
    missing is not gated): the first window the lot would miss, else the first window's
    verdict. None: nothing to gate."""
    first: Verdict | None = None
    for leg in legs:
        found = downstream.get(leg.to_group_id)
        if found is None:
            continue
        verdict = gate(leg, found)
        if not verdict.ok:
            return verdict
        first = first or verdict
    return first
