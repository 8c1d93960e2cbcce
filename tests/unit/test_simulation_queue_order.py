"""The simulator keeps each family's queue in (queued_at, code) order, so a FIFO decision reads
it from the head (``policy.InQueueOrder``): the promise is held here, at every decision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

import pytest

from mes.dispatch import policy, what_next
from mes.dispatch.ranking_rules import Candidate
from mes.simulation import engine, model, rulesets, runner
from mes.simulation.state import BROKEN, MAINT, join_queue

STEP = policy.StepSnapshot(1, 10, 7, "OP", "R")


def lot(lot_id: int, code: str, queued_at: float) -> policy.LotSnapshot:
    return policy.LotSnapshot(lot_id, code, 1, policy.WAITING, 0, "normal", 25, STEP, queued_at)


def codes(queue: dict[int, policy.LotSnapshot]) -> list[str]:
    return [snap.code for snap in queue.values()]


def test_a_lot_joins_at_the_tail_or_in_its_place_by_arrival_then_code() -> None:
    queue: dict[int, policy.LotSnapshot] = {}
    for snap in (lot(1, "L05", 10.0), lot(2, "L07", 20.0), lot(3, "L02", 30.0)):
        join_queue(queue, snap)
    assert codes(queue) == ["L05", "L07", "L02"]  # later arrivals at the tail, whatever code
    join_queue(queue, lot(4, "L01", 30.0))  # same instant as L02, lower code: before it
    assert codes(queue) == ["L05", "L07", "L01", "L02"]
    join_queue(queue, lot(5, "L09", 15.0))  # came earlier (a what-if lot's own arrival)
    assert codes(queue) == ["L05", "L09", "L07", "L01", "L02"]
    join_queue(queue, lot(6, "L03", 30.0))  # between the two of its instant
    assert codes(queue) == ["L05", "L09", "L07", "L01", "L02", "L03"]
    assert list(queue) == [1, 5, 2, 4, 3, 6]  # keyed by lot id, as the engine reads them


def in_order(lots: Iterable[policy.LotSnapshot]) -> bool:
    keys = [(snap.queued_at, snap.code) for snap in lots]
    return keys == sorted(keys)


@pytest.mark.parametrize("rules", ["fifo", "testbed"])
def test_every_decision_is_offered_its_lots_in_queue_order(
    rules: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20 days of the example fab: lots that arrive at one instant out of code order (a batch
    # ending, the initial WIP) must still reach the policy in order, in the family queue and in
    # each per-setup queue alike.
    sim = engine.Simulation(model.load(runner.EXAMPLE), rulesets.resolve(rules), seed=2, days=20)
    decide, seen = policy.decide, Counter[str]()

    def checking_decide(
        tool: policy.ToolSnapshot,
        lots: Iterable[policy.LotSnapshot],
        situation: policy.Situation,
        rule_set: policy.RuleSet,
        **kw: bool,
    ) -> policy.Starts:
        assert isinstance(lots, policy.InQueueOrder)
        assert in_order(lots)
        fid = tool.tool_group_id
        assert in_order(sim.queues[fid].values())
        assert all(in_order(q.values()) for q in sim.setup_queues.get(fid, {}).values())
        seen["decisions"] += 1
        return decide(tool, lots, situation, rule_set, **kw)

    joining = join_queue

    def counting_join(queue: dict[int, policy.LotSnapshot], snap: policy.LotSnapshot) -> None:
        tail = max(((s.queued_at, s.code) for s in queue.values()), default=None)
        if tail is not None and (snap.queued_at, snap.code) < tail:
            seen["out of order"] += 1
        joining(queue, snap)

    monkeypatch.setattr(policy, "decide", checking_decide)
    monkeypatch.setattr("mes.simulation.engine.join_queue", counting_join)
    sim.run()
    assert seen["decisions"] > 1000, seen
    assert seen["out of order"] > 0, seen  # the case the order is kept for did come up


def test_a_tools_snapshot_is_taken_again_only_while_the_policy_would_see_the_same() -> None:
    # The simulator keeps one snapshot per tool state and counts the lots since a setup change
    # up to the setup's minimum run only: at every decision of 20 days of the example fab (gas
    # implanters with minimum runs of 3, setup_aware ranking by setup) the snapshot the policy
    # gets must equal one built afresh from the tool, and every rule must value every offered
    # lot as with the full count.
    sim = engine.Simulation(
        model.load(runner.EXAMPLE), rulesets.resolve("setup_aware"), seed=2, days=20
    )
    tools = {tool.id: tool for tool in sim.tools}
    decide, seen = policy.decide, Counter[str]()

    def checking_decide(
        snap: policy.ToolSnapshot,
        lots: Iterable[policy.LotSnapshot],
        situation: policy.Situation,
        rule_set: policy.RuleSet,
        **kw: bool,
    ) -> policy.Starts:
        tool = tools[snap.id]
        down = tool.status in (BROKEN, MAINT)
        fresh = policy.ToolSnapshot(
            id=tool.id,
            code=tool.code,
            fab_id=snap.fab_id,
            tool_group_id=tool.family.id,
            e10_state="UDT" if down else ("PRD" if tool.jobs else "SBY"),
            max_lots=tool.family.max_lots,
            pm_due=tool.pm_due,
            qualified=tool.family.recipes,
            current_setup=tool.setup,
            lots_since_setup=tool.since_setup,
        )
        assert replace(fresh, lots_since_setup=snap.lots_since_setup) == snap
        if snap.lots_since_setup != tool.since_setup:
            seen["count stopped at the minimum run"] += 1
            for lot in lots:
                assert what_next.values_of(
                    Candidate(lot, snap), situation, rule_set
                ) == what_next.values_of(Candidate(lot, fresh), situation, rule_set)
                seen["lots valued"] += 1
        seen["decisions"] += 1
        if snap is not previous.get(snap.id) and any(snap is s for s in earlier.get(snap.id, ())):
            seen["taken again after a change"] += 1  # built for a state the tool was in before
        previous[snap.id] = snap
        if not any(snap is s for s in earlier.setdefault(snap.id, [])):
            earlier[snap.id].append(snap)
        return decide(snap, lots, situation, rule_set, **kw)

    previous: dict[int, policy.ToolSnapshot] = {}
    earlier: dict[int, list[policy.ToolSnapshot]] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(policy, "decide", checking_decide)
        sim.run()
    assert seen["decisions"] > 1000, seen
    assert seen["lots valued"] > 100, seen  # counts past a minimum run did come up
    assert seen["taken again after a change"] > 100, seen
