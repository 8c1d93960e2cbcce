"""Quality through the API: EDC plans approved four-eyes, values at the manual track-out (every
refusal, nothing half-applied), out-of-spec holds, an SPC chart that freezes its baseline,
catches a shift, holds the lot and inhibits the tool, and the engineer's closure."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mes.auth.models import AccountKind
from mes.auth.roles import Role
from mes.auth.service import Principal
from mes.lots import service as lots_service
from mes.lots.commands import Reading, TrackOut
from tests.api.problems import assert_problem

SIGNED = {"signature": {"reason": "measurement plan reviewed"}}
OPERATION = "PAD_OX_CLEAN"  # step 10 of the example routes, on WET_CLEAN tools
TOOL = "F1-WETC01"
THK: dict[str, Any] = {
    "name": "THK",
    "unit": "nm",
    "source": "metrology",
    "wafers": [1, 3],
    "sites": 2,
    "lsl": 80.0,
    "target": 100.0,
    "usl": 120.0,
}
NOTE: dict[str, Any] = {"name": "PARTICLES", "kind": "integer", "required": False}


async def _plan(client: httpx.AsyncClient, client_as: Any, **extra: Any) -> dict[str, Any]:
    body = {"name": "CLEAN-THK", "operation": OPERATION, "body": {"parameters": [THK, NOTE]}}
    created = await client.post("/api/v1/quality/plans", json={**body, **extra})
    assert created.status_code == 201, created.text
    async with client_as("t-engineer") as second:
        approved = await second.post(
            "/api/v1/quality/plans/CLEAN-THK/versions/1/approve", json=SIGNED
        )
    assert approved.status_code == 200, approved.text
    return dict(approved.json())


async def _lot_on_tool(client: httpx.AsyncClient, wafers: int = 5) -> str:
    lot = await client.post(
        "/api/v1/lots", json={"product": "LOGIC28", "fab": "F1", "wafer_count": wafers}
    )
    assert lot.status_code == 201, lot.text
    code = str(lot.json()["code"])
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": TOOL})
    assert tin.status_code == 200, tin.text
    return code


def _thk(value: Any, *, slots: tuple[int, ...] = (1, 3), unit: str = "nm") -> list[dict]:
    return [
        {"parameter": "THK", "slot": slot, "site": site, "value": value, "unit": unit}
        for slot in slots
        for site in (1, 2)
    ]


async def test_a_plan_is_approved_by_a_second_engineer_and_never_changes_after(client, client_as):
    body = {"name": "CLEAN-THK", "operation": OPERATION, "body": {"parameters": [THK]}}
    created = await client.post("/api/v1/quality/plans", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["versions"][0]["status"] == "draft"
    own = await client.post("/api/v1/quality/plans/CLEAN-THK/versions/1/approve", json=SIGNED)
    assert_problem(own, 409, "edc.same_approver")
    async with client_as("t-operator") as operator:
        forbidden = await operator.post(
            "/api/v1/quality/plans/CLEAN-THK/versions/1/approve", json=SIGNED
        )
    assert_problem(forbidden, 403, "auth.forbidden")
    async with client_as("t-engineer") as second:
        approved = await second.post(
            "/api/v1/quality/plans/CLEAN-THK/versions/1/approve", json=SIGNED
        )
        assert approved.status_code == 200, approved.text
        assert (approved.json()["status"], approved.json()["approved_by"]) == (
            "approved",
            "t-engineer",
        )
        changed = await second.put(
            "/api/v1/quality/plans/CLEAN-THK/versions/1/body", json={"parameters": [NOTE]}
        )
        assert_problem(changed, 409, "edc.version_not_draft")
        retired = await second.post(
            "/api/v1/quality/plans/CLEAN-THK/versions/1/obsolete", json=SIGNED
        )
        assert retired.json()["status"] == "obsolete"
    twin = await client.post("/api/v1/quality/plans", json={**body, "name": "CLEAN-THK-2"})
    assert_problem(twin, 409, "edc.duplicate_attachment")
    audit = await client.get(
        "/api/v1/audit", params={"operation": "quality.approve_version", "limit": 50}
    )
    assert audit.status_code == 200, audit.text
    approvals = audit.json()["items"]
    assert approvals
    assert all(e["signature_method"] for e in approvals)


@pytest.mark.parametrize(
    ("parameter", "code"),
    [
        ({**THK, "lsl": 130.0}, "edc.invalid_plan"),  # lsl above usl, target outside
        ({**THK, "source": "pv.ChamberTemperature.mean"}, "edc.invalid_plan"),  # pv: one site
        ({**THK, "source": "thermometer"}, "request.invalid"),
    ],
)
async def test_unsound_plans_are_refused(client, parameter, code):
    body = {"name": "BAD", "operation": OPERATION, "body": {"parameters": [parameter]}}
    assert_problem(await client.post("/api/v1/quality/plans", json=body), 422, code)


async def test_required_values_missing_refuse_the_track_out_and_change_nothing(client, client_as):
    await _plan(client, client_as)
    lot = await _lot_on_tool(client)
    refused = await client.post(f"/api/v1/lots/{lot}/track-out", json={"edc": _thk(100.0)[:3]})
    body = assert_problem(refused, 422, "edc.missing_values")
    # Slots 1 and 3 are sampled, 2 sites each; the fourth value (slot 3, site 2) is missing.
    assert body["missing"] == [{"parameter": "THK", "slot": 3, "sites": [2]}]
    after = (await client.get(f"/api/v1/lots/{lot}")).json()
    assert (after["state"], after["step"]["sequence"]) == ("Running", 10)
    history = (await client.get(f"/api/v1/lots/{lot}/history")).json()
    events = history["items"] if isinstance(history, dict) else history
    assert "TRACK_OUT" not in [e["event_type"] for e in events]
    assert (await client.get("/api/v1/quality/values", params={"lot": lot})).json() == []


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (_thk("thin"), "a number is expected"),
        (_thk(True), "a number is expected"),
        (_thk(100.0, unit="um"), "unit"),
        (_thk(100.0, slots=(1, 2)), "slot 2 is not in the sample plan"),
        ([*_thk(100.0), {"parameter": "COLOR", "slot": 1, "value": 1}], "not a parameter"),
        ([*_thk(100.0), {"parameter": "PARTICLES", "slot": 1, "value": 2.5}], "integer"),
        (_thk(100.0) + _thk(101.0, slots=(1,)), "given twice"),
    ],
)
async def test_wrong_values_refuse_the_track_out(client, client_as, values, reason):
    await _plan(client, client_as)
    lot = await _lot_on_tool(client)
    refused = await client.post(f"/api/v1/lots/{lot}/track-out", json={"edc": values})
    body = assert_problem(refused, 422, "edc.invalid_value")
    assert any(reason in p["reason"] for p in body["invalid"]), body["invalid"]
    assert (await client.get(f"/api/v1/lots/{lot}")).json()["state"] == "Running"


async def test_values_without_a_plan_are_refused(client):
    lot = await _lot_on_tool(client)
    refused = await client.post(f"/api/v1/lots/{lot}/track-out", json={"edc": _thk(100.0)})
    assert_problem(refused, 422, "edc.invalid_value")


async def test_good_values_are_stored_with_their_context_and_the_lot_moves_on(client, client_as):
    await _plan(client, client_as)
    lot = await _lot_on_tool(client)
    values = [*_thk(100.0), {"parameter": "PARTICLES", "slot": 1, "value": 3}]
    out = await client.post(f"/api/v1/lots/{lot}/track-out", json={"edc": values})
    assert out.status_code == 200, out.text
    assert (out.json()["state"], out.json()["step"]["sequence"]) == ("Waiting", 20)
    stored = (await client.get("/api/v1/quality/values", params={"lot": lot})).json()
    assert [(v["parameter"], v["slot"], v["site"], v["value"]) for v in stored] == [
        ("PARTICLES", 1, 1, 3.0),
        ("THK", 1, 1, 100.0),
        ("THK", 1, 2, 100.0),
        ("THK", 3, 1, 100.0),
        ("THK", 3, 2, 100.0),
    ]
    assert {(v["tool"], v["operation"], v["source"]) for v in stored} == {
        (TOOL, OPERATION, "operator")
    }
    assert all(v["scribe_id"] for v in stored)


async def test_a_small_lot_measures_its_first_wafer(client, client_as):
    await _plan(client, client_as)
    lot = await _lot_on_tool(client, wafers=2)  # holds slots 1 and 2: slot 3 is not there
    out = await client.post(f"/api/v1/lots/{lot}/track-out", json={"edc": _thk(100.0, slots=(1,))})
    assert out.status_code == 200, out.text


async def test_out_of_spec_holds_the_lot_at_the_step(client, client_as):
    await _plan(client, client_as)
    lot = await _lot_on_tool(client)
    values = _thk(100.0)
    values[2]["value"] = 125.0  # slot 3 site 1 above the USL
    out = await client.post(f"/api/v1/lots/{lot}/track-out", json={"edc": values})
    assert out.status_code == 200, out.text
    assert (out.json()["state"], out.json()["step"]["sequence"]) == ("OnHold", 10)
    holds = (await client.get(f"/api/v1/lots/{lot}")).json()["holds"]
    assert [h["hold_code"] for h in holds] == ["OUT_OF_SPEC"]
    (violation,) = (await client.get("/api/v1/quality/violations", params={"lot": lot})).json()[
        "items"
    ]
    assert violation["rule"] == "out_of_spec"
    assert violation["points"]["values"] == [{"slot": 3, "site": 1, "value": 125.0}]
    assert [a["action"] for a in violation["actions"]["done"]] == ["hold_lot", "notify"]
    notes = (await client.get("/api/v1/quality/notifications")).json()
    assert [n["violation_id"] for n in notes] == [violation["id"]]
    # The lot cannot be tracked in anywhere until an engineer releases it.
    again = await client.post(f"/api/v1/lots/{lot}/track-in", json={"tool": TOOL})
    assert again.status_code == 409


async def test_a_tools_track_out_is_never_refused_but_missing_values_hold_the_lot(
    client, client_as, session, clock
):
    await _plan(client, client_as)
    lot = await _lot_on_tool(client)
    tool = Principal(0, f"opcua:{TOOL}", AccountKind.SERVICE, frozenset({Role.EQUIPMENT}), None)
    # The tool measured slot 1 only (five sites, more than the plan asks) and reports a
    # process value the plan does not know: kept, ignored; slot 3 is missing.
    readings = (
        *(Reading("metrology", 100.0 + site, slot=1, site=site) for site in range(1, 6)),
        Reading("pv.RfForwardPower.mean", 500.0, slot=1),
    )
    await lots_service.track_out(
        session, lot, TrackOut(readings=readings, by_tool=True), actor=tool, clock=clock
    )
    await session.flush()
    detail = (await client.get(f"/api/v1/lots/{lot}")).json()
    assert (detail["state"], detail["step"]["sequence"]) == ("OnHold", 10)
    assert [(h["hold_code"], h["reason"]) for h in detail["holds"]] == [
        ("EDC_MISSING", "the tool reported no values for THK (plan CLEAN-THK)")
    ]
    stored = (await client.get("/api/v1/quality/values", params={"lot": lot})).json()
    assert [(v["slot"], v["site"], v["value"], v["source"]) for v in stored] == [
        (1, 1, 101.0, "tool"),
        (1, 2, 102.0, "tool"),
    ]
