"""Lot-type rules (mes.lots.type_rules) and the dispatch policy's lot-type weight and batches
across steps, on hand-built cases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mes.dispatch import policy as p
from mes.errors import RuleViolation
from mes.lots import type_rules as t
from mes.lots.states import LotType

ENGINEER = t.Release("erin", signer_is_engineer=True)
OPERATOR = t.Release("otto", signer_is_engineer=False)


def code_of(call) -> str:
    with pytest.raises(RuleViolation) as caught:
        call()
    return caught.value.code


def test_only_monitor_and_dummy_lots_are_no_output() -> None:
    assert [k for k in LotType if not t.counts_in_output(k)] == [LotType.MONITOR, LotType.DUMMY]
    assert set(t.OUTPUT_TYPES) == {LotType.PRODUCTION, LotType.ENGINEERING, LotType.REWORK}


@pytest.mark.parametrize(("eng_tool", "unreleased"), [(True, False), (False, True), (True, True)])
def test_an_engineering_exception_needs_an_engineers_signature(eng_tool, unreleased) -> None:
    def run(release):
        return t.check_engineering_run(
            "L1",
            LotType.ENGINEERING,
            eng_tool=eng_tool,
            unreleased_recipe=unreleased,
            release=release,
        )

    assert code_of(lambda: run(None)) == "lot.engineering_signature_required"
    with pytest.raises(RuleViolation) as caught:
        run(OPERATOR)
    assert (caught.value.code, caught.value.status) == ("lot.signer_not_engineer", 403)
    assert run(ENGINEER) is True


@pytest.mark.parametrize("kind", [k for k in LotType if k != LotType.ENGINEERING])
def test_other_lots_never_take_the_engineering_path(kind) -> None:
    for eng_tool, unreleased in ((True, False), (False, True)):
        for release in (None, ENGINEER):
            assert (
                code_of(
                    lambda eng_tool=eng_tool, unreleased=unreleased, release=release: (
                        t.check_engineering_run(
                            "L1",
                            kind,
                            eng_tool=eng_tool,
                            unreleased_recipe=unreleased,
                            release=release,
                        )
                    )
                )
                == "lot.not_engineering"
            )
    # An ordinary run needs nothing, but a release sent with it is refused all the same.
    assert (
        t.check_engineering_run("L1", kind, eng_tool=False, unreleased_recipe=False, release=None)
        is False
    )
    assert code_of(lambda: t.check_release_allowed("L1", kind, ENGINEER)) == "lot.not_engineering"
    assert code_of(lambda: t.check_eng_tool("L1", kind, "T1")) == "tool.engineering_only"


def test_an_ordinary_engineering_run_is_no_exception() -> None:
    assert not t.check_engineering_run(
        "L1", LotType.ENGINEERING, eng_tool=False, unreleased_recipe=False, release=ENGINEER
    )
    t.check_eng_tool("L1", LotType.ENGINEERING, "T1")


def member(code: str, step: int = 1, **kw: object) -> t.BatchMember:
    values: dict[str, object] = {
        "lot_code": code,
        "step_id": step,
        "batch_max": 6,
        "setup": None,
        "recipe": ("FUOX_PADOX", 1),
    }
    values.update(kw)
    return t.BatchMember(**values)  # type: ignore[arg-type]


def join(members, **kw: object) -> None:
    values: dict[str, object] = {
        "step_id": 1,
        "batch_max": 6,
        "setup": None,
        "recipe": ("FUOX_PADOX", 1),
        "tool_code": "FU1",
        "tool_max_lots": 6,
    }
    values.update(kw)
    t.check_batch_join(members=members, **values)  # type: ignore[arg-type]


def test_lots_of_other_steps_join_a_batch_on_the_same_recipe_version() -> None:
    join([member("A", step=1), member("B", step=9)])  # another product's step: joins
    assert code_of(lambda: join([member("A", recipe=("FUOX_PADOX", 2))])) == "tool.batch_mismatch"
    assert code_of(lambda: join([member("A", recipe=("FUOX_GATEOX", 1))])) == "tool.batch_mismatch"
    assert code_of(lambda: join([member("A", recipe=None)])) == "tool.batch_mismatch"
    assert code_of(lambda: join([member("A", batch_max=None)])) == "tool.batch_mismatch"
    # Another step needing another setup does not run under this batch; the same step does.
    assert code_of(lambda: join([member("A", step=9, setup="DRY")])) == "tool.batch_mismatch"
    join([member("A", setup="DRY")], setup="DRY")
    # The smallest batch size of the steps in it (and of the tool) bounds the batch.
    assert code_of(lambda: join([member("A", step=9, batch_max=2)] * 2)) == "tool.full"
    assert code_of(lambda: join([member("A")] * 3, tool_max_lots=3)) == "tool.full"
    join([member("A")] * 5)


# --- dispatch ----------------------------------------------------------------------------

NOW = 1_000_000.0
STEP = p.StepSnapshot(id=1, sequence=10, tool_group_id=7, operation="OX", recipe="R1")
TOOL = p.ToolSnapshot(
    id=100, code="FU1", fab_id=1, tool_group_id=7, e10_state="SBY", qualified=frozenset({"R1"})
)
SIT = p.Situation(now=NOW)


def lot(code: str, **kw: object) -> p.LotSnapshot:
    values: dict[str, object] = {
        "id": int(code[1:]),
        "code": code,
        "fab_id": 1,
        "state": "Waiting",
        "holds": 0,
        "priority": "normal",
        "wafer_count": 25,
        "step": STEP,
        "queued_at": NOW - 3600,
    }
    values.update(kw)
    return p.LotSnapshot(**values)  # type: ignore[arg-type]


def test_a_rule_set_weighs_lot_types_and_shows_the_contribution() -> None:
    lots = [
        lot("L1", queued_at=NOW - 7200),  # production, waited longest
        lot("L2", lot_type="engineering"),
        lot("L3", lot_type="monitor"),
    ]
    fifo_only = p.RuleSet.build([{"rule": "fifo", "weight": 1}])
    assert p.rank_lots(TOOL, lots, SIT, fifo_only).ranked[0].lot.code == "L1"
    weighed = p.RuleSet.build(
        [
            {"rule": "lot_type", "weight": 10, "params": {"monitor": -1.0}},
            {"rule": "fifo", "weight": 1},
        ]
    )
    ranked = p.rank_lots(TOOL, lots, SIT, weighed).ranked
    assert [r.lot.code for r in ranked] == ["L2", "L1", "L3"]
    shown = {r.lot.code: r.contributions[0] for r in ranked}
    # Engineering 1 (the default), production 0, monitor -1 (this rule set's own value).
    assert (shown["L2"].rule, shown["L2"].value, shown["L2"].contribution) == ("lot_type", 1.0, 10)
    assert shown["L2"].why == "engineering lot"
    assert (shown["L1"].value, shown["L3"].contribution) == (0.0, -10.0)
    with pytest.raises(p.RuleSetError):
        p.RuleSet.build([{"rule": "lot_type", "params": {"pilot": 1}}])


def test_a_batch_forms_across_steps_on_one_recipe_up_to_the_smallest_batch_size() -> None:
    furnace = replace(TOOL, max_lots=6)
    a = replace(STEP, batch_min=2, batch_max=4)
    b = replace(STEP, id=2, sequence=20, batch_min=2, batch_max=3)  # another product's step
    c = replace(STEP, id=3, sequence=30, recipe="R2", batch_min=1, batch_max=6)
    qualified = replace(furnace, qualified=frozenset({"R1", "R2"}))
    lots = [
        lot("L1", step=a, queued_at=NOW - 9000),
        lot("L2", step=b),
        lot("L3", step=a),
        lot("L4", step=b),
        lot("L5", step=c),
    ]
    starts = p.choose_starts(p.rank_lots(qualified, lots, SIT))
    # Two steps, one recipe: one batch of 3 (step b's size), never the R2 lot.
    assert sorted(r.lot.code for r in starts.lots) == ["L1", "L2", "L3"]


def test_only_lots_of_one_type_merge() -> None:
    from mes.lots import rules
    from mes.lots.states import LotState

    def view(code: str, kind: LotType) -> rules.MergeView:
        lot = rules.LotView(code, LotState.WAITING, 1, None, 5, 0, 1, kind)
        return rules.MergeView(lot, product_id=1, route_version_id=1)

    rules.check_merge(view("A", LotType.REWORK), view("B", LotType.REWORK))
    refused = code_of(
        lambda: rules.check_merge(view("A", LotType.PRODUCTION), view("B", LotType.MONITOR))
    )
    assert refused == "lot.merge_mismatch"
