from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mes.equipment.states import E10State
from mes.errors import RuleViolation
from mes.lots import rules
from mes.lots.states import LotState, LotType


def lot(state=LotState.WAITING, holds=0, **kw) -> rules.LotView:
    values = {
        "code": "L26-0001",
        "state": state,
        "step_id": 1,
        "equipment_id": None,
        "wafer_count": 25,
        "active_holds": holds,
        "fab_id": 1,
    }
    values.update(kw)
    return rules.LotView(**values)


STEP = rules.StepView(id=1, sequence=10, tool_group_id=7, operation="ETCH", recipe_name="R1")
BATCH_STEP = rules.StepView(
    id=2, sequence=20, tool_group_id=8, operation="OX", recipe_name="FURN", batch_max=4
)
TOOL = rules.ToolView(
    id=3, code="T1", tool_group_id=7, fab_id=1, e10_state=E10State.SBY, max_lots=1
)
FURNACE = rules.ToolView(
    id=4, code="F1", tool_group_id=8, fab_id=1, e10_state=E10State.PRD, max_lots=6
)


def code_of(call) -> str:
    with pytest.raises(RuleViolation) as caught:
        call()
    return caught.value.code


def test_waiting_lot_on_a_free_tool_may_track_in():
    rules.check_track_in(lot(), STEP, TOOL, lots_on_tool=[])


@pytest.mark.parametrize(
    ("view", "code"),
    [
        (lot(LotState.ON_HOLD, holds=1), "lot.on_hold"),
        (lot(LotState.RUNNING, equipment_id=3), "lot.running"),
        (lot(LotState.IN_TRANSIT), "lot.in_transit"),
        (lot(LotState.COMPLETED), "lot.finished"),
        (lot(fab_id=2), "tool.other_fab"),
    ],
)
def test_track_in_refuses_lots_that_cannot_start(view, code):
    assert code_of(lambda: rules.check_track_in(view, STEP, TOOL, lots_on_tool=[])) == code


@pytest.mark.parametrize("state", [E10State.SDT, E10State.UDT, E10State.NST])
def test_track_in_needs_a_productive_tool(state):
    down = rules.ToolView(**{**TOOL.__dict__, "e10_state": state})
    assert code_of(lambda: rules.check_track_in(lot(), STEP, down, lots_on_tool=[])) == (
        "tool.not_available"
    )


@pytest.mark.parametrize("kind", [t for t in LotType if t != LotType.ENGINEERING])
def test_a_tool_in_eng_takes_engineering_lots_only(kind):
    eng = rules.ToolView(**{**TOOL.__dict__, "e10_state": E10State.ENG})
    assert code_of(
        lambda: rules.check_track_in(lot(lot_type=kind), STEP, eng, lots_on_tool=[])
    ) == ("tool.engineering_only")
    # The engineering lot passes here; its signed release is checked with the recipe.
    rules.check_track_in(lot(lot_type=LotType.ENGINEERING), STEP, eng, lots_on_tool=[])


def test_cluster_tool_with_every_chamber_down_is_unavailable():
    cluster = rules.ToolView(**{**TOOL.__dict__, "chambers_up": 0})
    assert code_of(lambda: rules.check_track_in(lot(), STEP, cluster, lots_on_tool=[])) == (
        "tool.no_chamber_available"
    )
    # The roll-up puts such a tool down too; the chamber code is the more specific answer.
    down = rules.ToolView(**{**TOOL.__dict__, "chambers_up": 0, "e10_state": E10State.UDT})
    assert code_of(lambda: rules.check_track_in(lot(), STEP, down, lots_on_tool=[])) == (
        "tool.no_chamber_available"
    )


def test_wrong_group_and_wrong_step_and_busy_tool():
    other = rules.StepView(id=9, sequence=30, tool_group_id=99, operation="X", recipe_name="X")
    assert code_of(lambda: rules.check_track_in(lot(), other, TOOL, lots_on_tool=[])) == (
        "tool.wrong_group"
    )
    assert (
        code_of(
            lambda: rules.check_track_in(
                lot(), STEP, TOOL, lots_on_tool=[], expected_step_sequence=20
            )
        )
        == "lot.wrong_step"
    )
    assert code_of(lambda: rules.check_track_in(lot(), STEP, TOOL, lots_on_tool=[(1, "R1")])) == (
        "tool.full"
    )


def test_batch_tool_fills_up_to_batch_max():
    same = [(2, "FURN")] * 3
    rules.check_track_in(lot(step_id=2), BATCH_STEP, FURNACE, lots_on_tool=same)
    assert (
        code_of(
            lambda: rules.check_track_in(lot(step_id=2), BATCH_STEP, FURNACE, lots_on_tool=same * 2)
        )
        == "tool.full"
    )


def test_holds_decide_between_waiting_and_on_hold():
    assert rules.state_with_holds(LotState.WAITING, 1) == LotState.ON_HOLD
    assert rules.state_with_holds(LotState.ON_HOLD, 0) == LotState.WAITING
    # A running lot finishes its step; its holds apply at track-out.
    assert rules.state_with_holds(LotState.RUNNING, 2) == LotState.RUNNING


@given(st.text(min_size=1, max_size=20), st.integers(1, 10_000), st.floats(0, 1))
def test_sampling_is_deterministic_and_respects_the_extremes(code, sequence, rate):
    first = rules.sampled_in(code, sequence, rate)
    assert first == rules.sampled_in(code, sequence, rate)
    assert rules.sampled_in(code, sequence, 1.0)
    assert not rules.sampled_in(code, sequence, 0.0)


def test_sampling_rate_is_met_over_many_lots():
    hits = sum(rules.sampled_in(f"L26-{n:04d}", 40, 0.3) for n in range(4000))
    assert 0.27 < hits / 4000 < 0.33


def test_next_step_skips_sampled_out_steps():
    steps = [
        rules.StepView(
            id=i, sequence=i * 10, tool_group_id=1, operation="OP", recipe_name="R", sampling_rate=r
        )
        for i, r in [(1, 1.0), (2, 0.0), (3, 0.0), (4, 1.0)]
    ]
    following, skipped = rules.next_step(steps, 10, "L26-0001")
    assert following is not None
    assert following.sequence == 40
    assert [s.sequence for s in skipped] == [20, 30]
    assert rules.next_step(steps, 40, "L26-0001") == (None, [])


def test_rework_counts_up_to_the_limit_then_holds():
    step = rules.StepView(
        id=5,
        sequence=50,
        tool_group_id=1,
        operation="OP",
        recipe_name="R",
        rework_to_sequence=40,
        rework_limit=2,
    )
    assert rules.rework(step, 0) == rules.ReworkDecision(40, 1)
    assert rules.rework(step, 1) == rules.ReworkDecision(40, 2)
    assert rules.rework(step, 2) == rules.ReworkDecision(None, 3)
    assert code_of(lambda: rules.rework(STEP, 0)) == "lot.no_rework_step"


def test_split_and_merge_rules():
    assert code_of(lambda: rules.check_split(lot(), 25, 25)) == "lot.split_all"
    assert code_of(lambda: rules.check_split(lot(LotState.RUNNING), 1, 25)) == (
        "lot.not_splittable"
    )
    rules.check_split(lot(LotState.ON_HOLD, holds=1), 3, 25)
    a = rules.MergeView(lot(wafer_count=10), product_id=1, route_version_id=1)
    b = rules.MergeView(lot(code="L26-0002", wafer_count=10), product_id=1, route_version_id=1)
    rules.check_merge(a, b)
    moved = rules.MergeView(lot(code="L26-0003", step_id=2), product_id=1, route_version_id=1)
    assert code_of(lambda: rules.check_merge(a, moved)) == "lot.merge_mismatch"
    big = rules.MergeView(lot(code="L26-0004", wafer_count=16), product_id=1, route_version_id=1)
    assert code_of(lambda: rules.check_merge(a, big)) == "lot.too_many_wafers"


def test_free_slots_fill_the_lowest_gaps():
    assert rules.free_slots({1, 2, 4}, 3) == [3, 5, 6]
    assert code_of(lambda: rules.free_slots(set(range(1, 25)), 2)) == "lot.too_many_wafers"


def test_ship_preconditions():
    now = datetime(2026, 1, 5, 8, tzinfo=UTC)
    ok = {"open_future_actions": 0, "open_qtime_deadlines": [], "now": now, "transit_s": 3600}
    rules.check_ship(lot(), 2, **ok)
    assert code_of(lambda: rules.check_ship(lot(), 1, **ok)) == "lot.same_fab"
    assert code_of(lambda: rules.check_ship(lot(LotState.ON_HOLD, 1), 2, **ok)) == "lot.on_hold"
    assert (
        code_of(lambda: rules.check_ship(lot(), 2, **{**ok, "open_future_actions": 1}))
        == "lot.future_action_open"
    )
    soon = [now + timedelta(minutes=30)]
    assert (
        code_of(lambda: rules.check_ship(lot(), 2, **{**ok, "open_qtime_deadlines": soon}))
        == "lot.qtime_at_risk"
    )


def test_fold_replays_history_and_catches_a_gap():
    start = {
        "state": "Waiting",
        "step_id": 1,
        "equipment_id": None,
        "wafer_count": 5,
        "fab_id": 1,
        "priority_class": "normal",
        "active_holds": 0,
    }
    running = {**start, "state": "Running", "equipment_id": 3}
    out = {**start, "step_id": 2}
    assert rules.fold([(None, start), (start, running), (running, out)]) == out
    with pytest.raises(ValueError, match="event 2"):
        rules.fold([(None, start), (start, running), (start, out)])


def test_codes():
    assert rules.lot_code(2026, 7) == "L26-0007"
    assert rules.child_code("L26-0007", 1) == "L26-0007.01"
    assert rules.scribe_id("L26-0007", 3) == "L26-0007-W03"


def test_a_runs_wafer_outcomes_add_up_to_the_lots_wafers() -> None:
    assert rules.wafer_outcomes(5, 5, ()) == {"Processed": 5}
    tool = rules.wafer_outcomes(2, 5, (("W3", "Aborted"), ("W4", "Skipped"), ("W5", "Skipped")))
    assert tool == {"Processed": 2, "Aborted": 1, "Skipped": 2}
    assert rules.wafer_outcomes(3, 5, ()) == {"Processed": 3, "not reported": 2}  # by hand
    assert sum(rules.wafer_outcomes(1, 4, (("W2", "Aborted"),)).values()) == 4


def test_a_window_can_end_only_at_a_step_its_route_names():
    def step(id_: int, seq: int, to: int | None = None, max_s: float | None = None):
        return rules.StepView(
            id=id_,
            sequence=seq,
            tool_group_id=7,
            operation="X",
            recipe_name="R",
            qtime_to_sequence=to,
            qtime_max_s=max_s,
        )

    opens, plain, closes, after = step(1, 10, 30, 3600.0), step(2, 20), step(3, 30), step(4, 40)
    steps = (opens, plain, closes, after)
    assert rules.opens_qtime_window(opens)
    assert not rules.opens_qtime_window(plain)
    assert rules.closes_qtime_window(steps, closes)
    assert not any(rules.closes_qtime_window(steps, s) for s in (opens, plain, after))
    # A step naming a closing step but without a maximum opens no window.
    assert not rules.closes_qtime_window((step(1, 10, 30), closes), closes)
