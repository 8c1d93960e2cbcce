"""The lot page's lot type change (e-signature) and an engineering run released at track-in under
the engineer's e-signature, through the API's services: shown only to who may, refused for an
operator by the same rules as the API."""

from __future__ import annotations

from tests.api.test_console_http import browser, sign_in
from tests.api.test_lot_transactions import start, tools_for
from tests.api.test_lot_types import _history, _tool_to
from tests.conftest import ROLE_PASSWORD, TESTER, TESTER_PASSWORD

HX = {"HX-Request": "true"}


async def test_an_engineer_retypes_a_lot_and_releases_its_run_on_an_eng_tool(client):
    started = await start(client)
    lot, tool = started["code"], (await tools_for(client, started))[0]
    await _tool_to(client, tool, "ENG")
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        page = await web.get(f"/console/lots/{lot}")
        assert 'id="lot-type-dialog"' in page.text
        assert 'id="eng-release"' not in page.text  # a production lot has no engineering run
        form = {"csrf": csrf, "lot_type": "engineering", "reason": "DOE split 4"}
        for fields, code in (
            ({"key": "lottype-0000001"}, "auth.signature_required"),
            ({"key": "lottype-0000002", "password": "not-mine"}, "auth."),
            ({"key": "lottype-0000003", "password": TESTER_PASSWORD, "lot_type": "sample"},
             "request.invalid"),
            ({"key": "lottype-0000004", "password": TESTER_PASSWORD, "lot_type": "production"},
             "lot.type_unchanged"),
        ):  # fmt: skip
            refused = await web.post(
                f"/console/lots/{lot}/lot-type", data={**form, **fields}, headers=HX
            )
            assert code in refused.text, (fields, refused.text)
        assert (await client.get(f"/api/v1/lots/{lot}")).json()["lot_type"] == "production"
        done = await web.post(
            f"/console/lots/{lot}/lot-type",
            data={**form, "key": "lottype-0000005", "password": TESTER_PASSWORD},
            headers=HX,
        )
        assert f"Lot {lot} is now of type engineering." in done.text, done.text
        assert (await client.get(f"/api/v1/lots/{lot}")).json()["lot_type"] == "engineering"
        retyped = [e for e in await _history(client, lot) if e["event_type"] == "LOT_TYPE"]
        assert retyped[-1]["actor"] == TESTER

        page = await web.get(f"/console/lots/{lot}")
        assert 'id="eng-release"' in page.text
        track = {"csrf": csrf, "tool": tool}
        unsigned = await web.post(
            f"/console/lots/{lot}/track-in", data={**track, "key": "trackin-0000001"}, headers=HX
        )
        assert "lot.engineering_signature_required" in unsigned.text
        no_password = await web.post(
            f"/console/lots/{lot}/track-in",
            data={**track, "key": "trackin-0000002", "engineering": "on", "eng_reason": "DOE"},
            headers=HX,
        )
        assert "auth.signature_required" in no_password.text
        bad_version = await web.post(
            f"/console/lots/{lot}/track-in",
            data={**track, "key": "trackin-0000003", "engineering": "on", "eng_reason": "DOE",
                  "eng_password": TESTER_PASSWORD, "eng_recipe_version": "v2"},
            headers=HX,
        )  # fmt: skip
        assert "request.invalid" in bad_version.text
        ran = await web.post(
            f"/console/lots/{lot}/track-in",
            data={**track, "key": "trackin-0000004", "engineering": "on",
                  "eng_reason": "DOE split 4 approved", "eng_password": TESTER_PASSWORD},
            headers=HX,
        )  # fmt: skip
        assert f"Engineering run released by {TESTER}." in ran.text, ran.text
    assert (await client.get(f"/api/v1/lots/{lot}")).json()["state"] == "Running"
    tracked = [e for e in await _history(client, lot) if e["event_type"] == "TRACK_IN"]
    assert tracked[-1]["after"]["engineering"]["signed_by"] == TESTER
    assert tracked[-1]["after"]["engineering"]["eng_tool"] is True


async def test_an_operator_is_offered_neither_and_is_refused_both(client):
    started = await start(client, lot_type="engineering")
    lot, tool = started["code"], (await tools_for(client, started))[0]
    await _tool_to(client, tool, "ENG")
    async with browser(client) as web:
        csrf = await sign_in(web, "t-operator", ROLE_PASSWORD)
        page = await web.get(f"/console/lots/{lot}")
        assert 'id="track-in-form"' in page.text  # an operator tracks lots in ...
        assert 'id="eng-release"' not in page.text  # ... but releases no engineering run
        assert 'id="lot-type-dialog"' not in page.text
        retype = await web.post(
            f"/console/lots/{lot}/lot-type",
            data={"csrf": csrf, "key": "lottype-1234567", "lot_type": "production",
                  "reason": "operator tries", "password": ROLE_PASSWORD},
            headers=HX,
        )  # fmt: skip
        assert "auth.forbidden" in retype.text
        release = await web.post(
            f"/console/lots/{lot}/track-in",
            data={"csrf": csrf, "key": "trackin-1234567", "tool": tool, "engineering": "on",
                  "eng_reason": "operator tries", "eng_password": ROLE_PASSWORD},
            headers=HX,
        )  # fmt: skip
        assert "lot.signer_not_engineer" in release.text
        no_csrf = await web.post(
            f"/console/lots/{lot}/lot-type",
            data={"csrf": "0" * 64, "key": "lottype-7654321", "lot_type": "production",
                  "reason": "no token", "password": ROLE_PASSWORD},
        )  # fmt: skip
        assert no_csrf.status_code == 403
    after = (await client.get(f"/api/v1/lots/{lot}")).json()
    assert (after["lot_type"], after["state"]) == ("engineering", "Waiting")
