"""The SMT2020 table reader on the tiny sample shipped with the tests (answers worked out here)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mes.smt2020 import importer, tables

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "smt2020_tiny"


@pytest.fixture(scope="module")
def testbed() -> tables.Testbed:
    return tables.read_testbed(SAMPLE)


def test_families_routes_and_lots_are_read_without_assuming_counts(testbed):
    assert sorted(testbed.families) == ["Delay_9", "Furnace_1", "Implant_1", "Litho_1", "Metro_1"]
    assert testbed.families["Litho_1"].count == 2
    assert testbed.families["Delay_9"].is_delay
    assert testbed.families["Implant_1"].rule == "rule_LSSU"
    assert testbed.families["Furnace_1"].ranking == ("rank_HP", "rank_RSETUP", "rank_FIFO")
    assert {k: len(v) for k, v in testbed.routes.items()} == {"r_1": 6, "r_2": 3}
    assert [p.part for p in testbed.parts] == ["part_1", "part_2"]
    assert len(testbed.wip) == 6
    assert len(testbed.orders) == 2
    assert testbed.start == datetime(2018, 1, 1, tzinfo=UTC)
    assert testbed.transport_s == 450.0  # 7.5 min


def test_step_fields_and_units(testbed):
    oxide, litho_a, _implant, wait, litho_b, measure = testbed.routes["r_1"]
    assert (oxide.per, oxide.lot_process_s(), oxide.batch_lots) == ("per_batch", 18000.0, (2, 4))
    assert (oxide.cqt_step, oxide.cqt_s) == (2, 4 * 3600.0)
    # per_piece: 0.5 min per wafer x 25 wafers
    assert litho_a.lot_process_s() == 750.0
    assert (litho_a.setup, litho_a.setup_time_s, litho_a.same_tool_for_step) == ("SU_A", 480.0, 5)
    assert wait.lot_process_s() == 7200.0
    assert litho_b.same_tool_for_step is None
    assert (measure.rework_step, measure.rework_percent, measure.step_percent) == (5, 2.5, 25.0)


def test_wip_lots(testbed):
    first = testbed.wip[0]
    assert (first.name, first.part, first.priority, first.pieces, first.step) == (
        "Init_Lot_1_1",
        "part_1",
        10,
        25,
        1,
    )
    assert first.due == datetime(2018, 1, 2, 6, tzinfo=UTC)
    assert testbed.wip[3].pieces == 20
    assert [lot.priority for lot in testbed.wip[-2:]] == [20, 30]
    assert testbed.orders[1].repeat_s == 2880 * 60


def test_setups_and_minimum_runs(testbed):
    assert [(s.from_setup, s.to_setup, s.time_s) for s in testbed.setup_times] == [
        ("SU_A", "SU_B", 300.0),
        (None, "GAS_1", 3600.0),
        ("GAS_1", "GAS_2", 4500.0),
    ]
    # The group is named on its first row only.
    assert [(m.group, m.setup, m.min_run) for m in testbed.min_runs] == [
        ("Implant_Gas", "GAS_1", 3),
        ("Implant_Gas", "GAS_2", 3),
    ]


def test_steps_become_mes_steps_that_pass_the_route_rules(testbed):
    rows = {r["sequence"]: r for r in importer.step_rows(testbed, testbed.routes["r_1"])}
    assert (rows[1]["batch_min"], rows[1]["batch_max"]) == (2, 4)
    assert (rows[1]["qtime_to_sequence"], rows[1]["qtime_max_s"]) == (2, 14400)
    # SVESTN on step 2 with FORSTEP 5: step 5 runs on step 2's tool.
    assert rows[5]["same_tool_as_sequence"] == 2
    assert rows[2]["same_tool_as_sequence"] is None
    assert (rows[6]["rework_to_sequence"], rows[6]["sampling_rate"]) == (5, 0.25)
    assert rows[2]["recipe_name"] == "Litho_1.002_Litho_A"


def test_a_family_batching_by_route_and_step_gets_a_recipe_per_route_and_step(testbed):
    # r_2 shares the furnace step 001_Oxide with r_1 (one recipe: lots of both routes batch
    # together); with the testbed's crit_sameroutestep each route's step is its own recipe, in
    # the importer and the simulator alike.
    shared = [s for r in ("r_1", "r_2") for s in testbed.routes[r] if s.family == "Furnace_1"]
    assert {testbed.recipe_name(s) for s in shared} == {"Furnace_1.001_Oxide"}
    furnace = replace(testbed.families["Furnace_1"], batch_criterion="crit_sameroutestep")
    strict = replace(testbed, families={**testbed.families, "Furnace_1": furnace})
    assert {strict.recipe_name(s) for s in shared} == {
        "Furnace_1.001_Oxide@r_1.1",
        "Furnace_1.001_Oxide@r_2.1",
    }
    rows = importer.step_rows(strict, strict.routes["r_2"])
    assert rows[0]["recipe_name"] == "Furnace_1.001_Oxide@r_2.1"
    assert tables.read_testbed(SAMPLE).families["Litho_1"].batch_criterion == ""


def test_prescribed_rules_become_rule_sets(testbed):
    assert tables.rule_set_for(testbed.families["Furnace_1"]) == [
        {"rule": "priority", "weight": 1000.0},
        {"rule": "setup", "weight": 20.0},
        {"rule": "fifo", "weight": 1.0},
    ]
    # Least setup first (rule_LSSU / wake_LeastSetupTime) weighs setups above waiting time.
    assert tables.rule_set_for(testbed.families["Implant_1"])[1] == {
        "rule": "setup",
        "weight": 200.0,
    }


def test_refusals_name_the_file_and_line(tmp_path):
    for f in SAMPLE.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    route = tmp_path / "route_2.txt"
    route.write_text(route.read_text().replace("Metro_1", "Nowhere_7"))
    with pytest.raises(tables.TestbedError, match="unknown tool family Nowhere_7"):
        tables.read_testbed(tmp_path)
    wip = tmp_path / "WIP.txt"
    wip.write_text(wip.read_text().replace("01/02/18 06:00:00", "tomorrow"))
    with pytest.raises(tables.TestbedError, match=r"WIP.txt:2: 'tomorrow'"):
        tables.read_lots(wip, wip=True)
    with pytest.raises(tables.TestbedError, match="not a folder"):
        tables.read_testbed(tmp_path / "nothing")
    (tmp_path / "part.txt").unlink()
    with pytest.raises(tables.TestbedError, match=r"part\.txt: missing"):
        tables.read_testbed(tmp_path)
