"""Data collection rules (pure): plan soundness, the sample plan, matching a track-out's values
to the plan (operator entries refused when wrong, tool reports filtered), and the tool's
reports turned into readings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mes.jobs.results import ValueSummary, WaferReport, tool_readings
from mes.lots.commands import Reading
from mes.quality.edc_rules import ParameterSpec, collect, plan_problems, sampled_slots

THK = ParameterSpec.from_json(
    {"name": "THK", "unit": "nm", "source": "metrology", "wafers": [1, 13, 25], "sites": 3,
     "lsl": 90, "target": 100, "usl": 110}
)  # fmt: skip
TEMP = ParameterSpec.from_json(
    {"name": "TEMP", "unit": "C", "source": "pv.ChamberTemperature.mean", "required": False}
)


def test_sound_and_unsound_plans() -> None:
    assert plan_problems([THK, TEMP]) == []
    problems = plan_problems(
        [
            THK,
            ParameterSpec.from_json({"name": "THK"}),
            ParameterSpec.from_json({"name": "T", "source": "pv.X.mean", "sites": 2}),
            ParameterSpec.from_json({"name": "S", "lsl": 5, "usl": 5}),
            ParameterSpec.from_json({"name": "W", "wafers": [0, 3, 3]}),
            ParameterSpec.from_json({"name": "Z", "lsl": 1, "usl": 2, "target": 3}),
        ]
    )
    assert problems == [
        "parameter 'THK' appears more than once",
        "parameter 'T': a process-value statistic is one value per wafer (sites 1)",
        "parameter 'S': lsl must be below usl",
        "parameter 'W': wafers are distinct slots 1..25",
        "parameter 'Z': the target lies outside the specification limits",
    ]
    assert plan_problems([]) == ["a plan needs at least one parameter"]


def test_the_sample_plan_measures_the_sampled_slots_present_or_the_first_wafer() -> None:
    assert sampled_slots(THK, range(1, 26)) == (1, 13, 25)
    assert sampled_slots(THK, [2, 13, 14]) == (13,)
    assert sampled_slots(THK, [4, 2, 7]) == (2,)  # none sampled: the first wafer
    assert sampled_slots(TEMP, [3, 1]) == (1, 3)  # no slots listed: every wafer
    assert sampled_slots(THK, []) == ()


def _sites(slot: int, values: list[float], **extra: object) -> list[Reading]:
    return [
        Reading("THK", v, unit="nm", slot=slot, site=i, **extra)  # type: ignore[arg-type]
        for i, v in enumerate(values, start=1)
    ]


def test_an_operator_must_give_every_required_site_of_every_sampled_wafer() -> None:
    got = collect([THK, TEMP], _sites(1, [100, 101]), [1, 2, 13], by_tool=False)
    assert [(m.parameter, m.slot, m.sites) for m in got.missing] == [
        ("THK", 1, (3,)),
        ("THK", 13, (1, 2, 3)),
    ]  # TEMP is not required
    assert got.invalid == ()
    assert [(v.slot, v.site, v.value) for v in got.values] == [(1, 1, 100.0), (1, 2, 101.0)]


def test_an_operators_wrong_values_are_named() -> None:
    readings = [
        Reading("THK", "thick", slot=1, site=1),
        Reading("THK", 100.0, unit="um", slot=1, site=2),
        Reading("THK", 100.0, slot=2, site=1),
        Reading("THK", 100.0, slot=1, site=4),
        Reading("THK", float("nan"), slot=1, site=3),
        Reading("COLOR", 1, slot=1),
        Reading("THK", 100.0, slot=9, site=1),
        Reading("THK", None, slot=13, site=1),
    ]
    got = collect([THK], readings, [1, 2, 13], by_tool=False)
    assert [(p.parameter, p.slot, p.site, p.reason) for p in got.invalid] == [
        ("THK", 1, 1, "a number is expected, not str"),
        ("THK", 1, 2, "unit 'um'; the plan measures THK in 'nm'"),
        ("THK", 2, 1, "slot 2 is not in the sample plan"),
        ("THK", 1, 4, "site 4 is outside 1..3"),
        ("THK", 1, 3, "the value is not finite"),
        ("COLOR", 1, None, "not a parameter of the plan"),
        ("THK", 9, 1, "slot 9 holds no processed wafer of the lot"),
        ("THK", 13, 1, "a number is expected, not NoneType"),
    ]


def test_the_tools_report_is_filtered_not_refused() -> None:
    # Every wafer, five sites, and process values the plan does not know: only what the plan
    # samples is kept, matched by source; nothing is refused.
    reports = [WaferReport(f"W{slot}", slot, "Processed", "PM1", (99.0, 100.0, 101.0, 102.0, 98.0))
               for slot in (1, 2, 13)]  # fmt: skip
    summaries = [
        ValueSummary("W1", "ChamberTemperature", 400.0, 399.0, 401.0),
        ValueSummary("W1", "RfForwardPower", 500.0, 490.0, 510.0),
        ValueSummary("", "ChamberTemperature", 400.0, 399.0, 401.0),  # the job's own
    ]
    slots = {"W1": 1, "W2": 2, "W13": 13}
    readings = tool_readings(slots, reports, summaries)
    # Sites, the first wafer's two process values, and the job's own on each of the 3 slots.
    assert len(readings) == 3 * 5 + 2 * 3 + 3 * 3
    got = collect([THK, TEMP], readings, [1, 2, 13], by_tool=True)
    assert got.invalid == ()
    assert [(m.parameter, m.slot) for m in got.missing] == []
    assert [(v.parameter, v.slot, v.site, v.value, v.chamber) for v in got.values] == [
        ("TEMP", 1, 1, 400.0, "PM1"),
        ("THK", 1, 1, 99.0, "PM1"),
        ("THK", 1, 2, 100.0, "PM1"),
        ("THK", 1, 3, 101.0, "PM1"),
        ("THK", 13, 1, 99.0, "PM1"),
        ("THK", 13, 2, 100.0, "PM1"),
        ("THK", 13, 3, 101.0, "PM1"),
    ]
    # A tool that measured too few sites leaves the required values missing (the lot is held).
    short = collect([THK], _sites(1, [100.0]), [1], by_tool=True)
    assert [(m.slot, m.sites) for m in short.missing] == [(1, (2, 3))]


def test_job_level_process_values_map_to_a_plan_parameter() -> None:
    # A parameter fed by the job's own summary (over every wafer of the job), sampled on one
    # wafer: the job's mean lands there; the per-wafer summaries do not feed it.
    job_temp = ParameterSpec.from_json(
        {"name": "JOB_TEMP", "unit": "C", "source": "job.pv.ChamberTemperature.mean",
         "wafers": [2], "lsl": 390, "usl": 410}
    )  # fmt: skip
    job_peak = ParameterSpec.from_json(
        {"name": "JOB_PEAK", "unit": "C", "source": "job.pv.ChamberTemperature.max",
         "wafers": [1]}
    )  # fmt: skip
    assert plan_problems([job_temp, job_peak]) == []
    summaries = [
        ValueSummary("W1", "ChamberTemperature", 395.0, 394.0, 396.0),
        ValueSummary("W2", "ChamberTemperature", 405.0, 404.0, 409.0),
        ValueSummary("", "ChamberTemperature", 400.0, 394.0, 409.0),
    ]
    readings = tool_readings({"W1": 1, "W2": 2}, [], summaries)
    got = collect([job_temp, job_peak], readings, [1, 2], by_tool=True)
    assert got.invalid == ()
    assert got.missing == ()
    assert [(v.parameter, v.slot, v.value) for v in got.values] == [
        ("JOB_PEAK", 1, 409.0),
        ("JOB_TEMP", 2, 400.0),
    ]
    # Without a job-level summary (a tool publishing no process values) the value is missing.
    none = collect([job_temp], tool_readings({"W2": 2}, [], []), [2], by_tool=True)
    assert [(m.parameter, m.slot) for m in none.missing] == [("JOB_TEMP", 2)]


def test_integers_and_out_of_spec() -> None:
    count = ParameterSpec.from_json({"name": "N", "kind": "integer"})
    assert collect([count], [Reading("N", 3.0, slot=1)], [1], by_tool=False).invalid == ()
    (bad,) = collect([count], [Reading("N", 3.5, slot=1)], [1], by_tool=False).invalid
    assert bad.reason == "an integer is expected"
    assert not THK.out_of_spec(90.0)
    assert not THK.out_of_spec(110.0)
    assert THK.out_of_spec(89.999)
    assert THK.out_of_spec(110.001)


@given(
    st.lists(st.integers(1, 25), unique=True, min_size=1, max_size=25),
    st.lists(st.integers(1, 25), unique=True, max_size=25),
)
def test_sampled_slots_are_present_and_never_empty_for_a_lot_with_wafers(
    present: list[int], plan: list[int]
) -> None:
    spec = ParameterSpec.from_json({"name": "X", "wafers": plan})
    chosen = sampled_slots(spec, present)
    assert chosen
    assert set(chosen) <= set(present)
    assert set(chosen) == (set(plan) & set(present) if plan else set(present)) or (
        not set(plan) & set(present) and chosen == (min(present),)
    )


@given(st.lists(st.floats(80, 120), min_size=3, max_size=3))
def test_complete_operator_values_are_all_kept(values: list[float]) -> None:
    got = collect([THK], _sites(1, values), [1], by_tool=False)
    assert (got.invalid, got.missing) == ((), ())
    assert [v.value for v in got.values] == values
