"""E10/E79 formulas on hand-made histories; every expected number is worked out by hand."""

from datetime import UTC, datetime, timedelta

import pytest

from mes.equipment.metrics import (
    Correction,
    Interval,
    Run,
    add_up,
    apply_corrections,
    clip,
    e10_metrics,
    intervals_from_events,
    oee,
    state_times,
)
from mes.equipment.states import E10State

PRD, SBY, ENG, SDT, UDT, NST = (
    E10State.PRD,
    E10State.SBY,
    E10State.ENG,
    E10State.SDT,
    E10State.UDT,
    E10State.NST,
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def hist(*changes: tuple[float, E10State, str], until: float) -> list[Interval]:
    return intervals_from_events([(h(t), s, sub) for t, s, sub in changes], h(until))


# A 10-hour day: SBY 0-1, PRD 1-4, UDT 4-5 (alarm then repair: one failure), PRD 5-7,
# SDT.PM 7-8, ENG 8-9, NST 9-10.
DAY = hist(
    (0, SBY, "SBY.NO_PRODUCT"),
    (1, PRD, "PRD.REGULAR"),
    (4, UDT, "UDT.ALARM"),
    (4.5, UDT, "UDT.REPAIR"),
    (5, PRD, "PRD.REGULAR"),
    (7, SDT, "SDT.PM"),
    (8, ENG, "ENG.EXPERIMENT"),
    (9, NST, "NST.UNWORKED"),
    until=10,
)


def test_events_become_back_to_back_intervals():
    assert [(iv.start, iv.end, iv.state) for iv in DAY[:2]] == [
        (h(0), h(1), SBY),
        (h(1), h(4), PRD),
    ]
    assert DAY[-1].end == h(10)
    assert sum(iv.seconds for iv in DAY) == 10 * 3600


def test_time_in_each_state_and_the_e10_metrics_of_a_whole_day():
    m = e10_metrics(DAY, h(0), h(10))
    hour = 3600
    assert m.times[PRD] == 5 * hour  # 1-4 and 5-7
    assert m.times[SBY] == 1 * hour
    assert m.times[UDT] == 1 * hour
    assert m.times[SDT] == 1 * hour
    assert m.times[ENG] == 1 * hour
    assert m.times[NST] == 1 * hour
    # total 10 h; operations 9 h; uptime PRD+SBY+ENG = 7 h
    assert m.total_uptime == pytest.approx(7 / 10)
    assert m.operational_uptime == pytest.approx(7 / 9)
    assert m.failures == 1  # ALARM then REPAIR is one UDT episode
    assert m.mtbf_p_s == 5 * hour  # 5 h productive / 1 failure
    assert m.mttr_s == 1 * hour
    assert (m.pm_count, m.mtpm_s) == (1, 1 * hour)
    assert m.operational_utilisation == pytest.approx(5 / 9)
    assert m.total_utilisation == pytest.approx(5 / 10)


def test_window_cuts_intervals_that_straddle_its_edges():
    # Window 3:30-7:30: PRD 3:30-4 (0.5 h), UDT 4-5 (1 h), PRD 5-7 (2 h), SDT.PM 7-7:30 (0.5 h)
    m = e10_metrics(DAY, h(3.5), h(7.5))
    assert m.times.total == 4 * 3600
    assert m.times[PRD] == 2.5 * 3600
    assert m.times[UDT] == 3600
    assert m.times[SDT] == 1800
    assert m.failures == 1
    assert m.mtbf_p_s == 2.5 * 3600
    assert m.pm_count == 1  # the PM overlaps the window: its 0.5 h inside counts
    assert m.mtpm_s == 1800
    assert m.operational_uptime == pytest.approx(2.5 / 4)


def test_a_failure_that_began_before_the_window_is_not_counted_again():
    # Window 4:30-6: UDT 4:30-5 (episode began at 4:00, outside), PRD 5-6.
    m = e10_metrics(DAY, h(4.5), h(6))
    assert m.failures == 0
    assert m.mtbf_p_s is None  # no failure in the window: undefined, not infinite
    assert m.repairs == 1  # but its repair time inside the window is still repair time
    assert m.mttr_s == 1800


def test_window_beyond_the_history_counts_only_covered_time():
    m = e10_metrics(DAY, h(-5), h(2))  # before installation there is no time
    assert m.times.total == 2 * 3600
    assert m.times[SBY] == m.times[PRD] == 3600


def test_empty_window_has_no_ratios():
    m = e10_metrics(DAY, h(20), h(30))
    assert m.times.total == 0
    assert m.total_uptime is None
    assert m.operational_utilisation is None


def test_correction_requalifies_no_signal_time_without_editing_history():
    silent = hist(
        (0, PRD, "PRD.REGULAR"),
        (2, UDT, "UDT.NO_SIGNAL"),
        (5, SBY, "SBY.NO_PRODUCT"),
        until=8,
    )
    # The technician says: 2-4 was a PM, 4-5 really a repair; then corrects 3-3:30 to ENG.
    fixed = apply_corrections(
        silent,
        [
            Correction(h(2), h(4), SDT, "SDT.PM"),
            Correction(h(4), h(5), UDT, "UDT.REPAIR"),
            Correction(h(3), h(3.5), ENG, "ENG.EXPERIMENT"),
        ],
    )
    assert [(iv.start, iv.end, iv.substate) for iv in fixed] == [
        (h(0), h(2), "PRD.REGULAR"),
        (h(2), h(3), "SDT.PM"),
        (h(3), h(3.5), "ENG.EXPERIMENT"),
        (h(3.5), h(4), "SDT.PM"),
        (h(4), h(5), "UDT.REPAIR"),
        (h(5), h(8), "SBY.NO_PRODUCT"),
    ]
    assert silent[1].substate == "UDT.NO_SIGNAL"  # the original is untouched
    m = e10_metrics(fixed, h(0), h(8))
    # SDT.PM 2-3 and 3:30-4 are two PM episodes (ENG in between): 1.5 h / 2
    assert (m.pm_count, m.pm_seconds) == (2, 5400)
    assert m.times[UDT] == 3600
    assert m.failures == 1


def test_correction_past_the_history_end_is_cut():
    short = hist((0, SBY, "SBY.NO_PRODUCT"), until=2)
    fixed = apply_corrections(short, [Correction(h(1), h(5), NST, "NST.SHUTDOWN")])
    assert [(iv.start, iv.end, iv.state) for iv in fixed] == [(h(0), h(1), SBY), (h(1), h(2), NST)]


def test_clip_and_state_times():
    parts = clip(DAY, h(0.5), h(1.5))
    assert state_times(parts)[SBY] == state_times(parts)[PRD] == 1800


def test_group_metrics_add_times_and_counts():
    other = hist((0, UDT, "UDT.REPAIR"), (2, PRD, "PRD.REGULAR"), until=10)
    # DAY: PRD 5 h, UDT 1 h, 1 failure; other: UDT 2 h (began at the window start), PRD 8 h.
    group = add_up([e10_metrics(DAY, h(0), h(10)), e10_metrics(other, h(0), h(10))])
    assert group.times.total == 20 * 3600
    assert group.times[PRD] == 13 * 3600
    assert group.failures == 2  # the other tool's UDT begins at 0, inside [0, 10)
    assert group.mtbf_p_s == 13 * 3600 / 2
    assert group.mttr_s == 3 * 3600 / 2
    assert group.total_utilisation == pytest.approx(13 / 20)


def test_oee_is_availability_times_performance_times_quality():
    times = e10_metrics(DAY, h(0), h(10)).times
    # 40 wafers at 300 s ideal each = 12000 s; 36 good = 10800 s. PRD = 18000 s.
    runs = [Run(300, 25, 25), Run(300, 15, 11)]
    result = oee(times, runs)
    assert result.availability == pytest.approx(7 / 10)  # uptime / total time
    assert result.operational_efficiency == pytest.approx(5 / 7)  # PRD / uptime
    assert result.rate_efficiency == pytest.approx(12000 / 18000)
    assert result.performance == pytest.approx(5 / 7 * 2 / 3)
    assert result.quality == pytest.approx(36 / 40)
    # The product collapses to theoretical time of good units / total time.
    assert result.oee == pytest.approx(10800 / 36000)
    assert (result.units, result.good_units) == (40, 36)


def test_oee_without_production_is_undefined():
    times = e10_metrics(hist((0, SBY, "SBY.NO_PRODUCT"), until=1), h(0), h(1)).times
    result = oee(times, [])
    assert result.availability == 1.0
    assert result.rate_efficiency is None
    assert result.oee is None


def test_only_equipment_dependent_downtime_counts_as_a_failure():
    # PRD 0-4, UDT.FACILITIES 4-5 (a power dip), PRD 5-6, UDT.NO_SIGNAL 6-6.5 (nobody qualified
    # it), PRD 6.5-8, UDT.ALARM 8-8.5 then UDT.FACILITIES 8.5-9 (one episode the tool started),
    # PRD 9-10.
    day = hist(
        (0, PRD, "PRD.REGULAR"),
        (4, UDT, "UDT.FACILITIES"),
        (5, PRD, "PRD.REGULAR"),
        (6, UDT, "UDT.NO_SIGNAL"),
        (6.5, PRD, "PRD.REGULAR"),
        (8, UDT, "UDT.ALARM"),
        (8.5, UDT, "UDT.FACILITIES"),
        (9, PRD, "PRD.REGULAR"),
        until=10,
    )
    m = e10_metrics(day, h(0), h(10))
    assert m.times[UDT] == 2.5 * 3600
    assert (m.failures, m.repairs) == (1, 1)  # only the episode with an equipment substate
    assert m.mtbf_p_s == 7.5 * 3600  # 7.5 h productive / 1 equipment failure
    assert m.mttr_s == 1 * 3600  # its hour, not the facilities and silence time
    assert (m.other_failures, m.other_udt_s) == (2, 1.5 * 3600)
    # Clipped to a window that cuts the facilities episode: counted apart, from the edge.
    part = e10_metrics(day, h(4.5), h(10))
    assert (part.other_failures, part.other_udt_s) == (1, 1.0 * 3600)
    group = add_up([m, part])
    assert (group.failures, group.other_failures) == (2, 3)


def test_a_window_before_the_first_state_has_no_intervals():
    # A tool with no state yet in the window: an empty history, not an error (it was a 500).
    assert hist(until=4) == []
