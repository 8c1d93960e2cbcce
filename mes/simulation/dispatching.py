"""Dispatching in the simulator: when a family's queue or tools change, every free tool of the
family gets what ``policy.decide`` says it starts (``choose_starts(rank_lots(...))`` of the
production dispatcher), once every event of the instant is in, as one dispatch cycle does it.
A batch worth waiting for is decided on again when its wait reaches the batch rule's limit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import mes.dispatch.policy as policy
from mes.simulation.state import BROKEN, IDLE, WAKE, Tool

if TYPE_CHECKING:
    from mes.simulation.engine import Simulation


_NONE: Mapping[Any, Any] = MappingProxyType({})


class Dispatching:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.dirty: set[int] = set()  # families to decide for before time moves on
        self._wake_at: dict[int, float] = {}
        self._situation: policy.Situation | None = None
        families = sim.model.families
        self.rule_sets = {f.id: sim.rules.for_family(f) for f in families}
        self._max_wait = {
            fid: next((r.params["max_wait_s"] for r in rs.rules if r.name == "batch"), math.inf)
            for fid, rs in self.rule_sets.items()
        }
        sim.handlers[WAKE] = self._on_wake
        # Minimum runs (setupgrp.txt) are the tools': families with a step whose setup has one.
        self._min_run = sim.model.min_run
        self._min_run_families = {
            step.family
            for route in sim.model.routes.values()
            for step in route.steps
            if step.setup is not None and self._min_run.get(step.setup, 0) > 1
        }
        # The longest change into each setup: how long a tool in a minimum run waits for it.
        self._return_s: dict[str, float] = {}
        for (_from, to), seconds in sim.model.setup_times.items():
            self._return_s[to] = max(self._return_s.get(to, 0.0), seconds)
        self._families_with_setup_free_steps = {
            step.family
            for route in sim.model.routes.values()
            for step in route.steps
            if step.setup is None
        }
        self._setup_families = sim.setup_queues.keys()  # a step of theirs needs a setup

    def situation(self, fid: int | None = None) -> policy.Situation:
        """One per instant: ``loads`` is the live mapping, the rest does not change. With Q-time
        gating, a decision for family ``fid`` sees the closing families of the windows its lots
        may open, read afresh (a start commits lots and takes a tool)."""
        sim = self.sim
        if sim.qtime_gating and fid is not None:
            return policy.Situation(
                now=sim.now,
                loads=sim.loads,
                setup_times=sim.model.setup_times,
                min_run=sim.model.min_run,
                downstream=sim.commitments.downstream(fid, sim.tools_of, sim.queues, sim.now),
            )
        sit = self._situation
        if sit is None or sit.now != sim.now:
            sit = self._situation = policy.Situation(
                now=sim.now,
                loads=sim.loads,
                setup_times=sim.model.setup_times,
                min_run=sim.model.min_run,
                transfer_s=_NONE,  # not two new empty dicts per instant
                downstream=_NONE,
            )
        return sit

    def cycle(self) -> None:
        while self.dirty:
            dirty, self.dirty = sorted(self.dirty), set()
            for fid in dirty:
                self._decide(fid)

    def _decide(self, fid: int) -> None:
        """What-next for every free tool of the family, as one dispatch cycle does it."""
        sim = self.sim
        queue = sim.queues[fid]
        if not queue:
            return
        tools = sim.tools_of.get(fid)
        if not tools:
            return
        rule_set = self.rule_sets[fid]
        situation: policy.Situation | None = None
        waiting = False
        counters, decide, tool_exclusion = sim.counters, policy.decide, policy.tool_exclusion
        if fid in self._setup_families and len(tools) > 1:
            free = [t for t in tools if t.blocker is None and t.status < BROKEN and not t.pm_due]
            if len(free) > 1:
                tools = self._set_up_first(free, queue)
        for tool in tools:
            if tool.blocker is not None or tool.status >= BROKEN or tool.pm_due:
                continue
            snap = tool.snapshot()
            if tool_exclusion(snap) is not None:
                continue
            if situation is None:
                situation = self.situation(fid)
            if situation.downstream:
                counters.qtime_gated += sum(
                    1 for lot in queue.values() if policy.gate_exclusion(lot, situation) is not None
                )
            run = self._within_min_run(tool, queue) if fid in self._min_run_families else None
            if run is not None and not run:
                continue  # waits for a lot of its minimum run: nothing to decide on
            offered = policy.InQueueOrder(queue.values() if run is None else run)
            starts = decide(snap, offered, situation, rule_set)
            if (
                run is not None
                and not starts.lots
                and starts.waiting is None
                and any(lot.step.setup == tool.setup for lot in run)
            ):
                # Lots of the run wait but none may start here (dedicated elsewhere, held
                # back): the minimum run does not keep the tool idle, every lot is offered.
                starts = decide(snap, policy.InQueueOrder(queue.values()), situation, rule_set)
            counters.decisions += 1
            if starts.lots:
                sim.start_job(tool, [sim.lots[r.lot.id] for r in starts.lots])
                if situation.downstream:
                    situation = None  # the start committed lots and took a tool: read again
                if not queue:
                    break
            elif starts.waiting is not None:
                waiting = True
        if waiting:
            self._wake_for_batches(fid)

    @staticmethod
    def _set_up_first(tools: list[Tool], queue: Mapping[int, policy.LotSnapshot]) -> list[Tool]:
        """The free tools whose setup a waiting lot wants decide first (the testbed's
        ``wake_LeastSetupTime``: a lot wakes the idle tool with the least setup for it), so a
        lot is not taken with a change by the first tool of the list while another free tool
        is already set up for it. Otherwise the list order."""
        wanted = {lot.step.setup for lot in queue.values()}
        return sorted(tools, key=lambda tool: tool.setup is None or tool.setup not in wanted)

    def _within_min_run(
        self, tool: Tool, queue: Mapping[int, policy.LotSnapshot]
    ) -> list[policy.LotSnapshot] | None:
        """The testbed's minimum run (``setupgrp.txt`` ``MINRUN``) is a property of the tool, not
        of a rule set: after a change to setup S the tool runs at least MINRUN lots of S before
        it changes again. So below the minimum only the lots of S (and lots that need no setup)
        are offered to the policy, whatever it ranks, and with no lot of S waiting the tool
        waits for one for a while (None: no restriction, every lot is offered)."""
        current = tool.setup
        if current is None or tool.since_setup >= self._min_run.get(current, 0):
            return None
        fid = tool.family.id
        of_setup = self.sim.setup_queues[fid].get(current)
        if of_setup:
            if fid in self._families_with_setup_free_steps:
                return [lot for lot in queue.values() if lot.step.setup in (None, current)]
            # The same lots in the same order as the queue (both kept in queue order), no scan.
            return list(of_setup.values())
        # No lot of S waits: the tool waits for the next one, but no longer than changing back
        # to S would take (idling longer would cost more than the change it saves), so a run
        # whose lots do not come back does not hold the tool for ever. Read strictly ("run at
        # least MINRUN lots before changing again") the gas implanters' setup shares come out
        # near the reference's (docs/simulation.md, the minimum run).
        now = self.sim.now
        idle_since = tool.since if tool.status == IDLE and not tool.jobs else now
        until = idle_since + self._return_s.get(current, 0.0)
        if now >= until:
            return None
        self._wake(fid, until)
        if fid not in self._families_with_setup_free_steps:
            return []
        return [lot for lot in queue.values() if lot.step.setup is None]

    def _wake_for_batches(self, fid: int) -> None:
        """A batch below its minimum waits at most the batch rule's ``max_wait_s``: decide again
        when the next waiting batch (per step) reaches it."""
        limit = self._max_wait[fid]
        if math.isinf(limit):
            return
        now = self.sim.now
        oldest: dict[int, float] = {}
        for snap in self.sim.queues[fid].values():
            if snap.step.batch_max is not None:
                step = snap.step.id
                oldest[step] = min(oldest.get(step, math.inf), snap.queued_at)
        later = [t + limit for t in oldest.values() if t + limit > now]
        if not later:
            return
        at = min(later)
        self._wake(fid, at)

    def _wake(self, fid: int, at: float) -> None:
        """Decide for the family again at ``at`` (one wake per family: the earliest)."""
        if self._wake_at.get(fid, math.inf) > at:
            self._wake_at[fid] = at
            self.sim.schedule(at, WAKE, fid)

    def _on_wake(self, fid: object, _b: object) -> None:
        assert isinstance(fid, int)
        if self._wake_at.get(fid) == self.sim.now:
            del self._wake_at[fid]
        self.dirty.add(fid)
