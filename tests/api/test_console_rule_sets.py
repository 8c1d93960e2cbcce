"""The console's dispatch rule sets page over HTTP: publishing a version (production and shadow)
through the API's service, its refusals by problem code, an operator neither offered the form
nor let through, and the shadow report beside production's choices."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from mes.audit.models import AuditEvent
from tests.api.test_console_http import browser, sign_in
from tests.api.test_dispatch_api import start
from tests.api.test_dispatch_automation import dispatcher
from tests.conftest import ROLE_PASSWORD, TESTER, TESTER_PASSWORD

HX = {"HX-Request": "true"}


def publish_form(csrf: str, key: str, **fields: str) -> dict[str, str]:
    return {"csrf": csrf, "key": key, "fab": "F1", "scope": "group/WET_CLEAN",
            "kind": "production", **fields}  # fmt: skip


async def test_an_engineer_publishes_production_and_shadow_versions_from_the_console(
    client, session
):
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        page = await web.get("/console/rule-sets?fab=F1")
        assert 'id="publish-form"' in page.text
        assert 'value="group/WET_CLEAN"' in page.text
        form = publish_form(
            csrf, "rules-00000001", rule_0="priority", weight_0="10", rule_1="fifo",
            weight_1="2", params_1="scale_s=1800", note="hot lots first",
        )  # fmt: skip
        done = await web.post("/console/rule-sets", data=form, headers=HX)
        assert "F1/group/WET_CLEAN version 1 (production) is published" in done.text, done.text
        assert done.headers["HX-Trigger-After-Swap"] == "mes-changed"
        again = await web.post("/console/rule-sets", data=form, headers=HX)
        assert "already done" in again.text  # the same form key: applied once
        api = (await client.get("/api/v1/dispatch/rule-sets", params={"fab": "F1"})).json()
        assert [(r["scope"], r["version"], r["created_by"]) for r in api] == [
            ("F1/group/WET_CLEAN", 1, TESTER)
        ]
        assert api[0]["rules"] == [
            {"rule": "priority", "weight": 10.0, "params": {}},
            {"rule": "fifo", "weight": 2.0, "params": {"scale_s": 1800.0}},
        ]
        shadow = await web.post(
            "/console/rule-sets",
            data=publish_form(csrf, "rules-00000002", kind="shadow", rule_0="fifo"),
            headers=HX,
        )
        assert "F1/group/WET_CLEAN#shadow version 1 (shadow) is published" in shadow.text
        # Without htmx: redirected back to the page with the message.
        plain = await web.post(
            "/console/rule-sets",
            data=publish_form(csrf, "rules-00000003", scope="", rule_0="fifo", weight_0="1"),
        )
        assert plain.status_code == 303
        assert plain.headers["location"].startswith("/console/rule-sets?done=Rule%20set%20F1%20")
        shown = await web.get("/console/rule-sets?fab=F1")
        table = shown.text[shown.text.index('id="rule-sets-table"') :]
        assert table.count('<tr><th scope="row">') == 3
        # "New version from this": the form filled with that version's rules and scope.
        label = "New version from this: F1/group/WET_CLEAN v"
        link = re.search(rf'start=(\d+)#publish" aria-label="{label}', shown.text)
        assert link is not None
        filled = await web.get(f"/console/rule-sets?fab=F1&start={link.group(1)}")
        assert '<details id="publish" class="panel" open>' in filled.text
        assert 'value="scale_s=1800"' in filled.text
        assert '<option value="group/WET_CLEAN" selected>' in filled.text
    audit = list(
        await session.scalars(
            select(AuditEvent.actor).where(AuditEvent.operation == "dispatch.publish_rule_set")
        )
    )
    assert audit == [TESTER] * 3


async def test_publishing_refusals_show_the_problem_code_and_change_nothing(client):
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        cases = [
            ({"rule_0": "no_such_rule"}, "dispatch.invalid_rule_set"),
            ({}, "dispatch.invalid_rule_set"),  # no rule chosen
            ({"rule_0": "fifo", "weight_0": "heavy"}, "request.invalid"),
            ({"rule_0": "fifo", "params_0": "scale_s"}, "request.invalid"),
            ({"rule_0": "fifo", "scope": "group/NO_GROUP"}, "tool_group.not_found"),
        ]
        for i, (fields, code) in enumerate(cases):
            refused = await web.post(
                "/console/rule-sets",
                data=publish_form(csrf, f"refused-{i:08d}", **fields),
                headers=HX,
            )
            assert code in refused.text, (fields, refused.text)
        no_csrf = await web.post(
            "/console/rule-sets", data=publish_form("0" * 64, "rules-12345678", rule_0="fifo")
        )
        assert no_csrf.status_code == 403
    assert (await client.get("/api/v1/dispatch/rule-sets", params={"fab": "F1"})).json() == []


async def test_an_operator_is_not_offered_the_form_and_is_refused_it(client):
    async with browser(client) as web:
        csrf = await sign_in(web, "t-operator", ROLE_PASSWORD)
        page = await web.get("/console/rule-sets?fab=F1")
        assert page.status_code == 200
        assert 'id="publish-form"' not in page.text
        assert "New version from this" not in page.text
        refused = await web.post(
            "/console/rule-sets",
            data=publish_form(csrf, "rules-00000009", rule_0="no_such_rule"),
            headers=HX,
        )
        assert "auth.forbidden" in refused.text  # before the form is even read
    assert (await client.get("/api/v1/dispatch/rule-sets", params={"fab": "F1"})).json() == []


async def test_the_shadow_report_shows_agreement_and_each_differing_decision(
    client, client_as, db, clock
):
    normal = await start(client)
    hot = await start(client, priority_class="hot")
    body = {"fab": "F1", "tool_group": "WET_CLEAN", "rules": [{"rule": "fifo"}], "shadow": True}
    published = await client_as("t-engineer").post("/api/v1/dispatch/rule-sets", json=body)
    assert published.status_code == 201, published.text
    async with browser(client) as web:
        await sign_in(web, "t-operator", ROLE_PASSWORD)
        before = await web.get("/console/rule-sets?fab=F1")
        assert "No shadow decision in this period" in before.text
        await dispatcher(db, clock).cycle("F1")
        api = (
            await client.get(
                "/api/v1/dispatch/shadow-report",
                params={"fab": "F1", "since": "2026-01-01T00:00:00Z"},
            )
        ).json()
        assert (api["compared"], api["agreed"]) == (2, 1)
        page = await web.get("/console/rule-sets?fab=F1&hours=24")
        report = page.text[page.text.index('id="shadow-report"') :]
        assert "<b>50 %</b>" in report
        rows = report[report.index('id="shadow-differences"') :].split("</table>")[0]
        assert rows.count("<tr><td>") == 1
        production, shadow = rows.split("</td><td>")[2:4]
        assert hot["code"] in production
        assert normal["code"] in shadow
        assert "F1/group/WET_CLEAN#shadow v1: fifo" in shadow
        # The period counts: a window that ends before the cycle has nothing to compare.
        clock.advance(timedelta(hours=3))
        later = await web.get("/console/rule-sets?fab=F1&hours=1")
        assert "No shadow decision in this period" in later.text
