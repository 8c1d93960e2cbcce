"""Q-time gating in the simulator: which lots are committed to a window closing at each tool
family, and the closing families as the gate sees them (``policy.Downstream``). Pure.

A lot is committed when it starts a step that opens a window (as a track-in commits it in
production) and stays so until it starts the closing step (or passes it: sampling may skip
it) or completes. The engine builds the gate's input only with gating on, and only for the
families whose lots may open a window.
"""

from __future__ import annotations

from collections.abc import Mapping

import mes.dispatch.policy as policy
from mes.simulation.model import FAB_ID, Route
from mes.simulation.state import BROKEN, SimLot, Tool


class Commitments:
    def __init__(
        self, routes: Mapping[str, Route], rule_sets: Mapping[int, policy.RuleSet]
    ) -> None:
        # Families whose rule set ranks a lot in a Q-time window first: elsewhere the gate
        # counts the other lots waiting at a closing family as ahead.
        self.window_first = {fid: policy.window_first(rs) for fid, rs in rule_sets.items()}
        self.committed: dict[int, int] = {}  # closing family -> lots committed
        self._of: dict[int, list[tuple[int, int]]] = {}  # lot id -> (closing index, family)
        # opening family -> the closing families of the windows its steps open
        self.closing_of: dict[int, set[int]] = {}
        # closing family -> the opening families to decide again when it frees up
        self.opening_of: dict[int, set[int]] = {}
        for route in routes.values():
            for step in route.steps:
                for leg in step.snapshot.qtime_chain:
                    self.closing_of.setdefault(step.family, set()).add(leg.to_group_id)
                    self.opening_of.setdefault(leg.to_group_id, set()).add(step.family)

    def started(self, lot: SimLot, index: int) -> None:
        """``lot`` starts route index ``index``: windows it reaches (or passed) are fulfilled;
        a window this step opens commits it."""
        held = self._of.get(lot.id)
        if held:
            for reached in [c for c in held if c[0] <= index]:
                held.remove(reached)
                self.committed[reached[1]] -= 1
        step = lot.route.steps[index]
        chain, closing = step.snapshot.qtime_chain, step.qtime_to
        if chain and closing is not None:  # committed to the window this step opens
            group = chain[0].to_group_id
            self._of.setdefault(lot.id, []).append((closing, group))
            self.committed[group] = self.committed.get(group, 0) + 1

    def done(self, lot: SimLot) -> None:
        for _to, fid in self._of.pop(lot.id, ()):
            self.committed[fid] -= 1

    def downstream(
        self,
        opening: int,
        tools_of: Mapping[int, list[Tool]],
        queues: Mapping[int, Mapping[int, policy.LotSnapshot]],
        now: float,
    ) -> dict[tuple[int, int], policy.Downstream]:
        """The closing families of the windows lots of family ``opening`` may open."""
        out = {}
        for fid in self.closing_of.get(opening, ()):
            ahead = 0
            if not self.window_first.get(fid, True):
                ahead = sum(1 for snap in queues[fid].values() if snap.qtime_deadline is None)
            free = tuple(
                sorted(
                    max(0.0, tool.blocker.free_at - now) if tool.blocker is not None else 0.0
                    for tool in tools_of.get(fid, ())
                    if tool.status < BROKEN
                )
            )
            out[(FAB_ID, fid)] = policy.Downstream(self.committed.get(fid, 0), free, ahead)
        return out
