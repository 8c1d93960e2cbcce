"""An SPC chart through the API: its baseline freezes the limits (worked out here), a shift
trips a run rule, the OCAP actions hold the lot and take the tool out of production, and the
engineer's acknowledgement and the lot's release bring the line back. Rules switch per chart,
and limits set by an engineer are a new version."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.problems import assert_problem

SIGNED = {"signature": {"reason": "measurement plan reviewed"}}
TOOL = "F1-WETC01"
OPERATION = "PAD_OX_CLEAN"
THK = {"name": "THK", "unit": "nm", "wafers": [1, 3], "sites": 2, "lsl": 80.0, "usl": 120.0}
# Wafer means of the baseline: two wafers (slots 1 and 3) per lot, three lots.
BASELINE = [99.0, 101.0, 100.0, 102.0, 98.0, 100.0]
CENTER = 100.0
SIGMA = 2.2 / 1.128379  # mean moving range / d2(2)


@pytest.fixture
async def chart(client: httpx.AsyncClient, client_as: Any) -> dict[str, Any]:
    plan = {"name": "CLEAN-THK", "operation": OPERATION, "body": {"parameters": [THK]}}
    assert (await client.post("/api/v1/quality/plans", json=plan)).status_code == 201
    async with client_as("t-engineer") as second:
        approved = await second.post(
            "/api/v1/quality/plans/CLEAN-THK/versions/1/approve", json=SIGNED
        )
        assert approved.status_code == 200, approved.text
    created = await client.post(
        "/api/v1/quality/charts",
        json={
            "code": "THK-WETC01",
            "plan": "CLEAN-THK",
            "parameter": "THK",
            "context": {"tool": TOOL, "operation": OPERATION},
            "kind": "individuals",
            "baseline_points": len(BASELINE),
            "next_lots": 3,
            "actions": {"*": ["hold_lot", "inhibit_tool", "notify"]},
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["limits"] is None
    return dict(created.json())


async def _run(client: httpx.AsyncClient, slot1: float, slot3: float) -> dict[str, Any]:
    """A lot through step 10 on the tool, measured: each wafer's two sites average its value."""
    lot = await client.post("/api/v1/lots", json={"product": "LOGIC28", "fab": "F1"})
    assert lot.status_code == 201, lot.text
    code = lot.json()["code"]
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": TOOL})
    assert tin.status_code == 200, tin.text
    values = [
        {"parameter": "THK", "slot": slot, "site": site, "value": mean + delta}
        for slot, mean in ((1, slot1), (3, slot3))
        for site, delta in ((1, -0.5), (2, 0.5))
    ]
    out = await client.post(f"/api/v1/lots/{code}/track-out", json={"edc": values})
    assert out.status_code == 200, out.text
    return dict(out.json())


async def _baseline(client: httpx.AsyncClient) -> None:
    for first, second in zip(BASELINE[::2], BASELINE[1::2], strict=True):
        lot = await _run(client, first, second)
        assert lot["state"] == "Waiting"  # baseline points are not judged


async def test_baseline_freezes_limits_and_a_shift_holds_the_lot_and_stops_the_tool(client, chart):
    await _baseline(client)
    data = (await client.get(f"/api/v1/quality/charts/{chart['id']}")).json()
    limits = data["chart"]["limits"]
    assert (limits["version"], limits["source"]) == (1, "baseline")
    assert (limits["baseline_first"], limits["baseline_last"]) == (1, 6)
    assert limits["center"] == pytest.approx(CENTER)
    assert limits["sigma_within"] == pytest.approx(SIGMA)
    assert limits["ucl"] == pytest.approx(CENTER + 3 * SIGMA)
    assert [p["value"] for p in data["points"]] == pytest.approx(BASELINE)
    assert {p["limits_version"] for p in data["points"]} == {None}

    # In control: the next lot moves on.
    assert (await _run(client, 101.0, 99.0))["state"] == "Waiting"
    # A shift beyond 3 sigma (still inside the specification): rule 1 at point 9.
    held = await _run(client, 108.0, 100.0)
    assert (held["state"], held["step"]["sequence"]) == ("OnHold", 10)
    detail = (await client.get(f"/api/v1/lots/{held['code']}")).json()
    assert [h["hold_code"] for h in detail["holds"]] == ["SPC"]
    tool = (await client.get(f"/api/v1/equipment/{TOOL}")).json()
    assert (tool["e10_state"], tool["e10_substate"]) == ("UDT", "UDT.SPC")
    blocked = (await client.get(f"/api/v1/dispatch/tools/{TOOL}/list")).json()["tool_blocked"]
    assert blocked is not None

    data = (await client.get(f"/api/v1/quality/charts/{chart['id']}")).json()
    by_number = {p["number"]: p for p in data["points"]}
    assert [n for n, p in by_number.items() if p["violations"]] == [9]
    assert by_number[9]["violations"] == ["nelson_1"]
    assert by_number[9]["zone"] == pytest.approx((108.0 - CENTER) / SIGMA)
    assert (by_number[9]["lot"], by_number[9]["slot"]) == (held["code"], 1)
    assert data["zones"]["+3s"] == pytest.approx(CENTER + 3 * SIGMA)
    assert data["capability"]["cpk"] is not None

    inbox = (await client.get("/api/v1/quality/violations", params={"open": True})).json()
    (violation,) = inbox["items"]
    assert (violation["rule"], violation["point_number"], violation["lot"]) == (
        "nelson_1",
        9,
        held["code"],
    )
    assert [(a["action"], a.get("inhibited")) for a in violation["actions"]["done"]] == [
        ("hold_lot", None),
        ("inhibit_tool", "tool"),
        ("notify", None),
    ]
    # The tool takes no lot while inhibited, and a plain state change does not bring it back.
    lot = (await client.post("/api/v1/lots", json={"product": "LOGIC28", "fab": "F1"})).json()
    refused = await client.post(f"/api/v1/lots/{lot['code']}/track-in", json={"tool": TOOL})
    assert refused.status_code == 409
    by_hand = await client.post(
        f"/api/v1/equipment/{TOOL}/state", json={"state": "SBY", "version": tool["version"]}
    )
    body = assert_problem(by_hand, 409, "spc.tool_inhibited")
    assert body["violations"] == [violation["id"]]

    # The OCAP closure: acknowledged with a comment, the tool returns; then the lot's release.
    ack = await client.post(
        f"/api/v1/quality/violations/{violation['id']}/acknowledge",
        json={"comment": "re-measured: tool offset, recalibrated", "release_tool": True},
    )
    assert ack.status_code == 200, ack.text
    assert ack.json()["acknowledged_by"] == "tester"
    assert ack.json()["actions"]["release"] == f"{TOOL} back to SBY.NO_PRODUCT"
    assert (await client.get(f"/api/v1/equipment/{TOOL}")).json()["e10_state"] == "SBY"
    twice = await client.post(
        f"/api/v1/quality/violations/{violation['id']}/acknowledge", json={"comment": "again"}
    )
    assert_problem(twice, 409, "spc.already_acknowledged")
    released = await client.post(
        f"/api/v1/lots/{held['code']}/release",
        json={"hold_code": "SPC", "signature": {"reason": "OCAP closed"}},
    )
    assert released.status_code == 200, released.text
    assert released.json()["state"] == "Waiting"
    again = await client.post(f"/api/v1/lots/{lot['code']}/track-in", json={"tool": TOOL})
    assert again.status_code == 200, again.text
    audit = await client.get("/api/v1/audit", params={"target_type": "spc_violation"})
    assert {e["operation"] for e in audit.json()["items"]} >= {
        "lots.track_out",
        "quality.acknowledge",
    }


async def test_rules_switch_per_chart_and_engineers_set_limits_as_new_versions(client, chart):
    await _baseline(client)
    patched = await client.patch(
        f"/api/v1/quality/charts/{chart['id']}", json={"rules": {"enabled": ["nelson_2"]}}
    )
    assert patched.status_code == 200, patched.text
    # Beyond 3 sigma, but rule 1 is switched off on this chart: no violation, the lot moves on.
    assert (await _run(client, 108.0, 100.0))["state"] == "Waiting"
    assert (await client.get("/api/v1/quality/violations")).json()["total"] == 0

    manual = await client.post(
        f"/api/v1/quality/charts/{chart['id']}/limits",
        json={"center": 100.0, "sigma": 1.0, "reason": "target re-centred after PM"},
    )
    assert manual.status_code == 201, manual.text
    assert (manual.json()["version"], manual.json()["source"], manual.json()["ucl"]) == (
        2,
        "engineer",
        103.0,
    )
    window = await client.post(
        f"/api/v1/quality/charts/{chart['id']}/limits",
        json={"first": 1, "last": 6, "reason": "baseline again"},
    )
    assert window.json()["center"] == pytest.approx(CENTER)
    history = (await client.get(f"/api/v1/quality/charts/{chart['id']}/limits")).json()
    assert [(h["version"], h["source"]) for h in history] == [
        (1, "baseline"),
        (2, "engineer"),
        (3, "baseline"),
    ]
    bad = await client.post(
        f"/api/v1/quality/charts/{chart['id']}/limits", json={"first": 3, "reason": "half"}
    )
    assert_problem(bad, 422, "spc.invalid_limits")
    flat = await client.post(
        f"/api/v1/quality/charts/{chart['id']}/limits", json={"sigma": 0, "reason": "x"}
    )
    assert_problem(flat, 422, "request.invalid")


async def test_chart_refusals(client, chart):
    body = {"code": "X", "plan": "CLEAN-THK", "parameter": "NOPE"}
    assert_problem(
        await client.post("/api/v1/quality/charts", json=body), 422, "spc.unknown_parameter"
    )
    dup = {"code": "THK-WETC01", "plan": "CLEAN-THK", "parameter": "THK"}
    assert_problem(
        await client.post("/api/v1/quality/charts", json=dup), 409, "spc.duplicate_chart"
    )
    rule = {"code": "Y", "plan": "CLEAN-THK", "parameter": "THK", "actions": {"nelson_99": []}}
    assert_problem(await client.post("/api/v1/quality/charts", json=rule), 422, "spc.unknown_rule")
    assert_problem(await client.get("/api/v1/quality/charts/999999"), 404, "spc.chart_not_found")
    ack = await client.post("/api/v1/quality/violations/999999/acknowledge", json={"comment": "x"})
    assert_problem(ack, 404, "spc.violation_not_found")


async def test_hold_next_lots_holds_what_runs_after_the_excursion_until_acknowledged(client, chart):
    await client.patch(
        f"/api/v1/quality/charts/{chart['id']}",
        json={"actions": {"*": ["notify", "hold_next_lots"]}},
    )
    await _baseline(client)
    # The violating lot itself moves on (no hold_lot on this chart); the next 3 lots out of the
    # tool are held, whatever they measure.
    assert (await _run(client, 108.0, 100.0))["state"] == "Waiting"
    (violation,) = (await client.get("/api/v1/quality/violations")).json()["items"]
    assert violation["actions"]["done"][1] == {
        "action": "hold_next_lots",
        "result": f"the next 3 lots out of {TOOL} will be held SPC",
    }
    held = await _run(client, 100.0, 100.0)
    assert (held["state"], held["step"]["sequence"]) == ("OnHold", 10)
    detail = (await client.get(f"/api/v1/lots/{held['code']}")).json()
    assert [h["reason"] for h in detail["holds"]] == [
        f"ran on {TOOL} after SPC violation {violation['id']}"
    ]
    # The closure ends the watch: the following lot moves on.
    ack = await client.post(
        f"/api/v1/quality/violations/{violation['id']}/acknowledge", json={"comment": "checked"}
    )
    assert ack.status_code == 200, ack.text
    assert (await _run(client, 100.0, 100.0))["state"] == "Waiting"


async def _first_tool(client: httpx.AsyncClient, group: str) -> str:
    listed = await client.get("/api/v1/equipment", params={"fab": "F1", "tool_group": group})
    return str(listed.json()["items"][0]["code"])


async def test_a_chamber_chart_inhibits_only_its_chamber(client, client_as):
    plan = {
        "name": "NIT-THK",
        "operation": "NITRIDE_DEP",
        "body": {"parameters": [{"name": "THK", "unit": "nm", "wafers": [1], "lsl": 0}]},
    }
    assert (await client.post("/api/v1/quality/plans", json=plan)).status_code == 201
    async with client_as("t-engineer") as second:
        approved = await second.post(
            "/api/v1/quality/plans/NIT-THK/versions/1/approve", json=SIGNED
        )
        assert approved.status_code == 200, approved.text
    dep = "F1-DCVD01"
    created = await client.post(
        "/api/v1/quality/charts",
        json={
            "code": "NIT-PM2",
            "plan": "NIT-THK",
            "parameter": "THK",
            "context": {"tool": dep, "chamber": "PM2"},
            "actions": {"*": ["inhibit_chamber", "notify"]},
        },
    )
    chart_id = created.json()["id"]
    # Limits set by the engineer from the start: the first point is judged.
    limits = await client.post(
        f"/api/v1/quality/charts/{chart_id}/limits",
        json={"center": 50.0, "sigma": 1.0, "reason": "from the qualification run"},
    )
    assert (limits.json()["version"], limits.json()["source"]) == (1, "engineer")

    lot = (await client.post("/api/v1/lots", json={"product": "LOGIC28", "fab": "F1"})).json()
    code = lot["code"]
    for group in ("WET_CLEAN", "FURN_OX"):
        tool = await _first_tool(client, group)
        assert (await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": tool})).is_success
        assert (await client.post(f"/api/v1/lots/{code}/track-out", json={})).is_success
    assert (await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": dep})).is_success
    # PM1's wafer is not on this chart (its context names PM2); PM2's is far out.
    out = await client.post(
        f"/api/v1/lots/{code}/track-out",
        json={"edc": [{"parameter": "THK", "slot": 1, "value": 58.0, "chamber": "PM2"}]},
    )
    assert out.status_code == 200, out.text
    assert out.json()["state"] == "Waiting"  # no hold_lot on this chart
    tool = (await client.get(f"/api/v1/equipment/{dep}")).json()
    chambers = {c["name"]: c["e10_substate"] for c in tool["chambers"]}
    assert chambers["PM2"] == "UDT.SPC"
    assert chambers["PM1"] != "UDT.SPC"
    assert tool["e10_state"] in ("SBY", "PRD")  # the other chambers keep it running
    (violation,) = (await client.get("/api/v1/quality/violations")).json()["items"]
    assert violation["chamber"] == "PM2"
    by_hand = await client.post(
        f"/api/v1/equipment/{dep}/state",
        json={"state": "SBY", "chamber": "PM2", "version": tool["version"]},
    )
    assert_problem(by_hand, 409, "spc.tool_inhibited")
    ack = await client.post(
        f"/api/v1/quality/violations/{violation['id']}/acknowledge",
        json={"comment": "PM2 showerhead cleaned", "release_tool": True},
    )
    assert ack.json()["actions"]["release"] == f"{dep}/PM2 back to SBY.NO_PRODUCT"
    tool = (await client.get(f"/api/v1/equipment/{dep}")).json()
    assert {c["name"]: c["e10_state"] for c in tool["chambers"]}["PM2"] == "SBY"
