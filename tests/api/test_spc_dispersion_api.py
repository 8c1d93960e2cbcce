"""The dispersion chart of an X̄-R chart through the API: a wafer whose sites spread beyond the
R chart's upper limit holds its lot (``r_nelson_1``) though its mean is on the centre line, and
the chart data carries each point's range limits. Refusals: a zone rule on a dispersion chart."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.problems import assert_problem

SIGNED = {"signature": {"reason": "measurement plan reviewed"}}
TOOL = "F1-WETC01"
OPERATION = "PAD_OX_CLEAN"
THK = {"name": "THK", "unit": "nm", "wafers": [1, 3], "sites": 2, "lsl": 80.0, "usl": 120.0}
# Baseline: six wafers (three lots), each with two sites 1.0 apart: R̄ = 1.0.
BASELINE = [(99.0, 0.5), (101.0, 0.5), (100.0, 0.5), (102.0, 0.5), (98.0, 0.5), (100.0, 0.5)]
D4_2 = 3.267  # UCL of an R chart of pairs = D4(2)·R̄


async def _chart(client: httpx.AsyncClient, client_as: Any, **rules: Any) -> httpx.Response:
    plan = {"name": "CLEAN-THK-R", "operation": OPERATION, "body": {"parameters": [THK]}}
    assert (await client.post("/api/v1/quality/plans", json=plan)).status_code == 201
    async with client_as("t-engineer") as second:
        approved = await second.post(
            "/api/v1/quality/plans/CLEAN-THK-R/versions/1/approve", json=SIGNED
        )
        assert approved.status_code == 200, approved.text
    return await client.post(
        "/api/v1/quality/charts",
        json={
            "code": "THK-R-WETC01",
            "plan": "CLEAN-THK-R",
            "parameter": "THK",
            "context": {"tool": TOOL, "operation": OPERATION},
            "kind": "xbar_r",
            "subgroup": "wafer",
            "baseline_points": len(BASELINE),
            "actions": {"*": ["hold_lot", "notify"]},
            **({"rules": rules} if rules else {}),
        },
    )


async def _run(client: httpx.AsyncClient, *wafers: tuple[float, float]) -> dict[str, Any]:
    """A lot through step 10 on the tool; per wafer (slots 1, 3): mean and half spread."""
    lot = await client.post("/api/v1/lots", json={"product": "LOGIC28", "fab": "F1"})
    assert lot.status_code == 201, lot.text
    code = lot.json()["code"]
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": TOOL})
    assert tin.status_code == 200, tin.text
    values = [
        {"parameter": "THK", "slot": slot, "site": site, "value": mean + sign * half}
        for slot, (mean, half) in zip((1, 3), wafers, strict=True)
        for site, sign in ((1, -1), (2, 1))
    ]
    out = await client.post(f"/api/v1/lots/{code}/track-out", json={"edc": values})
    assert out.status_code == 200, out.text
    return dict(out.json())


async def test_a_spread_beyond_the_r_chart_limit_holds_the_lot(client, client_as) -> None:
    created = await _chart(client, client_as)
    assert created.status_code == 201, created.text
    chart = created.json()
    assert chart["rules"]["dispersion"] is None  # the kind's default: rule 1 on R
    for first, second in zip(BASELINE[::2], BASELINE[1::2], strict=True):
        assert (await _run(client, first, second))["state"] == "Waiting"

    # In control: ranges 1.0 and 3.0 (below 3.267).
    assert (await _run(client, (100.0, 0.5), (100.0, 1.5)))["state"] == "Waiting"
    # Means on the centre line, but wafer 3's sites 3.4 apart: beyond the R chart's UCL.
    held = await _run(client, (100.0, 0.5), (100.0, 1.7))
    assert (held["state"], held["step"]["sequence"]) == ("OnHold", 10)

    data = (await client.get(f"/api/v1/quality/charts/{chart['id']}")).json()
    by_number = {p["number"]: p for p in data["points"]}
    assert [n for n, p in by_number.items() if p["violations"]] == [10]
    assert by_number[10]["violations"] == ["r_nelson_1"]
    assert by_number[10]["dispersion"] == pytest.approx(3.4)
    assert by_number[10]["dispersion_ucl"] == pytest.approx(D4_2 * 1.0, abs=2e-3)
    assert by_number[10]["dispersion_lcl"] == 0.0
    assert by_number[10]["dispersion_center"] == pytest.approx(1.0)
    assert by_number[1]["dispersion_ucl"] is None  # a baseline point: no limits yet
    inbox = (await client.get("/api/v1/quality/violations", params={"open": True})).json()
    (violation,) = inbox["items"]
    assert (violation["rule"], violation["point_number"], violation["lot"]) == (
        "r_nelson_1",
        10,
        held["code"],
    )


async def test_dispersion_rules_are_switchable_and_zone_rules_refused(client, client_as) -> None:
    refused = await _chart(client, client_as, dispersion=["nelson_5"])
    assert_problem(refused, 422, "request.invalid")
    created = await client.post(
        "/api/v1/quality/charts",
        json={
            "code": "THK-R-OFF",
            "plan": "CLEAN-THK-R",
            "parameter": "THK",
            "context": {"tool": TOOL, "operation": OPERATION},
            "kind": "xbar_r",
            "baseline_points": len(BASELINE),
            "rules": {"dispersion": []},
            "actions": {"r_nelson_1": ["notify"], "*": ["hold_lot"]},
        },
    )
    assert created.status_code == 201, created.text
    for first, second in zip(BASELINE[::2], BASELINE[1::2], strict=True):
        await _run(client, first, second)
    # The same spread with the dispersion rules off: nothing fires.
    assert (await _run(client, (100.0, 0.5), (100.0, 1.7)))["state"] == "Waiting"
    unknown = await client.post(
        "/api/v1/quality/charts",
        json={
            "code": "THK-R-BAD",
            "plan": "CLEAN-THK-R",
            "parameter": "THK",
            "kind": "xbar_r",
            "actions": {"r_nelson_9": ["notify"]},
        },
    )
    assert_problem(unknown, 422, "spc.unknown_rule")
