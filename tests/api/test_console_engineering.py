"""The console's engineering pages over HTTP (routes with versions, change and activation;
qualification matrix; dispatch rule sets) and the lot page's future hold and merge: the same
data as the API, the same service functions behind the forms, refused for roles that may not."""

from __future__ import annotations

import re

from tests.api.test_console_http import browser, sign_in, start_lot
from tests.api.test_routes_api import SOUND_STEPS
from tests.conftest import ROLE_PASSWORD, TESTER, TESTER_PASSWORD

HX = {"HX-Request": "true"}


async def test_routes_versions_changes_and_activation_with_an_e_signature(client):
    added = await client.post("/api/v1/routes/R-TESTWF/versions", json={"steps": SOUND_STEPS})
    assert added.status_code == 201, added.text
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        listed = await web.get("/console/routes")
        assert listed.status_code == 200
        assert 'href="/console/routes/R-TESTWF/versions/2"' in listed.text
        assert 'href="/console/routes/R-LOGIC28/versions/1"' in listed.text
        page = await web.get("/console/routes/R-TESTWF/versions/2")
        assert page.status_code == 200
        steps = re.findall(r"<tr><td class=\"num\">(\d+)</td>", page.text)
        assert steps == ["10", "20", "30"]
        assert 'id="route-diff"' in page.text  # v1 had five steps: the change is listed
        assert "removed" in page.text
        assert 'id="activate-dialog"' in page.text
        form = {"csrf": csrf, "key": "activate-1234567", "reason": "new flow approved"}
        wrong = await web.post(
            "/console/routes/R-TESTWF/versions/2/activate",
            data={**form, "password": "not-my-password"},
            headers=HX,
        )
        assert "auth.invalid_credentials" in wrong.text or "auth.signature" in wrong.text
        route = (await client.get("/api/v1/routes/R-TESTWF")).json()
        assert route["active_version"] == 1
        done = await web.post(
            "/console/routes/R-TESTWF/versions/2/activate",
            data={**form, "key": "activate-7654321", "password": TESTER_PASSWORD},
            headers=HX,
        )
        assert "version 2 is active" in done.text, done.text
        route = (await client.get("/api/v1/routes/R-TESTWF")).json()
        assert route["active_version"] == 2
        assert route["versions"][1]["activated_by"] == TESTER
        again = await web.get("/console/routes/R-TESTWF/versions/2")
        assert 'id="activate-dialog"' not in again.text
        missing = await web.get("/console/routes/R-NOPE/versions/1")
        assert missing.status_code == 404
        assert "route.not_found" in missing.text


async def test_an_operator_is_not_offered_activation_and_is_refused_it(client):
    await client.post("/api/v1/routes/R-TESTWF/versions", json={"steps": SOUND_STEPS})
    async with browser(client) as web:
        csrf = await sign_in(web, "t-operator", ROLE_PASSWORD)
        page = await web.get("/console/routes/R-TESTWF/versions/2")
        assert page.status_code == 200
        assert 'id="activate-dialog"' not in page.text
        refused = await web.post(
            "/console/routes/R-TESTWF/versions/2/activate",
            data={"csrf": csrf, "key": "activate-1234567", "reason": "trying it",
                  "password": ROLE_PASSWORD},
            headers=HX,
        )  # fmt: skip
        assert "auth.forbidden" in refused.text
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert route["active_version"] == 1


async def test_qualification_matrix_and_rule_sets_show_what_the_api_has(client, client_as):
    api = (
        await client.get(
            "/api/v1/recipes/qualifications", params={"fab": "F1", "tool_group": "WET_CLEAN"}
        )
    ).json()
    assert api, "the example fab qualifies wet clean recipes"
    async with browser(client) as web:
        await sign_in(web, TESTER, TESTER_PASSWORD)
        page = await web.get("/console/qualifications?fab=F1&tool_group=WET_CLEAN")
        assert page.status_code == 200
        matrix = page.text[page.text.index('id="qual-matrix"') :]
        for q in api:
            assert f'href="/console/tools/{q["tool"]}"' in matrix
            assert f'<th scope="col">{q["recipe"]}</th>' in matrix
        empty = await web.get("/console/qualifications?fab=F1&tool_group=NO_GROUP")
        assert "No standing qualification" in empty.text

        none_yet = await web.get("/console/rule-sets?fab=F1")
        assert "built-in default applies" in none_yet.text
        engineer = client_as("t-engineer")
        for rules in (
            [{"rule": "fifo", "weight": 1, "params": {"scale_s": 3600}}],
            [{"rule": "priority", "weight": 10}, {"rule": "fifo", "weight": 2}],
        ):
            body = {"fab": "F1", "tool_group": "WET_CLEAN", "rules": rules, "note": "wet"}
            published = await engineer.post("/api/v1/dispatch/rule-sets", json=body)
            assert published.status_code == 201, published.text
        shown = await web.get("/console/rule-sets?fab=F1")
        table = shown.text[shown.text.index('id="rule-sets-table"') :].split("</table>")[0]
        assert '<th scope="row">F1/group/WET_CLEAN</th><td class="num">2</td>' in table
        assert "10</span> \u00d7 priority" in table
        assert "2</span> \u00d7 fifo" in table
        assert "scale_s" not in table  # version 1 is history
        history = await web.get("/console/rule-sets?fab=F1&history=true")
        assert "scale_s 3600" in history.text
        assert "(replaced)" in history.text


async def test_future_hold_is_armed_shown_and_cancelled_from_the_lot_page(client):
    lot = await start_lot(client)
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        page = await web.get(f"/console/lots/{lot}")
        assert 'id="future-hold-form"' in page.text
        form = {
            "csrf": csrf,
            "key": "future-12345678",
            "step_sequence": "30",
            "kind": "hold_on_arrival",
            "hold_code": "ENGINEERING",
            "reason": "check CD",
        }
        armed = await web.post(f"/console/lots/{lot}/future-holds", data=form, headers=HX)
        assert "will be held (ENGINEERING) at step 30" in armed.text, armed.text
        api = (await client.get(f"/api/v1/lots/{lot}/future-actions")).json()
        assert [(a["step_sequence"], a["hold_code"]) for a in api] == [(30, "ENGINEERING")]
        shown = await web.get(f"/console/lots/{lot}")
        assert "Armed future holds" in shown.text
        action_id = api[0]["id"]
        bad = await web.post(
            f"/console/lots/{lot}/future-holds",
            data={**form, "key": "future-87654321", "step_sequence": "0"},
            headers=HX,
        )
        assert "lot.future_hold_incomplete" in bad.text
        cancelled = await web.post(
            f"/console/lots/{lot}/future-holds/{action_id}/cancel",
            data={"csrf": csrf, "key": "cancel-12345678"},
            headers=HX,
        )
        assert "cancelled" in cancelled.text
        assert (await client.get(f"/api/v1/lots/{lot}/future-actions")).json() == []


async def test_merge_from_the_lot_page_brings_a_split_lot_back(client):
    lot = await start_lot(client)
    wafers = (await client.get(f"/api/v1/lots/{lot}")).json()["wafers"]
    split = await client.post(
        f"/api/v1/lots/{lot}/split", json={"wafers": [w["scribe_id"] for w in wafers[:2]]}
    )
    assert split.status_code in (200, 201), split.text
    child = split.json()["child"]["code"]
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        assert 'id="merge-form"' in (await web.get(f"/console/lots/{lot}")).text
        empty = await web.post(
            f"/console/lots/{lot}/merge", data={"csrf": csrf, "key": "merge-00000000"}, headers=HX
        )
        assert "lot.merge_source" in empty.text
        merged = await web.post(
            f"/console/lots/{lot}/merge",
            data={"csrf": csrf, "key": "merge-12345678", "source": child},
            headers=HX,
        )
        assert f"Lot {child} merged into {lot}" in merged.text, merged.text
    after = (await client.get(f"/api/v1/lots/{lot}")).json()
    assert after["wafer_count"] == len(wafers)
    assert (await client.get(f"/api/v1/lots/{child}")).json()["state"] != "Waiting"
