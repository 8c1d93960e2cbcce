"""The simulator keeps each family's queue in (queued_at, code) order, so a FIFO decision reads
it from the head (``policy.InQueueOrder``): the promise is held here, at every decision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pytest

from mes.dispatch import policy
from mes.simulation import engine, model, rulesets, runner
from mes.simulation.state import join_queue

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
