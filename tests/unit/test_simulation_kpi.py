"""Simulation KPIs on a hand-checked queue, rule-set choices, and ``mes simulate run``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mes.cli import app
from mes.simulation import engine, kpi, model, rulesets, runner
from mes.simulation.rulesets import RuleChoiceError, resolve, resolve_all
from tests.unit import smt2020_writer as w


def queue_fab(tmp_path):
    # One tool, 60 min a lot, a lot every 30 min due 2 h after its release: lot k (0-based)
    # is released at 30k and done at 60 (k + 1) min, so its cycle time is 60 + 30k min.
    return w.make_testbed(
        tmp_path,
        families=[w.family("Etch")],
        steps=[w.step(1, "Etch", 60)],
        orders=[w.order("Lot_1", 30, 1000, due="01/01/18 02:00:00")],
    )


def summary(folder, days, warmup=0.0):
    sim = engine.Simulation(
        model.load(folder), resolve("fifo"), seed=1, days=days, warmup_days=warmup
    ).run()
    return kpi.summarize([kpi.collect(sim)])


def test_lot_type_figures_of_a_hand_checked_queue(tmp_path):
    s = summary(queue_fab(tmp_path), days=10 / 24)
    (t,) = s["lot_types"]
    assert (t["lot_type"], t["completed"], t["released"]) == ("Lot_1", 10, 21)
    assert t["ct_mean_days"] == pytest.approx(195 / 1440, abs=1e-4)  # 60 + 30 x 4.5 min
    assert t["ct_p90_days"] == pytest.approx(300 / 1440, abs=1e-4)  # the 9th of 10: k = 8
    assert t["flow_factor"] == pytest.approx(195 / 60, abs=1e-4)
    # Late when 60 + 30k > 120, i.e. k >= 3: 7 of 10, by 30, 60, ..., 210 min (840 in all).
    assert t["on_time_pct"] == pytest.approx(30.0)
    assert t["tardiness_mean_days"] == pytest.approx(840 / 1440 / 10, abs=1e-4)
    assert t["cost"] == pytest.approx((10 * 7 + 840 / 1440) / 10, abs=1e-4)
    assert s["weighted_cost"] == pytest.approx(t["cost"], abs=1e-4)  # normal lots weigh 1
    assert s["throughput_lots_per_day"] == pytest.approx(10 / (10 / 24))
    (fam,) = s["families"]
    assert (fam["family"], fam["utilisation_pct"], fam["availability_pct"]) == ("Etch", 100, 100)


def test_the_warm_up_keeps_earlier_releases_out(tmp_path):
    s = summary(queue_fab(tmp_path), days=10 / 24, warmup=2 / 24)
    (t,) = s["lot_types"]
    # Released at 120 min or later: k = 4..20 (17 lots), of which k = 4..9 are done.
    assert (t["released"], t["completed"]) == (17, 6)
    assert t["ct_mean_days"] == pytest.approx((60 + 30 * 6.5) / 1440, abs=1e-4)


def test_hot_lots_weigh_more_in_the_cost():
    types = [
        {"cost": 1.0, "weight": kpi.PRIORITY_WEIGHT[10]},
        {"cost": 1.0, "weight": kpi.PRIORITY_WEIGHT[20]},
        {"cost": 1.0, "weight": kpi.PRIORITY_WEIGHT[30]},
        {"cost": None, "weight": 1.0},  # a lot type with no completed lot
    ]
    assert kpi.weighted_cost(types) == 7.0


def test_rule_sets_by_name_and_from_a_rule_set_document(tmp_path):
    assert [r.name for r in resolve_all("fifo, CR,testbed,default")] == [
        "fifo",
        "cr",
        "testbed",
        "default",
    ]
    doc = tmp_path / "tuned.json"
    doc.write_text(json.dumps({"fab": "F1", "rules": [{"rule": "edd", "weight": 3}]}))
    tuned = resolve(str(doc))
    assert tuned.name == "tuned"
    assert tuned.document()["rules"] == [{"rule": "edd", "weight": 3}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"rule": "no_such_rule"}]}))
    for choice in (str(bad), "no-such-set", str(tmp_path / "missing.json")):
        with pytest.raises(RuleChoiceError):
            resolve(choice)


def test_mes_simulate_run_on_the_shipped_example(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["simulate", "run", "example", "--rules", "fifo,testbed", "--days", "4", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert set(figures) == {"fifo", "testbed"}
    data = json.loads((out / "results.json").read_text())
    assert data["fifo"]["counters"]["decisions"] > 0
    assert {t["lot_type"] for t in data["fifo"]["lot_types"]} >= {"Lot_A", "Lot_B"}
    assert (out / "results.csv").read_text().startswith("rules,section,key,figure,value")
    assert (out / "results.png").stat().st_size > 1000


def test_mes_simulate_run_refuses_bad_input(tmp_path):
    runner_ = CliRunner()
    bad_rules = runner_.invoke(app, ["simulate", "run", "example", "--rules", "nope"])
    assert bad_rules.exit_code == 2
    assert "nope" in bad_rules.output
    no_folder = runner_.invoke(app, ["simulate", "run", str(tmp_path / "none")])
    assert no_folder.exit_code == 2
    assert "not a folder" in no_folder.output


def test_parallel_runs_give_the_same_figures_as_one_process():
    plan = runner.plan_for("example", ["fifo"], seeds=2, days=3, warmup=0)
    alone = runner.run_plan(plan, jobs=1, out=None)["fifo"]
    parallel = runner.run_plan(plan, jobs=2, out=None)["fifo"]
    assert [r.lots for r in alone] == [r.lots for r in parallel]
    assert [r.seed for r in parallel] == [1, 2]


def test_tune_writes_a_rule_set_the_api_accepts(tmp_path):
    from mes.dispatch.schemas import RuleSetPublish

    out = tmp_path / "best.json"
    args = "simulate tune example --trials 2 --seeds 1 --holdout 1 --days 2 --baselines fifo"
    result = CliRunner().invoke(app, [*args.split(), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert set(summary["held_out_cost"]) >= {summary["best"]}
    doc = json.loads(out.read_text())
    published = RuleSetPublish.model_validate(doc)
    assert published.shadow is True
    assert published.fab == "F1"
    assert any(r["rule"] == "batch" for r in doc["rules"])
    assert "held-out seeds [2]" in doc["note"]


def test_every_built_in_rule_set_goes_to_production_as_a_document_the_api_accepts():
    from mes.dispatch.schemas import RuleSetPublish

    for name in rulesets.BUILTIN:
        rules = rulesets.resolve(name)
        published = RuleSetPublish.model_validate({**rules.document(), "fab": "F1"})
        assert [r.rule for r in published.rules] == [e["rule"] for e in rules.spec], name
    aware = rulesets.resolve("setup_aware").for_family(runner._model("example").families[0])
    assert [r.name for r in aware.rules][:3] == ["priority", "setup", "setup_demand"]


def test_the_wip_trend_is_the_slope_over_the_evaluated_days_only():
    def run_with(wip: list[tuple[float, int]]) -> kpi.RunResult:
        return kpi.RunResult("fifo", 1, 20, 10, [], {}, 0, {}, wip, wip[-1][1], {})

    warm = [(float(d), 5000 - 100 * d) for d in range(10)]  # falls in the warm-up: not counted
    growing = [(10 + d / 4, 2000 + int(d)) for d in range(40)]  # +4 lots a day
    assert kpi.wip_trend(run_with(warm + growing)) == pytest.approx(4.0, abs=0.05)
    wobbling = [(10 + d / 2, 3000 + (25 if d % 2 else -25)) for d in range(20)]
    assert abs(kpi.wip_trend(run_with(warm + wobbling)) or 0) < 3.0  # wanders, does not grow
    assert kpi.wip_trend(run_with([*warm, (12.0, 3000)])) is None  # one point: no slope
    figures = runner.summaries(runner.run_plan(runner.plan_for("example", ["fifo"], 1, 6, 2)))
    assert len(figures["fifo"]["wip_trend_lots_per_day"]) == 1


def test_where_the_cycle_time_goes_on_a_hand_checked_line(tmp_path):
    # Etch (60 min) -> 10 min transport -> Clean (30 min) -> a 20-min delay step (no transport
    # into a delay). Lots released at 0, 1, 2 min: Etch runs them back to back, so they queue
    # there 0, 59 and 118 min; Clean is free each time one arrives.
    folder = w.make_testbed(
        tmp_path,
        families=[w.family("Etch"), w.family("Clean"), w.family("Delay_32", STNFAMLOC="Delay")],
        steps=[w.step(1, "Etch", 60), w.step(2, "Clean", 30), w.step(3, "Delay_32", 20)],
        orders=[w.order("Lot_1", 1, 3)],
        transport_min=10,
    )
    (t,) = summary(folder, days=1)["lot_types"]
    assert t["completed"] == 3
    day_min = 1440
    assert t["ct_mean_days"] == pytest.approx((120 + 179 + 238) / 3 / day_min, abs=1e-4)
    assert t["queue_days"] == pytest.approx(59 / day_min, abs=1e-4)
    assert t["in_tool_days"] == pytest.approx(90 / day_min, abs=1e-4)
    assert t["transport_days"] == pytest.approx(10 / day_min, abs=1e-4)
    assert t["delay_days"] == pytest.approx(20 / day_min, abs=1e-4)
    # Only where they queued: Clean took each lot at once.
    assert t["longest_waits"] == [
        {"family": "Etch", "queue_days": pytest.approx(59 / day_min, abs=1e-4)}
    ]


def test_the_time_split_adds_up_to_the_cycle_time_in_a_busy_fab():
    # The shipped example fab, with batches, setups, rework, breakdowns and PMs: for every lot
    # type the four parts are the whole cycle time, and the queue is the sum over families.
    sim = engine.Simulation(
        runner._model(runner.folder_of("example")), resolve("cr"), seed=3, days=30, warmup_days=5
    ).run()
    result = kpi.collect(sim)
    s = kpi.summarize([result])
    checked = 0
    for t in s["lot_types"]:
        if not t["completed"]:
            continue
        parts = t["queue_days"] + t["in_tool_days"] + t["transport_days"] + t["delay_days"]
        assert parts == pytest.approx(t["ct_mean_days"], abs=1e-3)
        assert t["queue_days"] > 0
        assert t["in_tool_days"] > 0
        waits = result.waits[(t["part"], t["priority"])]
        queued = sum(waits.values()) / t["completed"] / engine.DAY
        assert queued == pytest.approx(t["queue_days"], abs=1e-3)
        checked += 1
    assert checked >= 2
