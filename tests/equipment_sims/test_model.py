"""The pure simulation logic, without OPC UA: state machines, timing, batching, noise."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from equipment_sims.clock import ManualClock, SimClock
from equipment_sims.fab import FabFileError, load_fab, parse_fab
from equipment_sims.process import MeasurementModel, seeded_rng
from equipment_sims.recipes import Recipe, wafer_steps
from equipment_sims.spec import ToolSpec
from equipment_sims.tool import JobEvent, Refused, SubstrateEvent, Tool
from mes.opcua.model import (
    ChamberState,
    ControlState,
    JobState,
    JobSubstate,
    MachineryItemState,
    ProcessingKind,
    SubstrateState,
    canonical_recipe_body,
    recipe_checksum,
)
from mes.recipes import rules

from .conftest import (
    ETCH_BODY,
    FURNACE_BODY,
    LITHO_BODY,
    METRO_BODY,
    etch,
    furnace,
    job_order,
    litho,
    metrology,
)

REPO = Path(__file__).resolve().parents[2]


def loaded(spec: ToolSpec, body: dict[str, object], *, seed: int = 0) -> Tool:
    tool = Tool(spec, seed=seed)
    tool.download_recipe("R1", json.dumps(body), recipe_checksum(body))
    return tool


def substrate_states(tool: Tool) -> list[tuple[str, str, str]]:
    return [
        (e.wafer["SubstrateID"], e.wafer["State"], e.wafer["Chamber"])
        for e in tool.events
        if isinstance(e, SubstrateEvent)
    ]


def job_states(tool: Tool) -> list[tuple[JobState, JobSubstate]]:
    return [(e.state, e.substate) for e in tool.events if isinstance(e, JobEvent)]


# --- checksum, recipes, clock --------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"b": 1, "a": [1.5, "x"], "ü": {"z": None, "y": True}},
        {"parameters": [{"name": "dose", "value": 32.5, "unit": "mJ/cm2"}]},
        {},
    ],
)
def test_checksum_is_the_mes_one(body: dict[str, object]) -> None:
    assert canonical_recipe_body(body) == rules.canonical_body(body)
    assert recipe_checksum(body) == rules.body_checksum(body)


def test_recipe_parameters_shape_duration() -> None:
    slow = Recipe.from_body("A", {"parameters": [{"name": "time", "value": 300}]})
    fast = Recipe.from_body("B", {"time": 30})
    assert sum(s.duration for s in wafer_steps(slow, "etch", 10)) - sum(
        s.duration for s in wafer_steps(fast, "etch", 10)
    ) == pytest.approx(270)


def test_clock_scales_and_keeps_time_continuous_across_speed_changes() -> None:
    t = [100.0]
    clock = SimClock(60, monotonic=lambda: t[0])
    t[0] += 2
    assert clock.now() == pytest.approx(120)
    clock.speed = 10
    assert clock.now() == pytest.approx(120)
    t[0] += 1
    assert clock.now() == pytest.approx(130)
    assert clock.real_seconds(60) == pytest.approx(6)
    manual = ManualClock()
    manual.advance(5)
    assert (manual.datetime() - manual.start).total_seconds() == pytest.approx(5)


# --- single-wafer sequential -----------------------------------------------------------------
def test_single_wafer_job_processes_wafers_one_by_one_and_completes() -> None:
    tool = loaded(litho(), LITHO_BODY)
    per_wafer = 15 + 8 + 20 + 30.0  # load, align, expose (20 s + dose)
    tool.store(job_order("J1", "R1", ("L1", [1, 2, 3])), start=True)
    assert tool.item_state is MachineryItemState.EXECUTING
    tool.advance(per_wafer * 1.5)
    assert [w.state for w in tool.jobs["J1"].wafers] == [
        SubstrateState.PROCESSED,
        SubstrateState.IN_PROCESS,
        SubstrateState.NEEDS_PROCESSING,
    ]
    tool.advance(per_wafer * 10)
    job = tool.jobs["J1"]
    assert (job.state, job.substate) == (JobState.ENDED, JobSubstate.COMPLETED)
    assert job.ended_at == pytest.approx(3 * per_wafer)
    assert tool.wafers_processed_total == 3
    assert [s for _, s, _ in substrate_states(tool)] == ["InProcess", "Processed"] * 3
    assert job_states(tool)[-1] == (JobState.ENDED, JobSubstate.COMPLETED)
    assert tool.item_state is MachineryItemState.NOT_EXECUTING


def test_outcome_does_not_depend_on_tick_size() -> None:
    coarse, fine = loaded(litho(), LITHO_BODY), loaded(litho(), LITHO_BODY)
    for tool in (coarse, fine):
        tool.store(job_order("J1", "R1", ("L1", list(range(1, 6)))), start=True)
    coarse.advance(10_000)
    for t in range(0, 10_000, 7):
        fine.advance(float(t))
    assert [(e.at, e.wafer) for e in coarse.events if isinstance(e, SubstrateEvent)] == [
        (e.at, e.wafer) for e in fine.events if isinstance(e, SubstrateEvent)
    ]


def test_host_commands_need_online_remote() -> None:
    tool = loaded(litho(), LITHO_BODY)
    tool.set_control_state(ControlState.ONLINE_LOCAL)
    with pytest.raises(Refused) as refused:
        tool.store(job_order("J1", "R1", ("L1", [1])), start=True)
    assert refused.value.reason == "not_remote"
    tool.set_control_state(ControlState.OFFLINE)
    with pytest.raises(Refused):
        tool.download_recipe("R2", "{}", "")
    tool.set_control_state(ControlState.ONLINE_REMOTE)
    tool.store(job_order("J1", "R1", ("L1", [1])), start=True)


def test_download_checks_checksum_and_unblocks_waiting_jobs() -> None:
    tool = Tool(litho())
    tool.store(job_order("J1", "R1", ("L1", [1])))
    assert tool.jobs["J1"].state is JobState.NOT_ALLOWED_TO_START
    with pytest.raises(Refused, match="not on the tool"):
        tool.start("J1")
    with pytest.raises(Refused, match="checksum") as refused:
        tool.download_recipe("R1", json.dumps(LITHO_BODY), "0" * 64)
    assert refused.value.reason == "invalid"
    tool.download_recipe("R1", json.dumps(LITHO_BODY), recipe_checksum(LITHO_BODY))
    assert tool.jobs["J1"].state is JobState.ALLOWED_TO_START
    tool.corrupt_checksums = True
    assert tool.reported_checksum("R1") != recipe_checksum(LITHO_BODY)


def test_stop_finishes_the_wafer_in_process_and_skips_the_rest() -> None:
    tool = loaded(litho(), LITHO_BODY)
    tool.store(job_order("J1", "R1", ("L1", [1, 2, 3])), start=True)
    tool.advance(10)
    tool.stop("J1")
    assert tool.jobs["J1"].state is JobState.RUNNING
    tool.advance(1000)
    job = tool.jobs["J1"]
    assert (job.state, job.substate) == (JobState.ENDED, JobSubstate.STOPPED)
    assert [w.state for w in job.wafers] == [
        SubstrateState.PROCESSED,
        SubstrateState.SKIPPED,
        SubstrateState.SKIPPED,
    ]


def test_abort_aborts_the_wafer_in_process() -> None:
    tool = loaded(litho(), LITHO_BODY)
    tool.store(job_order("J1", "R1", ("L1", [1, 2, 3])), start=True)
    tool.advance(100)
    tool.abort("J1")
    job = tool.jobs["J1"]
    assert job.state is JobState.ABORTED
    assert [w.state for w in job.wafers] == [
        SubstrateState.PROCESSED,
        SubstrateState.ABORTED,
        SubstrateState.SKIPPED,
    ]
    tool.advance(10_000)
    assert tool.wafers_processed_total == 1
    with pytest.raises(Refused):
        tool.abort("J1")
    tool.clear("J1")
    assert "J1" not in tool.jobs


def test_pause_resume_cancel_and_one_job_at_a_time() -> None:
    tool = loaded(litho(), LITHO_BODY)
    tool.store(job_order("J1", "R1", ("L1", [1, 2])), start=True)
    tool.store(job_order("J2", "R1", ("L2", [1])))
    with pytest.raises(Refused) as busy:
        tool.start("J2")
    assert busy.value.reason == "busy"
    tool.advance(10)
    tool.pause("J1")
    tool.advance(1000)  # the wafer in process finishes, the next one does not start
    assert [w.state for w in tool.jobs["J1"].wafers] == [
        SubstrateState.PROCESSED,
        SubstrateState.NEEDS_PROCESSING,
    ]
    assert tool.jobs["J1"].state is JobState.INTERRUPTED
    tool.resume("J1")
    tool.advance(2000)
    assert tool.jobs["J1"].substate is JobSubstate.COMPLETED
    tool.cancel("J2")
    assert tool.jobs["J2"].substate is JobSubstate.CANCELLED
    with pytest.raises(Refused):
        tool.cancel("J1")


def test_bad_job_orders_are_refused() -> None:
    tool = loaded(litho(), LITHO_BODY)
    for text in ("nope", "[]", json.dumps({"JobOrderID": "J", "WorkMasterID": "R1"})):
        with pytest.raises(Refused) as refused:
            tool.store(text)
        assert refused.value.reason == "invalid"
    with pytest.raises(Refused):
        tool.store(job_order("J", "R1", ("L1", [0, 26])))
    with pytest.raises(Refused) as unknown:
        tool.start("missing")
    assert unknown.value.reason == "unknown"


# --- cluster -------------------------------------------------------------------------------
def test_cluster_runs_wafers_in_parallel_and_survives_a_chamber_down() -> None:
    tool = loaded(etch(chambers=("PM1", "PM2", "PM3")), ETCH_BODY)
    per_wafer = 15 + 10 + 60 + 8.0
    tool.store(job_order("J1", "R1", ("L1", list(range(1, 10)))), start=True)
    assert {s.state for s in tool.stations.values()} == {ChamberState.BUSY}
    tool.advance(per_wafer + 1)  # the first three are done, the next three started
    tool.chamber_down("PM2")
    assert tool.stations["PM2"].state is ChamberState.DOWN
    tool.advance(100_000)
    job = tool.jobs["J1"]
    assert job.state is JobState.ENDED
    states = [w.state for w in job.wafers]
    assert states.count(SubstrateState.ABORTED) == 1
    assert states.count(SubstrateState.PROCESSED) == 8
    after_down = [w for w in job.wafers if (w.started_at or 0) > per_wafer + 1]
    assert after_down
    assert all(w.chamber in ("PM1", "PM3") for w in after_down)
    # Two chambers for the last 3 wafers: two rounds after the outage.
    assert job.ended_at == pytest.approx(per_wafer * 4)
    tool.chamber_up("PM2")
    assert tool.stations["PM2"].state is ChamberState.IDLE


def test_cluster_with_every_chamber_down_waits_then_resumes() -> None:
    tool = loaded(etch(chambers=("PM1",)), ETCH_BODY)
    tool.store(job_order("J1", "R1", ("L1", [1, 2])), start=True)
    tool.chamber_down("PM1")
    tool.advance(10_000)
    assert tool.jobs["J1"].state is JobState.RUNNING
    tool.chamber_up("PM1")
    tool.advance(20_000)
    assert [w.state for w in tool.jobs["J1"].wafers] == [
        SubstrateState.ABORTED,
        SubstrateState.PROCESSED,
    ]


def test_cluster_runs_a_job_only_in_the_chambers_its_order_names() -> None:
    tool = loaded(etch(chambers=("PM1", "PM2", "PM3")), ETCH_BODY)
    order = json.loads(job_order("J1", "R1", ("L1", [1, 2, 3, 4])))
    with pytest.raises(Refused, match="no chamber 'PM9'"):
        tool.store(json.dumps({**order, "Chambers": ["PM9"]}), start=True)
    with pytest.raises(Refused, match="Chambers must be"):
        tool.store(json.dumps({**order, "Chambers": "PM1"}), start=True)
    tool.store(json.dumps({**order, "Chambers": ["PM3"]}), start=True)
    assert [s.state for s in tool.stations.values()] == [
        ChamberState.IDLE,
        ChamberState.IDLE,
        ChamberState.BUSY,
    ]
    tool.advance(100_000)
    job = tool.jobs["J1"]
    assert job.state is JobState.ENDED
    assert {(w.state, w.chamber) for w in job.wafers} == {(SubstrateState.PROCESSED, "PM3")}


# --- batch and wet bench -------------------------------------------------------------------
def test_furnace_enforces_min_and_max_batch_and_processes_the_batch_together() -> None:
    tool = loaded(furnace(), FURNACE_BODY)
    with pytest.raises(Refused, match="2 to 3 lots"):
        tool.store(job_order("J1", "R1", ("L1", [1, 2])), start=True)
    four = [(f"L{i}", [1, 2]) for i in range(4)]
    with pytest.raises(Refused, match="2 to 3 lots"):
        tool.store(job_order("J1", "R1", *four), start=True)
    tool.store(job_order("J1", "R1", ("L1", [1, 2]), ("L2", [1, 2, 3])), start=True)
    assert {w.state for w in tool.jobs["J1"].wafers} == {SubstrateState.IN_PROCESS}
    ramp = (900 - 600) / 20 * 60
    duration = 15 * 4 + ramp + 3600 + ramp
    tool.advance(duration - 1)
    step, name, _ = tool.process_values()
    assert (step, name) == (4, "RampDown")
    tool.advance(duration)
    assert tool.jobs["J1"].substate is JobSubstate.COMPLETED
    done_at = {e.at for e in tool.events if isinstance(e, SubstrateEvent)} - {0.0}
    assert done_at == {duration}
    assert tool.wafers_processed_total == 5


def test_process_values_follow_the_recipe_step() -> None:
    tool = loaded(furnace(), FURNACE_BODY)
    tool.store(job_order("J1", "R1", ("L1", [1]), ("L2", [1])), start=True)
    tool.advance(60 + 900 + 100)  # in the Process step
    step, name, values = tool.process_values()
    assert (step, name) == (3, "Process")
    assert values["ChamberTemperature"] == pytest.approx(900, rel=0.03)
    assert values["GasFlow_1"] == pytest.approx(10, rel=0.05)


def test_wet_bench_goes_through_its_tanks() -> None:
    spec = ToolSpec("WB", ProcessingKind.WET_BENCH, "wet", tool_group="WET_CLEAN", max_batch=2)
    body = {"sc1_time": 600, "sc1_temperature": 65, "hf_time": 60}
    tool = loaded(spec, body)
    tool.store(job_order("J1", "R1", ("L1", [1]), ("L2", [1])), start=True)
    names = [s.name for s in tool.stations["Bath"].steps]
    assert names == ["Load", "SC1", "Rinse", "HF", "Rinse", "Dry"]
    tool.advance(60 + 300)
    _, name, values = tool.process_values()
    assert name == "SC1"
    assert values["ChamberTemperature"] == pytest.approx(65, rel=0.03)
    tool.advance(100_000)
    assert tool.jobs["J1"].substate is JobSubstate.COMPLETED


# --- metrology -----------------------------------------------------------------------------
def run_metrology(seed: int, wafers: int = 25, drift: float = 0.0) -> list[list[float]]:
    tool = loaded(metrology(), METRO_BODY, seed=seed)
    tool.measurement.drift_per_wafer = drift
    tool.store(job_order("J1", "R1", ("L1", list(range(1, wafers + 1)))), start=True)
    tool.advance(1e6)
    return [w.measurements for w in tool.jobs["J1"].wafers]


def test_metrology_noise_is_realistic_and_seeded() -> None:
    a, b, c = run_metrology(1), run_metrology(1), run_metrology(2)
    assert a == b
    assert a != c
    sites = [v for wafer in a for v in wafer]
    assert len(a[0]) == 5
    assert statistics.mean(sites) == pytest.approx(45, abs=0.3)
    assert 0.4 < statistics.stdev(sites) < 0.8  # sigma 0.6 nm


def test_metrology_drift_moves_the_mean() -> None:
    drifting = run_metrology(1, drift=0.1)
    first, last = statistics.mean(drifting[0]), statistics.mean(drifting[-1])
    assert last - first == pytest.approx(2.4, abs=1.0)


def _means(model: MeasurementModel, recipe: Recipe, wafers: int) -> list[float]:
    return [statistics.fmean(model.measure(recipe)) for _ in range(wafers)]


def test_metrology_faults_shift_the_mean_or_start_a_trend_from_now() -> None:
    recipe = Recipe.from_body("R1", {"parameters": [{"name": "sites", "value": 5}]})
    plain = MeasurementModel("METRO_THK", seeded_rng(1, "M", "measure"))
    shifted = MeasurementModel("METRO_THK", seeded_rng(1, "M", "measure"))
    assert _means(plain, recipe, 3) == _means(shifted, recipe, 3)  # same seed, same noise
    shifted.offset = 4.0  # the shift_mean fault
    for a, b in zip(_means(plain, recipe, 3), _means(shifted, recipe, 3), strict=True):
        assert b - a == pytest.approx(4.0, abs=1e-3)
    # A drift started after 6 wafers adds nothing to the 7th, then 0.5 per wafer.
    trending = MeasurementModel("METRO_THK", seeded_rng(1, "M", "measure"))
    _means(trending, recipe, 6)
    trending.start_drift(0.5)
    for k, (a, b) in enumerate(
        zip(_means(plain, recipe, 4), _means(trending, recipe, 4), strict=True)
    ):
        assert b - a == pytest.approx(0.5 * k, abs=1e-3)
    trending.start_drift(0.0)  # stops where it got to: no jump back
    (a,), (b,) = _means(plain, recipe, 1), _means(trending, recipe, 1)
    assert b - a == pytest.approx(2.0, abs=1e-3)


# --- alarms --------------------------------------------------------------------------------
def test_breaking_alarm_holds_the_job_until_cleared_and_resumed() -> None:
    tool = loaded(litho(), LITHO_BODY)
    tool.store(job_order("J1", "R1", ("L1", [1, 2])), start=True)
    tool.advance(5)
    tool.raise_alarm("A1", "stage interlock", breaking=True)
    assert tool.jobs["J1"].substate is JobSubstate.HELD
    assert tool.item_state is MachineryItemState.OUT_OF_SERVICE
    with pytest.raises(Refused):
        tool.resume("J1")
    tool.clear_alarm("A1")
    assert "A1" in tool.alarms  # retained until acknowledged
    tool.acknowledge("A1")
    assert "A1" not in tool.alarms
    tool.resume("J1")
    tool.advance(10_000)
    assert tool.jobs["J1"].substate is JobSubstate.COMPLETED


def test_non_breaking_alarm_does_not_touch_the_job() -> None:
    tool = loaded(litho(), LITHO_BODY)
    tool.store(job_order("J1", "R1", ("L1", [1])), start=True)
    alarm = tool.raise_alarm("W1", "filter life low", severity=200, breaking=False)
    assert tool.jobs["J1"].state is JobState.RUNNING
    tool.acknowledge("W1")
    with pytest.raises(Refused):
        tool.acknowledge("W1")
    assert alarm.retain  # still active


# --- fab description -----------------------------------------------------------------------
def test_the_seeded_fab_file_describes_the_sims() -> None:
    specs = load_fab(REPO / "mes" / "seed" / "example_fab.json")
    assert len(specs) == 30
    assert [s.port for s in specs] == list(range(4841, 4871))
    by_id = {s.tool_id: s for s in specs}
    assert by_id["F1-ETPO01"].kind is ProcessingKind.CLUSTER
    assert by_id["F1-ETPO01"].chambers == ("PM1", "PM2", "PM3", "PM4")
    assert by_id["F1-FUOX01"].max_batch == 6
    assert by_id["F1-MECD01"].family == "metrology"
    assert len(load_fab(REPO / "mes" / "seed" / "example_fab.json", fab="F2")) == 12


def test_example_fab_and_consecutive_ports() -> None:
    specs = load_fab(REPO / "equipment_sims" / "examples" / "fab.json", base_port=5000)
    assert [s.port for s in specs] == list(range(5000, 5000 + len(specs)))
    assert {s.kind for s in specs} == set(ProcessingKind)


def test_fab_file_errors() -> None:
    with pytest.raises(FabFileError, match="processing kind"):
        parse_fab({"tools": [{"code": "X", "tool_group": "NOPE"}]})
    with pytest.raises(FabFileError, match="needs chambers"):
        parse_fab({"tools": [{"code": "X", "processing_kind": "cluster"}]})


# The tool contract, and the certificate helpers both sides use.
SHARED_WITH_SIMS = ("mes.opcua", "mes.opcua.model", "mes.opcua.certificates")


def test_sims_import_nothing_from_mes_but_the_tool_contract() -> None:
    import ast

    for path in (REPO / "equipment_sims").rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name == "mes" or name.startswith("mes."):
                    assert name in SHARED_WITH_SIMS, f"{path}: {name}"
    # What the sims share must not pull the rest of the MES in with it.
    for module in ("model", "certificates"):
        source = (REPO / "mes" / "opcua" / f"{module}.py").read_text("utf-8")
        assert "from mes" not in source, module
        assert "import mes" not in source, module


# --- faults and persisted state ------------------------------------------------------------
def test_breakdown_aborts_the_running_job_and_takes_the_tool_out_of_service() -> None:
    tool = loaded(litho(), LITHO_BODY)
    tool.store(job_order("J1", "R1", ("L1", [1, 2, 3])), start=True)
    tool.advance(80.0)
    alarm = tool.breakdown("BD", "Vacuum pump failure")
    job = tool.jobs["J1"]
    assert (job.state, job.substate) == (JobState.ABORTED, JobSubstate.ABORTED)
    assert (alarm.breaking, alarm.active, alarm.severity) == (True, True, 900)
    assert tool.item_state is MachineryItemState.OUT_OF_SERVICE
    tool.breakdown("BD2", "again, idle")  # no job: only the alarm
    tool.clear_alarm("BD")
    tool.clear_alarm("BD2")
    assert tool.item_state is MachineryItemState.NOT_EXECUTING


def test_recipe_parameters_must_lie_within_their_own_limits() -> None:
    tool = Tool(litho())
    body = {"parameters": [{"name": "dose", "value": 30, "min": 10, "max": 50}]}
    tool.download_recipe("OK", json.dumps(body), "")
    for value, word in ((5, "below"), (51, "above")):
        body["parameters"][0]["value"] = value
        with pytest.raises(Refused, match=word) as refused:
            tool.download_recipe("BAD", json.dumps(body), "")
        assert refused.value.reason == "out_of_range"
    assert list(tool.recipes) == ["OK"]


def test_state_round_trip_mid_job_finishes_like_the_original() -> None:
    from datetime import UTC, datetime, timedelta

    from equipment_sims.state import dump_tool, restore_tool

    start = datetime(2026, 1, 1, tzinfo=UTC)
    original = loaded(etch(), ETCH_BODY)
    original.select_recipe("R1")
    original.store(job_order("J0", "R1", ("L0", [1])), start=True)
    original.advance(200.0)
    j1 = json.loads(job_order("J1", "R1", ("L1", [1, 2, 3, 4, 5])))
    original.store(json.dumps({**j1, "Chambers": ["PM1", "PM2"]}), start=True)
    original.advance(300.0)
    original.chamber_down("PM3")
    original.raise_alarm("A1", "warning", breaking=False)
    data = json.loads(json.dumps(dump_tool(original, start)))

    # Read back under a clock that started 100 s later: every time moves by -100 s.
    copy = Tool(etch())
    restore_tool(copy, data, start + timedelta(seconds=100))
    assert copy.now == original.now - 100
    assert copy.selected_recipe == "R1"
    assert set(copy.recipes) == {"R1"}
    assert copy.wafers_processed_total == original.wafers_processed_total
    assert copy.alarms["A1"].text == "warning"
    assert copy.stations["PM3"].state is ChamberState.DOWN
    assert copy.jobs["J1"].chambers == ("PM1", "PM2")  # a restarted tool keeps to them
    original.advance(5000.0)
    copy.advance(4900.0)
    assert copy.job_response("J1") | {"StartTime": 0, "EndTime": 0} == original.job_response(
        "J1"
    ) | {"StartTime": 0, "EndTime": 0}
    assert copy.jobs["J1"].ended_at == original.jobs["J1"].ended_at - 100  # type: ignore[operator]
    assert copy.wafers_processed_total == original.wafers_processed_total == 6
    assert {w.chamber for w in copy.jobs["J1"].wafers} == {"PM1", "PM2"}


def test_state_file_is_written_atomically(tmp_path: Path) -> None:
    from equipment_sims.state import read_state, write_state

    path = tmp_path / "sub" / "T.json"
    assert read_state(path) is None
    write_state(path, {"a": 1})
    write_state(path, {"a": 2})
    assert read_state(path) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["T.json"]


def test_state_of_another_tool_is_refused() -> None:
    from datetime import UTC, datetime

    from equipment_sims.state import dump_tool, restore_tool

    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="not this tool"):
        restore_tool(Tool(litho("OTHER")), dump_tool(Tool(litho()), now), now)


def test_random_fault_schedule_is_seeded_and_keeps_its_rate() -> None:
    from equipment_sims.faults import KINDS, FaultSchedule

    def run(seed: int, step: float) -> list[tuple[float, str]]:
        schedule = FaultSchedule(2.0, seed=seed, tool_id="T1")
        out = []
        t = 0.0
        while t < 100 * 3600:
            t += step
            out += [(o.at, o.kind) for o in schedule.due(t)]
        return out

    first = run(7, 60.0)
    assert first == run(7, 900.0)  # however often it is asked
    assert first != run(8, 60.0)
    assert [at for at, _ in first] == sorted(at for at, _ in first)
    per_kind = {kind: sum(k == kind for _, k in first) for kind in KINDS}
    assert all(120 < n < 290 for n in per_kind.values()), per_kind  # 200 expected each
    assert FaultSchedule(0.0, seed=1, tool_id="T1").due(1e9) == []
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultSchedule(1.0, seed=1, tool_id="T1", kinds=("meteor",))
