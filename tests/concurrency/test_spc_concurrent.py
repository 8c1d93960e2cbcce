"""Two tools writing points into one SPC chart at once, on PostgreSQL with real commits (a
throw-away database with the example fab): two API clients track lots out of F1-WETC01 and
F1-WETC02 concurrently into a chart whose context is the operation only. No point is lost or
numbered twice; each point is judged on the points committed before it (the chart row is locked
for the track-out), so two points beyond 2 sigma that arrive together fire "2 of 3" exactly
once, at the later of them, with one OCAP action (one held lot), not two and not none."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from mes.auth.tokens import issue_access_token
from mes.check.invariants import check_database
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import throwaway
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.main import create_app
from mes.quality.models import SpcPoint, SpcViolation
from tests.crash.test_database_faults import _prepared

DATABASE_URL = os.environ.get("MES_TEST_DATABASE_URL", "")
SECRET = "spc-concurrency-signing-key-0123456789"
OPERATION = "PAD_OX_CLEAN"
TOOLS = ("F1-WETC01", "F1-WETC02")
THK = {"name": "THK", "unit": "nm", "wafers": [1], "sites": 1, "lsl": 80.0, "usl": 120.0}
BASELINE = [99.0, 101.0, 100.0, 102.0, 98.0, 100.0]  # MR̄ = 2.2: sigma 1.950, 2 sigma 3.90
IN_CONTROL = {TOOLS[0]: [100.6, 100.3, 100.5, 100.2], TOOLS[1]: [99.4, 99.7, 99.5, 99.8]}
SHIFTED = 104.5  # between 2 and 3 sigma above the centre (100.0)


def _auth(user: str) -> dict[str, str]:
    now = SystemClock().now()
    token = issue_access_token(user, secret=SECRET, now=now, ttl=timedelta(hours=1), auth_time=now)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def fab() -> AsyncIterator[tuple[Database, httpx.AsyncClient]]:
    if not DATABASE_URL.startswith("postgresql"):
        pytest.skip("concurrent writers on one chart: PostgreSQL (MES_TEST_DATABASE_URL)")
    url = await throwaway.create_database(DATABASE_URL, prefix="mes_spc_race")
    direct = await _prepared(url)
    app = create_app(Settings(database_url=url, jwt_secret=SecretStr(SECRET)), background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://mes.test") as http:
            yield direct, http
    finally:
        await app.state.db.dispose()
        await direct.dispose()
        await throwaway.drop_database(url, beside=DATABASE_URL)


async def _lot_on(http: httpx.AsyncClient, tool: str) -> str:
    lot = await http.post(
        "/api/v1/lots",
        json={"product": "LOGIC28", "fab": "F1", "wafer_count": 3},
        headers=_auth("engineer"),
    )
    assert lot.status_code == 201, lot.text
    code = str(lot.json()["code"])
    tin = await http.post(
        f"/api/v1/lots/{code}/track-in", json={"tool": tool}, headers=_auth("operator")
    )
    assert tin.status_code == 200, tin.text
    return code


async def _out(http: httpx.AsyncClient, code: str, value: float) -> dict[str, Any]:
    edc = [{"parameter": "THK", "slot": 1, "site": 1, "value": value}]
    out = await http.post(
        f"/api/v1/lots/{code}/track-out", json={"edc": edc}, headers=_auth("operator")
    )
    assert out.status_code == 200, out.text
    return dict(out.json())


async def test_two_tools_into_one_chart_lose_nothing_and_act_once(fab) -> None:
    direct, http = fab
    signed = {"signature": {"reason": "plan reviewed"}}
    plan = {"name": "CLEAN-THK1", "operation": OPERATION, "body": {"parameters": [THK]}}
    made = await http.post("/api/v1/quality/plans", json=plan, headers=_auth("engineer"))
    assert made.status_code == 201, made.text
    approved = await http.post(
        "/api/v1/quality/plans/CLEAN-THK1/versions/1/approve",
        json=signed,
        headers=_auth("engineer2"),
    )
    assert approved.status_code == 200, approved.text
    chart = await http.post(
        "/api/v1/quality/charts",
        json={
            "code": "THK-CLEAN",
            "plan": "CLEAN-THK1",
            "parameter": "THK",
            "context": {"operation": OPERATION},  # both tools write here
            "kind": "individuals",
            "baseline_points": len(BASELINE),
            "rules": {"enabled": ["nelson_1", "nelson_2", "nelson_5", "nelson_6"]},
            "actions": {"*": ["hold_lot", "notify"]},
        },
        headers=_auth("engineer"),
    )
    assert chart.status_code == 201, chart.text
    chart_id = chart.json()["id"]
    for i, value in enumerate(BASELINE):
        await _out(http, await _lot_on(http, TOOLS[i % 2]), value)

    # Both tools at once, four in-control lots each (their track-outs interleave) ...
    async def tool_run(tool: str, values: list[float]) -> list[str]:
        states = []
        for value in values:
            states.append((await _out(http, await _lot_on(http, tool), value))["state"])
        return states

    results = await asyncio.gather(*(tool_run(t, v) for t, v in IN_CONTROL.items()))
    assert all(state == "Waiting" for states in results for state in states), results
    # ... then one shifted lot each, tracked out at the same moment.
    lots = [await _lot_on(http, tool) for tool in TOOLS]
    outs = await asyncio.gather(*(_out(http, code, SHIFTED) for code in lots))

    async with unit_of_work(direct, write=False) as session:
        points = list(
            await session.scalars(
                select(SpcPoint).where(SpcPoint.chart_id == chart_id).order_by(SpcPoint.number)
            )
        )
        violations = list(
            await session.scalars(select(SpcViolation).where(SpcViolation.chart_id == chart_id))
        )
    total = len(BASELINE) + sum(len(v) for v in IN_CONTROL.values()) + len(TOOLS)
    assert [p.number for p in points] == list(range(1, total + 1)), "a point lost or doubled"
    assert sorted(p.value for p in points[len(BASELINE) :]) == sorted(
        [*IN_CONTROL[TOOLS[0]], *IN_CONTROL[TOOLS[1]], SHIFTED, SHIFTED]
    )
    assert len({p.equipment_id for p in points[len(BASELINE) :]}) == 2  # both tools wrote
    # Exactly one "2 of 3 beyond 2 sigma": at the later shifted point, naming both.
    assert [(v.rule, v.point_number) for v in violations] == [("nelson_5", total)], [
        (v.rule, v.point_number, v.points) for v in violations
    ]
    assert violations[0].points["points"][-2:] == [total - 1, total]
    held = [o for o in outs if o["state"] == "OnHold"]
    assert len(held) == 1, [o["state"] for o in outs]  # one OCAP action, on the later lot
    later = next(p for p in points if p.number == total)
    assert later.lot_id == violations[0].lot_id
    report = await check_database(direct)
    assert report.ok, [v.as_dict() for v in report.violations]
