"""The morning reports on a small history made through the API, every figure worked out by hand.

Fab F1 keeps Europe/Berlin time (UTC+1 in January): day D1 = 2026-01-05 runs from 04 23:00Z
to 05 23:00Z, D2 = 2026-01-06 from 05 23:00Z to 06 23:00Z. Product P-RPT runs a two-step route:
10 CLEAN (WET_CLEAN, area WET) and 20 THK (METRO_THK, area METRO; rework back to 10).

    D1 08:00  start A (4 wafers, normal, due D2 12:00Z), B (3, hot, due D2 06:00Z), C (2, no due)
       08-09  A runs CLEAN                                     move WET 4
       09-10  B runs CLEAN                                     move WET 3
       10-10:30 A runs THK, outcome rework -> back to 10       move METRO 4 (rework THK 4)
       10:30  C: one wafer scrapped (PARTICLES) at CLEAN
       11-12  C held QUALITY (released after 1 h)
       12:00  B held OPERATOR
       13:00  C held QUALITY (stays open)
    D2 08-09  A runs CLEAN                                     move WET 4
       09-09:30 A runs THK, completes (on time)                move METRO 4
       09:30  B released; 09:30-10:00 B runs THK, completes (4 h late)   move METRO 3
    report instant (as_of) = now = D2 10:00Z
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.problems import assert_problem
from tests.api.process_engineering import SIGNED, step
from tests.api.test_console_http import browser, sign_in
from tests.conftest import TESTER, TESTER_PASSWORD, bearer

PASSWORD_SIGNED = {"reason": "reviewed", "password": TESTER_PASSWORD}
D1 = datetime(2026, 1, 5, tzinfo=UTC)
ROUTE = [
    step(10, "CLEAN"),
    step(20, "THK", "METRO_THK", "METK_MEASURE", rework_to_sequence=10, rework_limit=3),
]


async def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 300, response.text
    return dict(response.json())


async def _at(clock: Any, hour: float, day: int = 0) -> None:
    target = D1 + timedelta(days=day, hours=hour)
    clock.advance(target - clock.now())


async def _run(client, lot: str, tool: str, **out: Any) -> None:
    await _ok(await client.post(f"/api/v1/lots/{lot}/track-in", json={"tool": tool}))


async def _out(client, lot: str, **out: Any) -> None:
    await _ok(await client.post(f"/api/v1/lots/{lot}/track-out", json=out))


@pytest.fixture
async def history(client, clock) -> dict[str, str]:
    await _ok(await client.post("/api/v1/products", json={"code": "P-RPT", "name": "report"}))
    body = {"code": "R-RPT", "name": "report", "product": "P-RPT", "steps": ROUTE}
    await _ok(await client.post("/api/v1/routes", json=body))
    await _ok(await client.post("/api/v1/routes/R-RPT/versions/1/activate", json=SIGNED))

    async def start(wafers: int, priority: str, due: str | None) -> str:
        lot = {"product": "P-RPT", "fab": "F1", "wafer_count": wafers, "priority_class": priority}
        if due is not None:
            lot["due_at"] = due
        return str((await _ok(await client.post("/api/v1/lots", json=lot)))["code"])

    a = await start(4, "normal", "2026-01-06T12:00:00Z")
    b = await start(3, "hot", "2026-01-06T06:00:00Z")
    c = await start(2, "normal", None)
    await _run(client, a, "F1-WETC01")
    await _at(clock, 9)
    await _out(client, a)
    await _run(client, b, "F1-WETC01")
    await _at(clock, 10)
    await _out(client, b)
    await _run(client, a, "F1-METK01")
    await _at(clock, 10.5)
    await _out(client, a, outcome="rework")
    wafers = (await _ok(await client.get(f"/api/v1/lots/{c}")))["wafers"]
    scrap = {"wafers": [wafers[0]["scribe_id"]], "reason_code": "PARTICLES"}
    await _ok(
        await client.post(f"/api/v1/lots/{c}/scrap", json={**scrap, "signature": PASSWORD_SIGNED})
    )
    await _at(clock, 11)
    await _ok(
        await client.post(f"/api/v1/lots/{c}/hold", json={"hold_code": "QUALITY", "reason": "look"})
    )
    await _at(clock, 12)
    release = {"hold_code": "QUALITY", "signature": PASSWORD_SIGNED}
    await _ok(await client.post(f"/api/v1/lots/{c}/release", json=release))
    await _ok(
        await client.post(f"/api/v1/lots/{b}/hold", json={"hold_code": "OPERATOR", "reason": "x"})
    )
    await _at(clock, 13)
    await _ok(
        await client.post(
            f"/api/v1/lots/{c}/hold", json={"hold_code": "QUALITY", "reason": "again"}
        )
    )

    await _at(clock, 8, day=1)
    client.headers.update(bearer(TESTER, auth_time=clock.now()))  # tokens last one day
    await _run(client, a, "F1-WETC01")
    await _at(clock, 9, day=1)
    await _out(client, a)
    await _run(client, a, "F1-METK01")
    await _at(clock, 9.5, day=1)
    await _out(client, a)
    release = {"hold_code": "OPERATOR", "signature": PASSWORD_SIGNED}
    await _ok(await client.post(f"/api/v1/lots/{b}/release", json=release))
    await _run(client, b, "F1-METK01")
    await _at(clock, 10, day=1)
    await _out(client, b)
    return {"A": a, "B": b, "C": c}


RANGE = {"fab": "F1", "from": "2026-01-05", "to": "2026-01-06"}


async def _report(client, name: str, **params: Any) -> dict[str, Any]:
    return await _ok(await client.get(f"/api/v1/reports/{name}", params={**RANGE, **params}))


async def test_moves_and_turns_per_area_and_day(client, history):
    report = await _report(client, "moves")
    assert report["range"]["time_zone"] == "Europe/Berlin"
    assert report["range"]["start"] == "2026-01-04T23:00:00Z"
    rows = [
        (r["area"], r["day"], r["lot_moves"], r["wafer_moves"], r["wip_wafers"], r["turns"])
        for r in report["rows"]
    ]
    assert rows == [
        ("METRO", "2026-01-05", 1, 4, 0, None),  # nothing was started when D1 began
        ("METRO", "2026-01-06", 2, 7, 3, 2.3333),  # B (3) waited at THK; A and B moved
        ("WET", "2026-01-05", 2, 7, 0, None),
        ("WET", "2026-01-06", 1, 4, 5, 0.8),  # A (4, back from rework) and C (1 left)
    ]
    # The network report reads UTC days: the same figures here (nothing happened 23:00-00:00).
    network = await _ok(
        await client.get("/api/v1/reports/moves", params={"from": "2026-01-05", "to": "2026-01-06"})
    )
    assert network["range"]["time_zone"] == "UTC"
    assert [(r["area"], r["wafer_moves"], r["turns"]) for r in network["rows"]] == [
        (area, moves, turns) for area, _, _, moves, _, turns in rows
    ]
    other = await _report(client, "moves", fab="F2")
    assert other["rows"] == []


async def test_wip_and_cycle_time_per_product_and_step(client, history):
    report = await _report(client, "wip")
    steps = [
        (s["product"], s["sequence"], s["operation"], s["wip_lots"], s["wip_wafers"],
         s["track_outs"], s["mean_cycle_time_h"])
        for s in report["steps"]
    ]  # fmt: skip
    # CLEAN: A 1 h, B 2 h, A again 22.5 h (from its rework at D1 10:30 to D2 09:00).
    # THK: A 1.5 h (rework), A 0.5 h, B 24 h (D1 10:00 to D2 10:00, on hold most of it).
    assert steps == [
        ("P-RPT", 10, "CLEAN", 1, 1, 3, 8.5),
        ("P-RPT", 20, "THK", 0, 0, 3, 8.6667),
    ]
    # A took 25.5 h, B 26 h: 25.75 h = 1.0729 days. C is the WIP left (1 wafer).
    assert report["products"] == [
        {
            "product": "P-RPT",
            "completed_lots": 2,
            "mean_cycle_time_d": 1.0729,
            "wip_lots": 1,
            "wip_wafers": 1,
        }
    ]


async def test_cycle_time_counts_from_an_arrival_before_the_report_began(client, history):
    # The second day alone: A and B arrived at their steps on the first day.
    report = await _report(client, "wip", **{"from": "2026-01-06", "to": "2026-01-06"})
    steps = [(s["operation"], s["track_outs"], s["mean_cycle_time_h"]) for s in report["steps"]]
    # CLEAN: A 22.5 h (from its rework the day before); THK: A 0.5 h (arrived the same morning)
    # and B 24 h (arrived the day before) = 12.25 h.
    assert steps == [("CLEAN", 1, 22.5), ("THK", 2, 12.25)]


async def test_hold_pareto_ageing_and_escalation(client, history):
    report = await _report(client, "holds")
    assert report["escalate_after_h"] == 24  # the service's default
    # QUALITY: 1 h + 21 h (the open one, up to now); OPERATOR: D1 12:00 to D2 09:30 = 21.5 h.
    assert [
        (c["hold_code"], c["placed"], c["hold_hours"], c["share_pct"], c["cumulative_pct"],
         c["open"])
        for c in report["codes"]
    ] == [
        ("QUALITY", 2, 22.0, 50.57, 50.57, 1),
        ("OPERATOR", 1, 21.5, 49.43, 100.0, 0),
    ]  # fmt: skip
    assert report["codes"][0]["ageing"] == {"< 4 h": 0, "4-24 h": 1, "1-3 d": 0, "> 3 d": 0}
    assert report["escalated"] == []  # 21 h < 24 h
    flagged = await _report(client, "holds", escalate_after_h=20)
    assert [
        (e["lot"], e["hold_code"], e["operation"], e["age_h"]) for e in flagged["escalated"]
    ] == [(history["C"], "QUALITY", "CLEAN", 21.0)]


async def test_scrap_and_rework_pareto(client, history):
    report = await _report(client, "scrap")
    assert report["scrap_by_reason"] == [
        {"key": "PARTICLES", "count": 1, "wafers": 1, "share_pct": 100.0, "cumulative_pct": 100.0}
    ]
    assert [(r["key"], r["wafers"]) for r in report["scrap_by_operation"]] == [("CLEAN", 1)]
    assert [(r["key"], r["count"], r["wafers"]) for r in report["rework_by_operation"]] == [
        ("THK", 1, 4)
    ]
    # D2 alone saw neither.
    d2 = await _report(client, "scrap", **{"from": "2026-01-06"})
    assert (d2["scrap_by_reason"], d2["rework_by_operation"]) == ([], [])


async def test_on_time_delivery_per_product_and_priority(client, history):
    report = await _report(client, "delivery")
    assert [
        (r["priority_class"], r["completed"], r["with_due"], r["on_time"], r["late"],
         r["on_time_pct"], r["mean_lateness_h"])
        for r in report["rows"]
    ] == [
        ("*", 2, 2, 1, 1, 50.0, 4.0),
        ("hot", 1, 1, 0, 1, 0.0, 4.0),
        ("normal", 1, 1, 1, 0, 100.0, None),
    ]  # fmt: skip


async def test_ranges_are_bounded_with_clear_codes(client):
    too_long = await client.get(
        "/api/v1/reports/moves", params={"from": "2025-01-01", "to": "2025-12-31"}
    )
    problem = assert_problem(too_long, 422, "report.range_too_large")
    assert "92" in problem["detail"]
    reversed_ = await client.get(
        "/api/v1/reports/wip", params={"from": "2026-01-05", "to": "2026-01-01"}
    )
    assert_problem(reversed_, 422, "report.invalid_range")
    far = await client.get("/api/v1/reports/holds", params={"from": "9999-12-31"})
    assert_problem(far, 422, "report.invalid_range")
    # The fuzzer's finding: pydantic read ?to=0 as 1970-01-01 (days or seconds since 1970).
    for number in ("0", "20000", "1.5e3"):
        counted = await client.get("/api/v1/reports/moves", params={"to": number})
        assert_problem(counted, 422, "request.invalid")
    assert_problem(
        await client.get("/api/v1/reports/delivery", params={"fab": "NOPE"}), 404, "fab.not_found"
    )
    # By default a report covers yesterday of the fab's calendar.
    default = await _ok(await client.get("/api/v1/reports/scrap", params={"fab": "F2"}))
    assert (default["range"]["first_day"], default["range"]["last_day"]) == (
        "2026-01-04",
        "2026-01-04",
    )


async def test_each_console_report_page_shows_the_apis_figures(client, history):
    async with browser(client) as web:
        await sign_in(web, TESTER, TESTER_PASSWORD)
        query = "?fab=F1&from=2026-01-05&to=2026-01-06"
        expected = {
            "moves": ["Moves and turns", "2.33", "0.80", "METRO", "WET"],
            "wip": ["WIP and cycle time", "8.50", "8.67", "1.07", "P-RPT"],
            "holds": ["Hold Pareto", "QUALITY", "22.0", "50.6 %", "No hold past the threshold"],
            "scrap": ["Scrap and rework", "PARTICLES", "THK", "100.0 %"],
            "delivery": ["On-time delivery", "50.0 %", "0.0 %", "100.0 %", "4.0"],
        }
        for name, needles in expected.items():
            page = await web.get(f"/console/reports/{name}{query}")
            assert page.status_code == 200, (name, page.text[:500])
            assert 'href="/console/reports" aria-current="page"' in page.text  # the nav entry
            for needle in needles:
                assert needle in page.text, (name, needle)
        index = await web.get("/console/reports")
        assert index.headers["location"] == "/console/reports/moves"
        network = await web.get("/console/reports/moves?fab=&from=2026-01-05&to=2026-01-06")
        assert network.status_code == 200
        assert "network" in network.text
        assert "2.33" in network.text
        refused = await web.get("/console/reports/holds?fab=F1&from=2025-01-01&to=2025-12-31")
        assert refused.status_code == 422
        assert "report.range_too_large" in refused.text
        bad_day = await web.get("/console/reports/wip?from=yesterday")
        assert bad_day.status_code == 422
        assert "report.invalid_range" in bad_day.text
