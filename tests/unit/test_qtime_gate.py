"""The Q-time gate on cases worked out by hand (the numbers are in the comments), and the
dispatch policy applying it: excluded with its explanation, batches trimmed, commitments
counted within one cycle."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mes.dispatch import policy as p
from mes.lots.qtime_gate_rules import Chain, Downstream, RouteStep, chain_from, gate, gate_chain

H = 3600.0
NOW = 1_000_000.0


def chain(**kw: float) -> Chain:
    values: dict[str, float] = {
        "max_s": 2 * H,
        "lead_s": 0.5 * H,
        "between_s": 0.0,
        "to_sequence": 20,
        "to_group_id": 8,
        "to_process_s": 1 * H,
        "to_batch": 1,
    }
    values.update(kw)
    return Chain(**values)  # type: ignore[arg-type]


def test_case_1_an_idle_tool_and_nothing_committed_fits() -> None:
    # The lot runs the opening step 0.5 h, then arrives at the idle closing tool: start 0.5 h.
    # Its window closes 0.5 + 2 = 2.5 h from now. 0.5 <= 2.5: it may start.
    verdict = gate(chain(), Downstream(committed=0, free_in_s=(0.0,)))
    assert verdict.ok
    assert (verdict.start_in_s, verdict.deadline_in_s) == (0.5 * H, 2.5 * H)


def test_case_2_two_tools_five_committed_fit_exactly_six_do_not() -> None:
    # Two tools, free in 0 h and 0.5 h; runs of 1 h, one lot each. Five committed lots go
    # first, each on the tool free first:
    #   lot 1: 0 → 1      (tools now free at 0.5, 1)
    #   lot 2: 0.5 → 1.5  (1, 1.5)
    #   lot 3: 1 → 2      (1.5, 2)
    #   lot 4: 1.5 → 2.5  (2, 2.5)
    #   lot 5: 2 → 3      (2.5, 3)
    # Ours starts at 2.5 h = its deadline (0.5 + 2): it fits, just.
    five = gate(chain(), Downstream(committed=5, free_in_s=(0.5 * H, 0.0)))
    assert five.ok
    assert five.start_in_s == 2.5 * H
    # A sixth committed lot takes 2.5 → 3.5; ours would start at 3 h > 2.5 h: refused.
    six = gate(chain(), Downstream(committed=6, free_in_s=(0.0, 0.5 * H)))
    assert not six.ok
    assert six.start_in_s == 3 * H
    assert "6 lots committed, 2 tools up" in six.why
    assert "would miss it" in six.why


def test_case_3_a_batch_furnace_downstream() -> None:
    # Clean (1 h) → 0.5 h of steps inside the window → furnace; window 6 h, so the deadline is
    # 1 + 6 = 7 h from now and the lot arrives at 1 + 0.5 = 1.5 h. One furnace, busy for 1 h
    # more, runs of 4 h taking 4 lots.
    furnace = chain(max_s=6 * H, lead_s=1 * H, between_s=0.5 * H, to_process_s=4 * H, to_batch=4)
    # 6 committed: one full run before ours (6 // 4 = 1), 1 → 5 h; ours joins the next run at
    # 5 h (lots 5, 6 and ours share it) <= 7 h: fits.
    six = gate(furnace, Downstream(committed=6, free_in_s=(1 * H,)))
    assert six.ok
    assert six.start_in_s == 5 * H
    # 8 committed: two full runs first, 1 → 5 → 9 h; ours at 9 h > 7 h: refused.
    eight = gate(furnace, Downstream(committed=8, free_in_s=(1 * H,)))
    assert not eight.ok
    assert eight.start_in_s == 9 * H


def test_case_4_no_tool_up_refuses_and_an_impossible_window_is_not_gated() -> None:
    # Nothing up downstream: however long the window, the lot could only wait in it.
    down = gate(chain(), Downstream(committed=0, free_in_s=()))
    assert not down.ok
    assert "no tool" in down.why
    # The steps inside the window take 3 h, the window is 2 h: every lot misses it whatever
    # the load, so gating would only stop the line; it says so and lets the lot go.
    impossible = gate(chain(between_s=3 * H), Downstream(committed=50, free_in_s=()))
    assert impossible.ok
    assert "not gated" in impossible.why


def test_the_minimum_qtime_delays_the_arrival() -> None:
    # Arrival = lead 0.5 h + max(between 0, minimum 1.5 h) = 2 h <= deadline 2.5 h: fits; with
    # one committed lot on the one tool (0 → 1 h) the tool is free before the lot arrives.
    verdict = gate(chain(min_s=1.5 * H), Downstream(committed=1, free_in_s=(0.0,)))
    assert verdict.ok
    assert verdict.start_in_s == 2 * H


# --- in the dispatch policy ------------------------------------------------------------------

CHAIN = chain()
OPENING = p.StepSnapshot(
    id=1,
    sequence=10,
    tool_group_id=7,
    operation="CLEAN",
    recipe="R1",
    process_time_s=0.5 * H,
    qtime_chain=(CHAIN,),
)
TOOL = p.ToolSnapshot(
    id=100, code="CL01", fab_id=1, tool_group_id=7, e10_state="SBY", qualified=frozenset({"R1"})
)


def lot(n: int, step: p.StepSnapshot = OPENING) -> p.LotSnapshot:
    return p.LotSnapshot(
        id=n,
        code=f"L{n}",
        fab_id=1,
        state="Waiting",
        holds=0,
        priority="normal",
        wafer_count=25,
        step=step,
        queued_at=NOW - n,
    )


def situation(committed: int, tools: tuple[float, ...] = (0.0,)) -> p.Situation:
    return p.Situation(now=NOW, downstream={(1, 8): Downstream(committed, tools)})


def test_the_policy_excludes_a_gated_lot_with_the_gates_words() -> None:
    # One tool downstream, 1 h a lot; 2 committed: ours would start at 2 h <= 2.5 h (fits);
    # 3 committed: at 3 h > 2.5 h (gated).
    assert [r.lot.code for r in p.rank_lots(TOOL, [lot(1)], situation(2)).ranked] == ["L1"]
    listing = p.rank_lots(TOOL, [lot(1)], situation(3))
    assert listing.ranked == ()
    (excluded,) = listing.excluded
    (reason,) = excluded.reasons
    assert reason.code == "lot.qtime_gated"
    assert "3 lots committed, 1 tools up" in reason.detail
    assert "start there in 3.00 h, window closes in 2.50 h" in reason.detail


def test_a_lot_inside_a_chain_is_not_gated_again() -> None:
    # The lot's window from the step before closes here (it is committed since the chain's
    # first step): holding it back at this opening step could only make it miss that window.
    inside = replace(lot(1), qtime_deadline=NOW + 0.5 * H)
    assert [r.lot.code for r in p.rank_lots(TOOL, [inside], situation(3)).ranked] == ["L1"]


def test_without_downstream_data_nothing_is_gated() -> None:
    # Gating off (the simulator's switch) or a window closing at a group nobody read.
    assert len(p.rank_lots(TOOL, [lot(1)], p.Situation(now=NOW)).ranked) == 1


def test_starts_in_one_cycle_count_for_the_next_decisions() -> None:
    sit = situation(2)
    first = p.choose_starts(p.rank_lots(TOOL, [lot(1), lot(2)], sit), sit)
    assert [r.lot.code for r in first.lots] == ["L2"]  # the longest waiting
    after = p.with_committed(sit, [r.lot for r in first.lots])
    assert after.downstream[(1, 8)].committed == 3
    # The next tool of the cycle: L1 would now start at 3 h: gated.
    second = p.rank_lots(TOOL, [lot(1)], after)
    assert [e.reasons[0].code for e in second.excluded] == ["lot.qtime_gated"]
    # A lot at a step opening no window is not counted.
    plain = p.StepSnapshot(id=2, sequence=30, tool_group_id=7, operation="X", recipe="R1")
    assert p.with_committed(sit, [lot(3, plain)]) is sit


@pytest.mark.parametrize(("committed", "expected"), [(0, 3), (1, 2), (2, 1), (5, 0)])
def test_a_batch_takes_only_the_lots_the_gate_lets_in(committed: int, expected: int) -> None:
    # A wet bench of 4 lots opening a 2 h window to one 1-h tool downstream: the k-th lot of
    # the batch (0-based) starts there at (committed + k) h and must by 2.5 h, so the batch
    # holds the lots with committed + k <= 2: 3, 2, 1 lots for 0, 1, 2 committed (the top lot
    # itself passed the gate at rank time); with 5 committed even the top lot is excluded.
    bench = p.StepSnapshot(
        id=1,
        sequence=10,
        tool_group_id=7,
        operation="CLEAN",
        recipe="R1",
        process_time_s=0.5 * H,
        batch_min=1,
        batch_max=4,
        qtime_chain=(CHAIN,),
    )
    tool = p.ToolSnapshot(
        id=100,
        code="WB01",
        fab_id=1,
        tool_group_id=7,
        e10_state="SBY",
        qualified=frozenset({"R1"}),
        max_lots=4,
    )
    sit = situation(committed)
    listing = p.rank_lots(tool, [lot(n, bench) for n in range(1, 5)], sit)
    assert len(p.choose_starts(listing, sit).lots) == expected


def test_lots_queued_ahead_count_where_window_lots_do_not_go_first() -> None:
    # A FIFO closing group: 1 committed and 2 other lots already waiting there are all served
    # before ours on the one 1-hour tool: 0 → 1 → 2 → 3 h; ours at 3 h > its deadline 2.5 h.
    # The same group ranking window lots first (queued 0) would start it at 1 h.
    fifo = gate(chain(), Downstream(committed=1, free_in_s=(0.0,), queued=2))
    assert not fifo.ok
    assert fifo.start_in_s == 3 * H
    assert "1 lots committed and 2 queued ahead" in fifo.why
    assert gate(chain(), Downstream(committed=1, free_in_s=(0.0,))).start_in_s == 1 * H
    assert p.window_first(p.DEFAULT_RULE_SET)
    assert not p.window_first(p.RuleSet((p.DEFAULT_RULE_SET.rules[-1],), "fifo"))


def test_a_chain_is_gated_on_its_every_window() -> None:
    # Route: 10 clean (0.5 h) -2 h-> 20 etch (1 h, group 8) -2 h-> 30 dep (1 h, group 9).
    route = [
        RouteStep(10, 7, 0.5 * H, qtime_to_sequence=20, qtime_max_s=2 * H),
        RouteStep(20, 8, 1 * H, qtime_to_sequence=30, qtime_max_s=2 * H),
        RouteStep(30, 9, 1 * H),
    ]
    first, second = chain_from(route, 0)
    # The second window opens when the etch ends: 0.5 + 1 = 1.5 h from the start, if nothing
    # waits; it closes 2 h later, at 3.5 h.
    assert (first.lead_s, first.to_group_id) == (0.5 * H, 8)
    assert (second.lead_s, second.max_s, second.to_group_id) == (1.5 * H, 2 * H, 9)
    assert chain_from(route, 1) == (replace(second, lead_s=1 * H),)  # started at the etch
    assert chain_from(route, 2) == ()
    # Etch idle, nothing committed: the first window is met (start at 0.5 h <= 2.5 h). The dep
    # group has one tool and 3 lots committed: 0 → 1 → 2 → 3 h, ours at 3 h <= 3.5 h: fits;
    # with 4 committed at 4 h > 3.5 h: the start at the clean is refused for the second window.
    idle = Downstream(0, (0.0,))
    fits = gate_chain((first, second), {8: idle, 9: Downstream(3, (0.0,))})
    assert fits is not None
    assert fits.ok
    late = gate_chain((first, second), {8: idle, 9: Downstream(4, (0.0,))})
    assert late is not None
    assert not late.ok
    assert "to step 30" in late.why
    assert late.start_in_s == 4 * H
    assert gate_chain((first, second), {}) is None  # nothing read: not gated


def test_the_simulator_gates_with_the_switch_on_and_keeps_its_commitments(tmp_path) -> None:
    # A clean (10 min) opens a 30-min window to a deposition (one tool, 60 min a lot); six lots
    # wait at the clean. Without the gate the clean runs all six in an hour and the later lots
    # wait hours for the deposition: windows violated. With the gate the clean holds lots back
    # until the deposition can take them in time: starts refused, fewer violations, and every
    # commitment it counts belongs to a lot still in the fab. (The example fab with tightened
    # windows, used before, gated only by chance: 0 refusals after the minimum-run change.)
    from mes.simulation import model
    from mes.simulation.engine import Simulation
    from mes.simulation.rulesets import resolve
    from tests.unit import smt2020_writer as w

    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Clean"), w.family("Dep")],
        steps=[
            w.step(1, "Clean", 10, STEP_CQT=2, CQT=30, CQTUNITS="min"),
            w.step(2, "Dep", 60),
        ],
        wip_lots=[w.wip(f"Init_Lot_1_{n}", 1) for n in range(1, 7)],
    )
    fab = model.load(folder)
    off = Simulation(fab, resolve("fifo"), seed=1, days=1).run()
    on = Simulation(fab, resolve("fifo"), seed=1, days=1, qtime_gating=True).run()
    assert off.counters.qtime_gated == 0
    assert off.counters.qtime_violated >= 4
    assert on.counters.qtime_gated > 0
    assert on.counters.qtime_violated < off.counters.qtime_violated
    assert len(on.completed) == len(off.completed) == 6
    assert all(n >= 0 for n in on.commitments.committed.values())
    assert sum(on.commitments.committed.values()) <= len(on.lots)
