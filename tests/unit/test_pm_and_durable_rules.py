from datetime import UTC, datetime, timedelta

import pytest

from mes.durables.rules import (
    DurableKind,
    DurableLocation,
    DurableState,
    DurableView,
    check_move,
    check_use,
)
from mes.equipment.pm_rules import (
    PmPlanView,
    PmStatus,
    PmTrigger,
    PmUsage,
    check_not_due,
    check_plan,
    status,
)
from mes.equipment.states import (
    DEFAULT_SUBSTATES,
    E10State,
    InvalidSubstate,
    UnknownSubstate,
    chambers_up,
    rollup,
    validate_substate,
)
from mes.errors import RuleViolation

T0 = datetime(2026, 3, 1, tzinfo=UTC)
USAGE = PmUsage(since=T0, wafers=900, process_s=95 * 3600)


@pytest.mark.parametrize(
    ("plan", "now", "expected", "used"),
    [
        # 7 days, warn 1 day before: day 5.5 ok, day 6.5 upcoming, day 7 due.
        (PmPlanView("C", PmTrigger.CALENDAR, 7, 1), T0 + timedelta(days=5.5), PmStatus.OK, 5.5),
        (
            PmPlanView("C", PmTrigger.CALENDAR, 7, 1),
            T0 + timedelta(days=6.5),
            PmStatus.UPCOMING,
            6.5,
        ),
        (PmPlanView("C", PmTrigger.CALENDAR, 7, 1), T0 + timedelta(days=7), PmStatus.DUE, 7),
        # 1000 wafers, warn 100 before: 900 used -> upcoming (100 left); 1200 wafers: ok
        (PmPlanView("W", PmTrigger.WAFERS, 1000, 100), T0, PmStatus.UPCOMING, 900),
        (PmPlanView("W", PmTrigger.WAFERS, 1200, 100), T0, PmStatus.OK, 900),
        # 95 process hours used of 90: due, 5 hours over.
        (PmPlanView("H", PmTrigger.PROCESS_HOURS, 90, 10), T0, PmStatus.DUE, 95),
    ],
)
def test_pm_status_by_calendar_wafers_and_hours(plan, now, expected, used):
    state = status(plan, USAGE, now)
    assert state.status == expected
    assert state.used == pytest.approx(used)
    assert state.remaining == pytest.approx(plan.interval - used)


def test_calendar_plan_names_its_due_time():
    state = status(PmPlanView("C", PmTrigger.CALENDAR, 7, 1), USAGE, T0)
    assert state.due_at == T0 + timedelta(days=7)
    assert status(PmPlanView("W", PmTrigger.WAFERS, 10, 1), USAGE, T0).due_at is None


def test_due_pm_blocks_track_in_upcoming_does_not():
    upcoming = status(PmPlanView("W", PmTrigger.WAFERS, 1000, 100), USAGE, T0)
    check_not_due("T1", [upcoming])
    due = status(PmPlanView("H", PmTrigger.PROCESS_HOURS, 90, 10), USAGE, T0)
    with pytest.raises(RuleViolation) as exc:
        check_not_due("T1", [upcoming, due])
    assert exc.value.code == "tool.pm_due"


@pytest.mark.parametrize(("interval", "warning"), [(0, 0), (10, 10), (10, -1)])
def test_plan_needs_positive_interval_and_shorter_warning(interval, warning):
    with pytest.raises(RuleViolation, match=r"interval|warning"):
        check_plan(PmTrigger.WAFERS, interval, warning)


def test_a_calendar_interval_stays_within_the_calendar():
    # 10**9 days put the due date past year 9999: every dispatch list of the tool was a 500.
    check_plan(PmTrigger.CALENDAR, 36_500, 30)
    with pytest.raises(RuleViolation, match="at most 36500 days") as exc:
        check_plan(PmTrigger.CALENDAR, 1e9, 0)
    assert (exc.value.code, exc.value.status) == ("pm.invalid_plan", 422)
    check_plan(PmTrigger.WAFERS, 1e9, 0)  # a wafer count has no calendar to leave


def test_substate_table_decides():
    table = set(DEFAULT_SUBSTATES)
    assert "UDT.NO_SIGNAL" in table
    assert validate_substate(E10State.UDT, "UDT.NO_SIGNAL", table) == "UDT.NO_SIGNAL"
    with pytest.raises(UnknownSubstate):
        validate_substate(E10State.UDT, "UDT.GREMLINS", table)
    with pytest.raises(InvalidSubstate, match="does not belong"):
        validate_substate(E10State.SDT, "UDT.REPAIR", table)
    for code in table:
        validate_substate(E10State(code[:3]), code, table)


def test_chamber_rollup():
    up, sdt, udt, eng, nst = E10State.SBY, E10State.SDT, E10State.UDT, E10State.ENG, E10State.NST
    assert rollup([]) is None
    assert chambers_up([]) is None
    assert rollup([up, udt]) is None
    assert chambers_up([up, udt]) == 1
    assert rollup([eng, udt]) is None
    assert chambers_up([eng, udt]) == 0
    assert rollup([sdt, udt]) == E10State.UDT
    assert rollup([sdt, sdt]) == E10State.SDT
    assert rollup([nst, sdt]) == E10State.SDT
    assert rollup([nst, nst]) == E10State.NST


def _reticle(**kw):
    base = dict(
        code="RT-1",
        kind=DurableKind.RETICLE,
        state=DurableState.AVAILABLE,
        location=DurableLocation.TOOL,
        equipment_id=7,
        usage_count=990,
        usage_limit=1000,
    )
    return DurableView(**{**base, **kw})


@pytest.mark.parametrize(
    ("reticle", "units", "code"),
    [
        (_reticle(), 10, None),  # 990 + 10 = 1000: exactly at the limit is fine
        (_reticle(), 11, "reticle.over_limit"),
        (_reticle(usage_limit=None), 10_000, None),
        (_reticle(equipment_id=8), 1, "reticle.not_at_tool"),
        (_reticle(location=DurableLocation.LIBRARY, equipment_id=None), 1, "reticle.not_at_tool"),
        (_reticle(state=DurableState.ON_HOLD), 1, "reticle.not_available"),
    ],
)
def test_reticle_check_at_track_in(reticle, units, code):
    if code is None:
        check_use(reticle, 7, "T7", units)
        return
    with pytest.raises(RuleViolation) as exc:
        check_use(reticle, 7, "T7", units)
    assert exc.value.code == code


def test_reticle_moves():
    check_move(_reticle(), DurableLocation.LIBRARY, None)
    for bad, to, tool, code in [
        (_reticle(), DurableLocation.TOOL, None, "durable.invalid_move"),
        (_reticle(), DurableLocation.CLEANING, 3, "durable.invalid_move"),
        (_reticle(state=DurableState.RETIRED), DurableLocation.LIBRARY, None, "durable.retired"),
        (_reticle(state=DurableState.ON_HOLD), DurableLocation.TOOL, 3, "durable.not_available"),
    ]:
        with pytest.raises(RuleViolation) as exc:
            check_move(bad, to, tool)
        assert exc.value.code == code
    check_move(_reticle(state=DurableState.ON_HOLD), DurableLocation.CLEANING, None)
