"""Issue 6 through the API: substates, chamber roll-up, signals and unexplained time, PM,
reticles at track-in, carrier cleaning, and E10/E79 metrics over windows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mes.equipment import service as equipment_service
from tests.api.problems import assert_problem
from tests.conftest import NOW, START

SIGNED = {"reason": "checked on the floor"}
T = "/api/v1/equipment"


def iso(dt) -> str:
    return dt.isoformat()


async def version(client, tool: str) -> int:
    return (await client.get(f"{T}/{tool}")).json()["version"]


async def set_state(client, tool: str, state: str, **extra):
    body = {"version": await version(client, tool), "state": state, **extra}
    return await client.post(f"{T}/{tool}/state", json=body)


async def start_lot(client, sequence: int | None = None, wafers: int = 5) -> str:
    response = await client.post(
        "/api/v1/lots", json={"product": "LOGIC28", "fab": "F1", "wafer_count": wafers}
    )
    assert response.status_code == 201, response.text
    code = response.json()["code"]
    if sequence is not None and sequence != 10:
        jumped = await client.post(
            f"/api/v1/lots/{code}/jump", json={"to_sequence": sequence, "signature": SIGNED}
        )
        assert jumped.status_code == 200, jumped.text
    return code


# --- substates -----------------------------------------------------------------------------


async def test_substate_table_is_seeded_and_checked(client):
    table = (await client.get("/api/v1/e10-substates")).json()
    codes = {row["code"]: row["state"] for row in table}
    assert codes["UDT.NO_SIGNAL"] == "UDT"
    assert codes["SDT.CHAMBER_CLEAN"] == "SDT"  # added by the example fab
    unknown = await set_state(client, "F1-WETC01", "UDT", substate="UDT.GREMLINS")
    assert_problem(unknown, 422, "tool.unknown_substate")
    wrong = await set_state(client, "F1-WETC01", "SDT", substate="UDT.REPAIR")
    assert_problem(wrong, 422, "tool.invalid_substate")
    added = await client.post(
        "/api/v1/e10-substates", json={"code": "UDT.GREMLINS", "description": "unexplained"}
    )
    assert added.status_code == 201, added.text
    assert added.json()["state"] == "UDT"
    dup = await client.post(
        "/api/v1/e10-substates", json={"code": "UDT.GREMLINS", "description": "again"}
    )
    assert_problem(dup, 409, "substate.duplicate")
    ok = await set_state(client, "F1-WETC01", "UDT", substate="UDT.GREMLINS")
    assert ok.json()["e10_substate"] == "UDT.GREMLINS"


# --- chambers ------------------------------------------------------------------------------


async def test_all_chambers_down_takes_the_tool_down_and_one_back_brings_it_up(client):
    tool = "F1-ETPO01"
    for name, state in (("PM1", "SDT"), ("PM2", "UDT"), ("PM3", "SDT")):
        await set_state(client, tool, state, chamber=name)
        assert (await client.get(f"{T}/{tool}")).json()["e10_state"] == "SBY"
    body = (await set_state(client, tool, "NST", chamber="PM4")).json()
    assert (body["e10_state"], body["e10_substate"]) == ("UDT", "UDT.ALL_CHAMBERS_DOWN")
    history = (await client.get(f"{T}/{tool}/state-history")).json()["items"]
    assert (history[0]["chamber"], history[0]["source"]) == (None, "system")
    assert history[1]["chamber"] == "PM4"
    back = (await set_state(client, tool, "SBY", chamber="PM3")).json()
    assert (back["e10_state"], back["e10_substate"]) == ("SBY", "SBY.NO_PRODUCT")


async def test_a_chamber_back_while_a_lot_is_on_the_tool_brings_it_back_productive(client, clock):
    tool = "F1-ETPO01"
    code = await start_lot(client, sequence=50)
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool})
    assert tin.status_code == 200, tin.text
    for name in ("PM1", "PM2", "PM3", "PM4"):
        await set_state(client, tool, "UDT", chamber=name)
    assert (await client.get(f"{T}/{tool}")).json()["e10_state"] == "UDT"
    back = (await set_state(client, tool, "SBY", chamber="PM1")).json()
    # The lot is still on the tool: it is producing again, not standing by.
    assert (back["e10_state"], back["e10_substate"]) == ("PRD", "PRD.REGULAR")
    out = await client.post(f"/api/v1/lots/{code}/track-out", json={})
    assert out.status_code == 200, out.text
    assert (await client.get(f"{T}/{tool}")).json()["e10_state"] == "SBY"


async def test_a_back_dated_chamber_change_may_not_reach_before_its_current_state(client, clock):
    tool = "F1-ETPO01"
    clock.advance(timedelta(hours=2))
    assert (await set_state(client, tool, "UDT", chamber="PM2")).status_code == 200
    clock.advance(timedelta(minutes=30))
    earlier = clock.now() - timedelta(hours=1)  # before PM2 went down
    refused = await set_state(client, tool, "SBY", chamber="PM2", occurred_at=earlier.isoformat())
    assert_problem(refused, 422, "tool.time_before_current_state")
    later = clock.now() - timedelta(minutes=10)
    assert (
        await set_state(client, tool, "SBY", chamber="PM2", occurred_at=later.isoformat())
    ).status_code == 200


async def test_track_in_needs_a_chamber_up(client):
    code = await start_lot(client, sequence=50)  # ETCH_POLY
    for name in ("PM1", "PM2", "PM3", "PM4"):
        await set_state(client, "F1-ETPO01", "UDT", chamber=name)
    refused = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-ETPO01"})
    assert_problem(refused, 409, "tool.no_chamber_available")
    await set_state(client, "F1-ETPO01", "SBY", chamber="PM2")
    ok = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-ETPO01"})
    assert ok.status_code == 200, ok.text


# --- signals, silence and corrections ------------------------------------------------------


async def test_breaking_alarm_puts_the_tool_into_udt(client, client_as):
    async with client_as("t-equipment") as adapter:
        alive = await adapter.post(f"{T}/F1-WETC01/signal", json={})
        assert alive.json()["e10_state"] == "SBY"
        alarm = await adapter.post(
            f"{T}/F1-WETC01/signal", json={"alarm": "ALM-1042", "breaking": True}
        )
    assert (alarm.json()["e10_state"], alarm.json()["e10_substate"]) == ("UDT", "UDT.ALARM")
    event = (await client.get(f"{T}/F1-WETC01/state-history")).json()["items"][0]
    assert (event["source"], event["reason"]) == ("tool", "breaking alarm ALM-1042")


async def test_silent_tool_goes_to_no_signal_and_its_time_is_qualified(client, session, clock):
    # The seeded tools were installed at START and have said nothing since.
    await client.post(f"{T}/F1-WETC02/signal", json={})  # this one spoke at NOW
    clock.advance(timedelta(minutes=30))
    silenced = await equipment_service.detect_silent_tools(session, clock, 3600)
    assert "F1-WETC01" in silenced
    assert "F1-WETC02" not in silenced
    tool = (await client.get(f"{T}/F1-WETC01")).json()
    assert (tool["e10_state"], tool["e10_substate"]) == ("UDT", "UDT.NO_SIGNAL")
    # The silent time starts at the last sign of life (here: installation).
    assert tool["state_since"] == iso(START).replace("+00:00", "Z")
    again = await equipment_service.detect_silent_tools(session, clock, 3600)
    assert "F1-WETC01" not in again  # already down: nothing more to say

    unexplained = (await client.get(f"{T}/F1-WETC01/unexplained-time")).json()
    assert [(u["start_at"], u["seconds"]) for u in unexplained] == [
        (iso(START).replace("+00:00", "Z"), 2.5 * 3600)
    ]
    fix = await client.post(
        f"{T}/F1-WETC01/state-corrections",
        json={
            "start_at": iso(START),
            "end_at": iso(START + timedelta(hours=1)),
            "substate": "SDT.FACILITIES",
            "reason": "planned power work, logged late",
        },
    )
    assert fix.status_code == 201, fix.text
    left = (await client.get(f"{T}/F1-WETC01/unexplained-time")).json()
    assert [u["seconds"] for u in left] == [1.5 * 3600]
    # The recorded history is untouched; the correction is its own record.
    history = (await client.get(f"{T}/F1-WETC01/state-history")).json()["items"]
    assert history[0]["substate"] == "UDT.NO_SIGNAL"
    listed = (await client.get(f"{T}/F1-WETC01/state-corrections")).json()
    assert listed[0]["actor"] == "tester"
    m = (
        await client.get(
            "/api/v1/metrics/equipment",
            params={"tool": "F1-WETC01", "start": iso(START), "end": iso(clock.now())},
        )
    ).json()
    assert m["state_seconds"]["SDT"] == 3600
    assert m["state_seconds"]["UDT"] == 1.5 * 3600


async def test_corrections_refuse_bad_intervals(client):
    url = f"{T}/F1-WETC01/state-corrections"
    body = {"substate": "SDT.PM", "reason": "x"}
    future = await client.post(
        url, json={**body, "start_at": iso(NOW), "end_at": iso(NOW + timedelta(hours=1))}
    )
    assert_problem(future, 422, "tool.future_time")
    backwards = await client.post(url, json={**body, "start_at": iso(NOW), "end_at": iso(START)})
    assert_problem(backwards, 422, "tool.invalid_interval")
    before = await client.post(
        url,
        json={**body, "start_at": iso(START - timedelta(days=1)), "end_at": iso(START)},
    )
    assert_problem(before, 422, "tool.invalid_interval")
    unknown = await client.post(
        url, json={**body, "substate": "SDT.NAPPING", "start_at": iso(START), "end_at": iso(NOW)}
    )
    assert_problem(unknown, 422, "tool.unknown_substate")


# --- metrics -------------------------------------------------------------------------------


async def test_metrics_over_windows_that_cut_states(client, clock):
    # Installed SBY at START (06:00). UDT from 06:30, back to SBY 07:00, PRD-less.
    await set_state(client, "F1-WETC01", "UDT", occurred_at=iso(START + timedelta(minutes=30)))
    await set_state(client, "F1-WETC01", "SBY", occurred_at=iso(START + timedelta(hours=1)))
    clock.advance(timedelta(hours=1))  # 09:00
    url = "/api/v1/metrics/equipment"
    whole = (
        await client.get(url, params={"tool": "F1-WETC01", "start": iso(START), "end": iso(NOW)})
    ).json()
    # 06:00-08:00: SBY 1.5 h, UDT 0.5 h, one failure (repaired)
    assert whole["total_s"] == 7200
    assert whole["state_seconds"]["UDT"] == 1800
    assert whole["failures"] == 1
    assert whole["mttr_s"] == 1800
    assert whole["total_uptime"] == pytest.approx(0.75)
    assert whole["mtbf_p_s"] == 0  # no productive time
    assert whole["oee"]["availability"] == pytest.approx(0.75)
    assert whole["oee"]["oee"] is None  # nothing produced: rate efficiency undefined
    # 06:45-07:15 cuts the UDT interval and the SBY after it; the failure began before.
    cut = (
        await client.get(
            url,
            params={
                "tool": "F1-WETC01",
                "start": iso(START + timedelta(minutes=45)),
                "end": iso(START + timedelta(minutes=75)),
            },
        )
    ).json()
    assert (cut["state_seconds"]["UDT"], cut["state_seconds"]["SBY"]) == (900, 900)
    assert (cut["failures"], cut["repairs"]) == (0, 1)
    # A window reaching past now counts up to its end with the current state.
    area = (
        await client.get(
            url,
            params={"area": "WET", "fab": "F1", "start": iso(START), "end": iso(clock.now())},
        )
    ).json()
    assert "F1-WETC01" in area["tools"]
    assert area["total_s"] == 3 * 3600 * len(area["tools"])
    assert area["state_seconds"]["UDT"] == 1800


async def test_metrics_refuse_bad_windows_and_scopes(client):
    url = "/api/v1/metrics/equipment"
    bad = await client.get(url, params={"tool": "F1-WETC01", "start": iso(NOW), "end": iso(START)})
    assert_problem(bad, 422, "metrics.invalid_window")
    chamber = await client.get(url, params={"chamber": "PM1"})
    assert_problem(chamber, 422, "metrics.invalid_scope")
    none = await client.get(url, params={"fab": "F1", "tool_group": "FURN_ANNEAL", "area": "ETCH"})
    assert_problem(none, 404, "metrics.no_tools")


async def test_chamber_metrics(client):
    await set_state(
        client,
        "F1-ETPO01",
        "SDT",
        substate="SDT.PM",
        chamber="PM2",
        occurred_at=iso(START + timedelta(hours=1)),
    )
    m = (
        await client.get(
            "/api/v1/metrics/equipment",
            params={"tool": "F1-ETPO01", "chamber": "PM2", "start": iso(START), "end": iso(NOW)},
        )
    ).json()
    assert (m["state_seconds"]["SBY"], m["state_seconds"]["SDT"]) == (3600, 3600)
    assert (m["pm_count"], m["mtpm_s"]) == (1, 3600)


async def test_oee_counts_runs_and_good_wafers(client, clock):
    code = await start_lot(client, wafers=10)  # step 10: WET_CLEAN, 2400 s for the lot
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01"})
    assert tin.status_code == 200, tin.text
    clock.advance(timedelta(seconds=3000))
    out = await client.post(f"/api/v1/lots/{code}/track-out", json={})
    assert out.status_code == 200, out.text
    m = (
        await client.get(
            "/api/v1/metrics/equipment",
            params={"tool": "F1-WETC01", "start": iso(NOW), "end": iso(clock.now())},
        )
    ).json()
    o = m["oee"]
    assert (o["units"], o["good_units"]) == (10, 10)
    assert o["productive_s"] == 3000
    assert o["theoretical_s"] == pytest.approx(2400)
    assert o["rate_efficiency"] == pytest.approx(2400 / 3000)
    assert o["availability"] == 1.0
    assert o["operational_efficiency"] == 1.0
    assert o["quality"] == 1.0
    assert o["oee"] == pytest.approx(0.8)


# --- preventive maintenance ---------------------------------------------------------------


async def test_pm_by_wafers_blocks_track_in_then_runs_and_completes(client, clock):
    plan = await client.post(
        "/api/v1/pm/plans",
        json={
            "code": "PM-WETC01-W",
            "name": "bath change",
            "tool": "F1-WETC01",
            "trigger": "wafers",
            "interval": 8,
            "warning": 3,
        },
    )
    assert plan.status_code == 201, plan.text
    assert plan.json()["unit"] == "wafers"
    first = await start_lot(client)
    assert (
        await client.post(f"/api/v1/lots/{first}/track-in", json={"tool": "F1-WETC01"})
    ).status_code == 200
    states = (await client.get(f"{T}/F1-WETC01/pm")).json()
    mine = next(s for s in states if s["plan"] == "PM-WETC01-W")
    assert (mine["status"], mine["used"], mine["remaining"]) == ("upcoming", 5, 3)
    # Starting a PM while a lot runs is refused: let it finish.
    busy = await client.post(f"{T}/F1-WETC01/pm/start", json={"plan": "PM-WETC01-W"})
    assert_problem(busy, 409, "pm.tool_busy")
    await client.post(f"/api/v1/lots/{first}/track-out", json={})
    second = await start_lot(client)
    tin = await client.post(f"/api/v1/lots/{second}/track-in", json={"tool": "F1-WETC01"})
    assert tin.status_code == 200  # 5 used, 3 left: still allowed (checked before counting)
    await client.post(f"/api/v1/lots/{second}/track-out", json={})
    third = await start_lot(client)
    refused = await client.post(f"/api/v1/lots/{third}/track-in", json={"tool": "F1-WETC01"})
    body = assert_problem(refused, 409, "tool.pm_due")
    assert body["pm_plans"] == ["PM-WETC01-W"]
    due = (await client.get("/api/v1/pm/due", params={"fab": "F1"})).json()
    assert ("F1-WETC01", "PM-WETC01-W", "due") in {(d["tool"], d["plan"], d["status"]) for d in due}
    assert due[0]["status"] == "due"

    started = await client.post(f"{T}/F1-WETC01/pm/start", json={"plan": "PM-WETC01-W"})
    assert started.status_code == 200, started.text
    tool = (await client.get(f"{T}/F1-WETC01")).json()
    assert (tool["e10_state"], tool["e10_substate"]) == ("SDT", "SDT.PM")
    twice = await client.post(f"{T}/F1-WETC01/pm/start", json={"plan": "PM-WETC01-W"})
    assert_problem(twice, 409, "pm.in_progress")
    leave = await set_state(client, "F1-WETC01", "SBY")
    assert_problem(leave, 409, "pm.in_progress")
    during = await client.post(f"/api/v1/lots/{third}/track-in", json={"tool": "F1-WETC01"})
    assert_problem(during, 409, "tool.not_available")
    due = (await client.get("/api/v1/pm/due", params={"fab": "F1"})).json()
    assert next(d for d in due if d["plan"] == "PM-WETC01-W")["in_progress"] is True

    clock.advance(timedelta(minutes=45))
    done = await client.post(f"{T}/F1-WETC01/pm/complete", json={"notes": "bath changed"})
    assert done.status_code == 200, done.text
    assert done.json()["completed_by"] == "tester"
    assert (await client.get(f"{T}/F1-WETC01")).json()["e10_state"] == "SBY"
    again = await client.post(f"{T}/F1-WETC01/pm/complete", json={})
    assert_problem(again, 409, "pm.not_started")
    mine = next(
        s for s in (await client.get(f"{T}/F1-WETC01/pm")).json() if s["plan"] == "PM-WETC01-W"
    )
    assert (mine["status"], mine["used"]) == ("ok", 0)
    ok = await client.post(f"/api/v1/lots/{third}/track-in", json={"tool": "F1-WETC01"})
    assert ok.status_code == 200, ok.text
    m = (
        await client.get(
            "/api/v1/metrics/equipment",
            params={"tool": "F1-WETC01", "start": iso(NOW), "end": iso(clock.now())},
        )
    ).json()
    assert (m["pm_count"], m["mtpm_s"]) == (1, 45 * 60)


async def test_calendar_pm_of_a_tool_group_comes_due(client_as, clock):
    # The example's weekly scanner PM counts from START: upcoming after 6 days, due after 7.
    clock.advance(START + timedelta(days=6, hours=1) - clock.now())
    async with client_as("tester", auth_time=clock.now()) as later:
        due = (await later.get("/api/v1/pm/due")).json()
    weekly = [d for d in due if d["plan"] == "PM-LI93-WEEK"]
    assert {d["tool"] for d in weekly} == {"F1-LI9301", "F1-LI9302", "F2-LI9301"}
    assert {d["status"] for d in weekly} == {"upcoming"}
    assert weekly[0]["due_at"] == iso(START + timedelta(days=7)).replace("+00:00", "Z")
    clock.advance(timedelta(days=1))
    async with client_as("tester", auth_time=clock.now()) as later:
        due = (await later.get("/api/v1/pm/due")).json()
        assert {d["status"] for d in due if d["plan"] == "PM-LI93-WEEK"} == {"due"}
        code = await start_lot(later, sequence=150)
        lot = (await later.get(f"/api/v1/lots/{code}")).json()
        assert lot["step"]["tool_group"] == "LITHO_193"
        refused = await later.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-LI9301"})
    assert_problem(refused, 409, "tool.pm_due")


async def test_pm_plans_refuse_bad_definitions_and_other_tools(client):
    url = "/api/v1/pm/plans"
    base = {"code": "PM-X", "name": "x", "trigger": "calendar", "interval": 7, "warning": 1}
    both = await client.post(url, json={**base, "tool": "F1-WETC01", "tool_group": "WET_CLEAN"})
    assert_problem(both, 422, "pm.invalid_plan")
    neither = await client.post(url, json=base)
    assert_problem(neither, 422, "pm.invalid_plan")
    warn = await client.post(url, json={**base, "tool": "F1-WETC01", "warning": 7})
    assert_problem(warn, 422, "pm.invalid_plan")
    dup = await client.post(url, json={**base, "code": "PM-LI93-WEEK", "tool": "F1-WETC01"})
    assert_problem(dup, 409, "pm.duplicate")
    other = await client.post(f"{T}/F1-WETC01/pm/start", json={"plan": "PM-LI93-WEEK"})
    assert_problem(other, 409, "pm.not_applicable")
    missing = await client.post(f"{T}/F1-WETC01/pm/start", json={"plan": "PM-NOPE"})
    assert_problem(missing, 404, "pm.plan_not_found")
    plans = (await client.get(url)).json()
    assert {"PM-LI93-WEEK", "PM-ETPO-RF", "PM-FUOX-WAFERS"} <= {p["code"] for p in plans}


# --- reticles ------------------------------------------------------------------------------


async def test_track_in_needs_the_reticle_at_the_tool_under_its_limit(client):
    code = await start_lot(client, sequence=40, wafers=5)  # LITHO_248, recipe names RT-WELL-01
    reticle = (await client.get("/api/v1/durables/RT-WELL-01-A")).json()
    assert (reticle["tool"], reticle["location"], reticle["usage_count"]) == (
        "F1-LI4801",
        "tool",
        0,
    )
    moved = await client.post("/api/v1/durables/RT-WELL-01-A/move", json={"to": "cleaning"})
    assert moved.status_code == 200, moved.text
    away = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-LI4801"})
    body = assert_problem(away, 409, "reticle.not_at_tool")
    assert "RT-WELL-01-A (cleaning)" in body["detail"]
    back = await client.post(
        "/api/v1/durables/RT-WELL-01-A/move", json={"to": "tool", "tool": "F1-LI4801"}
    )
    assert back.status_code == 200, back.text
    limited = await client.post(
        "/api/v1/durables/RT-WELL-01-A/state",
        json={"state": "available", "reason": "new pellicle", "usage_limit": 4},
    )
    assert limited.json()["usage_limit"] == 4
    over = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-LI4801"})
    assert_problem(over, 409, "reticle.over_limit")
    await client.post(
        "/api/v1/durables/RT-WELL-01-A/state",
        json={"state": "on_hold", "reason": "inspection", "usage_limit": 100},
    )
    held = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-LI4801"})
    assert_problem(held, 409, "reticle.not_available")
    await client.post(
        "/api/v1/durables/RT-WELL-01-A/state", json={"state": "available", "reason": "ok"}
    )
    ok = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-LI4801"})
    assert ok.status_code == 200, ok.text
    assert (await client.get("/api/v1/durables/RT-WELL-01-A")).json()["usage_count"] == 5


async def test_durable_moves_are_checked(client):
    url = "/api/v1/durables/RT-GATE-01-S/move"
    assert_problem(await client.post(url, json={"to": "tool"}), 422, "durable.invalid_move")
    assert_problem(
        await client.post(url, json={"to": "tool", "tool": "F2-LI9301"}), 409, "durable.other_fab"
    )
    assert_problem(
        await client.post(url, json={"to": "tool", "tool": "F1-LI4801"}), 409, "durable.wrong_group"
    )
    ok = await client.post(url, json={"to": "tool", "tool": "F1-LI9302"})
    assert ok.json()["tool"] == "F1-LI9302"
    retired = await client.post(
        "/api/v1/durables/RT-GATE-01-S/state", json={"state": "retired", "reason": "scratched"}
    )
    assert retired.json()["state"] == "retired"
    assert_problem(await client.post(url, json={"to": "library"}), 409, "durable.retired")
    listed = (await client.get("/api/v1/durables", params={"design": "RT-GATE-01"})).json()
    assert listed["total"] == 4
    created = await client.post(
        "/api/v1/durables",
        json={"code": "PC-NEW", "design": "PC-LOGIC28", "kind": "probe_card", "fab": "F1"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["location"] == "library"


async def test_carrier_cleaning_cycle(client):
    code = await start_lot(client)
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    carrier = lot.get("carrier")
    target = carrier or "F1-FP0001"
    cleaned = await client.post(f"/api/v1/carriers/{target}/clean")
    if carrier is not None:
        assert_problem(cleaned, 409, "carrier.not_cleanable")  # still holds a lot
        return
    assert cleaned.status_code == 200, cleaned.text
    assert (cleaned.json()["state"], cleaned.json()["cleanings"]) == ("available", 1)


async def test_a_new_wafer_plan_counts_from_its_start_not_from_installation(client):
    # A mature tool: 10 wafers through it before any plan exists.
    for _ in range(2):
        lot = await start_lot(client)
        assert (
            await client.post(f"/api/v1/lots/{lot}/track-in", json={"tool": "F1-WETC01"})
        ).status_code == 200
        await client.post(f"/api/v1/lots/{lot}/track-out", json={})
    plan = await client.post(
        "/api/v1/pm/plans",
        json={
            "code": "PM-WETC-GROUP",
            "name": "bath change, every wet clean",
            "tool_group": "WET_CLEAN",
            "trigger": "wafers",
            "interval": 8,
            "warning": 3,
        },
    )
    assert plan.status_code == 201, plan.text
    states = (await client.get(f"{T}/F1-WETC01/pm")).json()
    mine = next(s for s in states if s["plan"] == "PM-WETC-GROUP")
    assert (mine["status"], mine["used"]) == ("ok", 0)
    lot = await start_lot(client)
    tin = await client.post(f"/api/v1/lots/{lot}/track-in", json={"tool": "F1-WETC01"})
    assert tin.status_code == 200, tin.text  # not blocked by wafers run before the plan


async def test_a_plan_can_be_changed_and_deactivated_and_it_is_audited(client):
    created = await client.post(
        "/api/v1/pm/plans",
        json={
            "code": "PM-WETC01-X",
            "name": "filter change",
            "tool": "F1-WETC01",
            "trigger": "wafers",
            "interval": 4,
            "warning": 1,
        },
    )
    assert created.status_code == 201, created.text
    for _ in range(1):
        lot = await start_lot(client)
        await client.post(f"/api/v1/lots/{lot}/track-in", json={"tool": "F1-WETC01"})
        await client.post(f"/api/v1/lots/{lot}/track-out", json={})
    blocked = await client.post(
        f"/api/v1/lots/{await start_lot(client)}/track-in", json={"tool": "F1-WETC01"}
    )
    assert_problem(blocked, 409, "tool.pm_due")
    longer = await client.patch("/api/v1/pm/plans/PM-WETC01-X", json={"interval": 50})
    assert longer.status_code == 200, longer.text
    states = (await client.get(f"{T}/F1-WETC01/pm")).json()
    assert next(s for s in states if s["plan"] == "PM-WETC01-X")["status"] == "ok"
    off = await client.patch("/api/v1/pm/plans/PM-WETC01-X", json={"active": False})
    assert off.json()["active"] is False
    assert all(s["plan"] != "PM-WETC01-X" for s in (await client.get(f"{T}/F1-WETC01/pm")).json())
    bad = await client.patch("/api/v1/pm/plans/PM-WETC01-X", json={"warning": 60})
    assert bad.status_code == 422, bad.text
    trail = (await client.get("/api/v1/audit", params={"target_type": "pm_plan"})).json()
    assert any((r.get("after") or {}).get("active") is False for r in trail["items"])


async def test_pm_states_of_many_tools_match_one_by_one(client, session, clock):
    """The board reads PM states of all tools at once: the same answers as tool by tool, for
    every trigger, with PMs done, with states changed and qualified after the fact."""
    from sqlalchemy import select

    from mes.equipment import pm
    from mes.equipment.models import Equipment

    for body in (
        {"code": "PMM-W", "tool": "F1-WETC01", "trigger": "wafers", "interval": 8, "warning": 3},
        {"code": "PMM-H", "tool_group": "WET_CLEAN", "trigger": "process_hours", "interval": 1,
         "warning": 0.5},
        {"code": "PMM-C", "tool_group": "WET_CLEAN", "trigger": "calendar", "interval": 1},
    ):  # fmt: skip
        made = await client.post("/api/v1/pm/plans", json={"name": "pm", **body})
        assert made.status_code == 201, made.text
    lot = await start_lot(client)
    assert (
        await client.post(f"/api/v1/lots/{lot}/track-in", json={"tool": "F1-WETC01"})
    ).status_code == 200
    clock.advance(timedelta(minutes=50))
    await client.post(f"/api/v1/lots/{lot}/track-out", json={})
    started = await client.post(f"{T}/F1-WETC01/pm/start", json={"plan": "PMM-W"})
    assert started.status_code == 200, started.text
    clock.advance(timedelta(minutes=20))
    assert (await client.post(f"{T}/F1-WETC01/pm/complete", json={})).status_code == 200
    clock.advance(timedelta(hours=2))
    tools = list(await session.scalars(select(Equipment).order_by(Equipment.code)))
    many = await pm.pm_states_many(session, tools, clock.now())
    one_by_one = {tool.id: await pm.pm_states(session, tool, clock.now()) for tool in tools}
    assert many == one_by_one
    # A board filters by a query of its tools (no list of ids); the scope may hold more tools.
    wet = [tool for tool in tools if tool.code.startswith("F1-WETC")]
    scoped = await pm.pm_states_many(
        session,
        wet,
        clock.now(),
        scope=select(Equipment.id).where(Equipment.fab_id == wet[0].fab_id),
    )
    assert scoped == {tool.id: one_by_one[tool.id] for tool in wet}
    seen = {(st.plan.code, st.status.value) for states in many.values() for st in states}
    # The wafer plan was reset by its PM; the calendar plan is upcoming or due; the process
    # hours plan counted the 50 minutes the lot ran (upcoming: within half an hour of 1 h).
    assert ("PMM-W", "ok") in seen
    assert ("PMM-H", "upcoming") in seen
    assert len([t for t, states in many.items() if states]) >= 2
    # The dispatcher's snapshots read the same states: a tool is PM-due there exactly when a
    # plan of it is due here.
    from mes.dispatch.snapshots import tool_snapshots

    clock.advance(timedelta(days=1))  # the calendar plan comes due
    due_now = {
        tool.id
        for tool in tools
        if any(st.status.value == "due" for st in await pm.pm_states(session, tool, clock.now()))
    }
    snapshots = await tool_snapshots(
        session, [Equipment.id.in_([t.id for t in tools])], clock.now()
    )
    assert due_now
    assert {t.id for t in snapshots if t.pm_due} == due_now
