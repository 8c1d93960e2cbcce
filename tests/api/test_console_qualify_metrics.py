"""The console's qualification matrix with qualifying and withdrawing (a tool or one chamber of
it) through the API's services, refusals by problem code, each form offered only to who may use
it; and the metrics page's E10 and OEE charts drawn from the API's figures."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from mes.audit.models import AuditEvent
from tests.api.test_console_http import browser, sign_in
from tests.api.test_equipment_e10_pm import set_state
from tests.conftest import ROLE_PASSWORD, TESTER, TESTER_PASSWORD

HX = {"HX-Request": "true"}
PAGE = "/console/qualifications?fab=F1&tool_group=ETCH_POLY"


async def standing(client, recipe: str) -> list[tuple[int, str, str | None]]:
    rows = (await client.get("/api/v1/recipes/qualifications", params={"recipe": recipe})).json()
    return sorted((q["version"], q["tool"], q["chamber"]) for q in rows)


async def test_an_engineer_withdraws_and_qualifies_from_the_matrix(client, session):
    before = await standing(client, "ETPO_GATE")
    assert (1, "F1-ETPO01", None) in before
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        page = await web.get(PAGE)
        assert 'id="qualify-form"' in page.text
        assert 'id="withdraw-form"' in page.text
        assert '<option value="F1-ETPO01|PM2">F1-ETPO01 PM2</option>' in page.text
        assert (
            '<option value="ETPO_GATE|1|F1-ETPO01|">ETPO_GATE v1 on F1-ETPO01</option>' in page.text
        )
        base = {"csrf": csrf, "fab": "F1", "tool_group": "ETCH_POLY"}
        short = await web.post(
            "/console/qualifications/withdraw",
            data={**base, "key": "withdraw-0000001", "qualification": "ETPO_GATE|1|F1-ETPO01|",
                  "reason": "no"},
            headers=HX,
        )  # fmt: skip
        assert "request.invalid" in short.text
        withdrawn = await web.post(
            "/console/qualifications/withdraw",
            data={**base, "key": "withdraw-0000002", "qualification": "ETPO_GATE|1|F1-ETPO01|",
                  "reason": "chamber matching failed"},
            headers=HX,
        )  # fmt: skip
        assert "ETPO_GATE v1 is no longer qualified on F1-ETPO01." in withdrawn.text
        assert withdrawn.headers["HX-Trigger-After-Swap"] == "mes-changed"
        assert (1, "F1-ETPO01", None) not in await standing(client, "ETPO_GATE")
        again = await web.post(
            "/console/qualifications/withdraw",
            data={**base, "key": "withdraw-0000003", "qualification": "ETPO_GATE|1|F1-ETPO01|",
                  "reason": "once more"},
            headers=HX,
        )  # fmt: skip
        assert "recipe.not_qualified" in again.text
        # Qualified back on one chamber only: the chamber's value names its tool.
        chamber = await web.post(
            "/console/qualifications/qualify",
            data={**base, "key": "qualify-00000001", "version": "ETPO_GATE|1",
                  "tool": "F1-ETPO02", "chamber": "F1-ETPO01|PM2",
                  "expires_at": "2099-01-01T12:00"},
            headers=HX,
        )  # fmt: skip
        assert "ETPO_GATE v1 is qualified on F1-ETPO01 chamber PM2." in chamber.text, chamber.text
        rows = (
            await client.get("/api/v1/recipes/qualifications", params={"tool": "F1-ETPO01"})
        ).json()
        (pm2,) = [q for q in rows if q["recipe"] == "ETPO_GATE" and q["chamber"] == "PM2"]
        assert (pm2["qualified_by"], pm2["expires_at"][:16]) == (TESTER, "2099-01-01T12:00")
        shown = await web.get(PAGE)
        matrix = shown.text[shown.text.index('id="qual-matrix"') :].split("</table>")[0]
        assert "v1 PM2" in matrix
        refusals = [
            ({"version": "ETPO_GATE|1", "chamber": "F1-ETPO01|PM2"}, "recipe.already_qualified"),
            ({"version": "ETPO_GATE|1", "tool": "F1-WETC01"}, "recipe.tool_group_mismatch"),
            ({"version": "ETPO_GATE|1", "chamber": "F1-ETPO01|PM9"}, "tool.chamber_not_found"),
            ({"version": "ETPO_GATE"}, "request.invalid"),
            ({"version": "ETPO_GATE|1", "tool": "F1-ETPO02", "expires_at": "soon"},
             "request.invalid"),
            ({"version": "ETPO_GATE|1", "tool": "F1-ETPO01", "expires_at": "2020-01-01T00:00"},
             "recipe.expiry_in_past"),
        ]  # fmt: skip
        for i, (fields, code) in enumerate(refusals):
            refused = await web.post(
                "/console/qualifications/qualify",
                data={**base, "key": f"refused-{i:08d}", **fields},
                headers=HX,
            )
            assert code in refused.text, (fields, refused.text)
        # Without htmx: back to the same matrix with the message.
        plain = await web.post(
            "/console/qualifications/qualify",
            data={**base, "key": "qualify-00000002", "version": "ETPO_GATE|1",
                  "tool": "F1-ETPO01"},
        )  # fmt: skip
        assert plain.status_code == 303
        assert plain.headers["location"].startswith(PAGE + "&done=ETPO_GATE%20v1%20is%20qualified")
    operations = list(
        await session.scalars(
            select(AuditEvent.operation).where(
                AuditEvent.operation.in_(("recipes.qualify", "recipes.disqualify")),
                AuditEvent.actor == TESTER,
            )
        )
    )
    assert sorted(operations) == ["recipes.disqualify", "recipes.qualify", "recipes.qualify"]


async def test_each_form_is_offered_only_to_who_may_and_refused_to_others(client):
    qualification = "ETPO_GATE|1|F1-ETPO01|"
    async with browser(client) as web:
        csrf = await sign_in(web, "t-operator", ROLE_PASSWORD)
        page = await web.get(PAGE)
        assert page.status_code == 200
        assert 'id="qual-matrix"' in page.text
        assert 'id="qualify-form"' not in page.text
        assert 'id="withdraw-form"' not in page.text
        base = {"csrf": csrf, "fab": "F1", "tool_group": "ETCH_POLY"}
        for path, fields in (
            ("qualify", {"version": "ETPO_GATE|1", "tool": "F1-ETPO02"}),
            ("withdraw", {"qualification": qualification, "reason": "operator tries"}),
        ):
            refused = await web.post(
                f"/console/qualifications/{path}",
                data={**base, "key": f"{path}-12345678", **fields},
                headers=HX,
            )
            assert "auth.forbidden" in refused.text
        no_csrf = await web.post(
            "/console/qualifications/withdraw",
            data={**base, "csrf": "0" * 64, "key": "withdraw-1234567",
                  "qualification": qualification, "reason": "no token"},
        )  # fmt: skip
        assert no_csrf.status_code == 403
    # A supervisor may withdraw (stop a tool at once) but not qualify.
    async with browser(client) as web:
        await sign_in(web, "t-supervisor", ROLE_PASSWORD)
        page = await web.get(PAGE)
        assert 'id="qualify-form"' not in page.text
        assert 'id="withdraw-form"' in page.text
    assert (1, "F1-ETPO01", None) in await standing(client, "ETPO_GATE")


def _titles(svg: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for group, body in re.findall(r'<g data-group="([^"]+)">(.*?)</g>', svg, re.S):
        groups[group] = re.findall(r"<title>([^<]+)</title>", body)
    return groups


async def test_metrics_charts_show_the_api_figures_per_tool_group(client, clock):
    start = clock.now()
    await set_state(client, "F1-WETC01", "UDT", occurred_at=start.isoformat())
    clock.advance(timedelta(hours=2))
    await set_state(client, "F1-WETC01", "SBY")
    clock.advance(timedelta(hours=1))
    now = clock.now()
    async with browser(client) as web:
        await sign_in(web, "t-operator", ROLE_PASSWORD)
        page = await web.get("/console/metrics?fab=F1&hours=24")
    assert page.status_code == 200
    e10 = page.text[page.text.index('<svg id="e10-svg"') :].split("</svg>")[0]
    oee = page.text[page.text.index('<svg id="oee-svg"') :].split("</svg>")[0]
    bars, oee_bars = _titles(e10), _titles(oee)
    assert "WET_CLEAN" in bars
    assert set(bars) == set(oee_bars)
    window = {"fab": "F1", "tool_group": "WET_CLEAN", "start": (now - timedelta(hours=24))
              .isoformat(), "end": now.isoformat()}  # fmt: skip
    api = (await client.get("/api/v1/metrics/equipment", params=window)).json()
    expected = []
    for state in ("PRD", "SBY", "ENG", "SDT", "UDT", "NST"):
        seconds = api["state_seconds"][state]
        if seconds > 0:
            share = seconds / api["total_s"] * 100
            shown = f"{share:.0f} %" if share >= 1 else "<1 %"
            expected.append(f"WET_CLEAN: {state} {shown} ({seconds / 3600:.1f} h of tool time)")
    assert any(": UDT " in t for t in expected)
    assert bars["WET_CLEAN"] == expected
    assert re.search(r'class="seg UDT" data-state="UDT"', e10)
