"""The console over HTTP without a browser: sign-in and CSRF, permissions, the API's services
behind its forms (audit, idempotency, e-signature), broken sessions and the change feed."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import func, select

from mes.audit.models import AuditEvent
from mes.console.feed import ChangeFeed, Interest
from mes.db.engine import Database
from mes.lots.models import Lot, LotEvent
from tests.conftest import ROLE_PASSWORD, TESTER, TESTER_PASSWORD

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    page = await client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    answer = await client.post(
        "/console/login",
        data={"username": username, "password": password, "csrf": token.group(1)},
    )
    assert answer.status_code == 303, answer.text
    home = await client.get("/console")
    assert home.status_code == 200
    found = CSRF.search(home.text)
    assert found is not None
    return found.group(1)


def browser(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A cookie-keeping client of the same app, without the API's bearer token."""
    return httpx.AsyncClient(transport=client._transport, base_url="http://mes.test")


async def start_lot(client: httpx.AsyncClient) -> str:
    answer = await client.post("/api/v1/lots", json={"product": "LOGIC28", "fab": "F1"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["code"])


async def test_pages_need_a_session_and_answer_once_signed_in(client):
    async with browser(client) as web:
        first = await web.get("/console/fabs/F1")
        assert first.status_code == 303
        assert first.headers["location"] == "/console/login?next=/console/fabs/F1"
        await sign_in(web, TESTER, TESTER_PASSWORD)
        lot = await start_lot(client)
        for path in (
            "/console",
            "/console/fabs/F1",
            "/console/tools/F1-WETC01",
            f"/console/lots/{lot}",
            "/console/holds",
            "/console/recipes",
            "/console/audit",
        ):
            page = await web.get(path)
            assert page.status_code == 200, (path, page.text[:300])
            assert "<main" in page.text
        scanned = await web.get("/console/scan", params={"lot": f"  {lot} "})
        assert scanned.headers["location"] == f"/console/lots/{lot}"
        missing = await web.get("/console/lots/NO-SUCH-LOT")
        assert missing.status_code == 404
        assert "lot.not_found" in missing.text


async def test_the_login_form_and_every_action_need_their_csrf_token(client):
    async with browser(client) as web:
        await web.get("/console/login")
        refused = await web.post(
            "/console/login", data={"username": TESTER, "password": TESTER_PASSWORD}
        )
        assert refused.status_code == 403
        assert "console.csrf" in refused.text
        await sign_in(web, TESTER, TESTER_PASSWORD)
        lot = await start_lot(client)
        forged = await web.post(
            f"/console/lots/{lot}/hold",
            data={"hold_code": "OPERATOR", "reason": "forged", "csrf": "0" * 64},
            headers={"HX-Request": "true"},
        )
        assert "console.csrf" in forged.text
        state = (await client.get(f"/api/v1/lots/{lot}")).json()["state"]
        assert state == "Waiting"


async def test_a_hold_from_the_console_is_the_apis_hold_once_per_form(client, session):
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        lot = await start_lot(client)
        form = {"hold_code": "OPERATOR", "reason": "scratch", "csrf": csrf, "key": "form-12345678"}
        first = await web.post(
            f"/console/lots/{lot}/hold", data=form, headers={"HX-Request": "true"}
        )
        assert "is on hold" in first.text
        assert first.headers["HX-Trigger-After-Swap"] == "mes-changed"
        again = await web.post(
            f"/console/lots/{lot}/hold", data=form, headers={"HX-Request": "true"}
        )
        assert "already done" in again.text
        holds = await session.scalar(
            select(func.count())
            .select_from(LotEvent)
            .join(Lot, Lot.id == LotEvent.lot_id)
            .where(Lot.code == lot, LotEvent.event_type == "HOLD")
        )
        assert holds == 1
        record = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.target_type == "lot", AuditEvent.target_id == lot)
                .order_by(AuditEvent.id.desc())
            )
        ).first()
        assert record is not None
        assert (record.operation, record.actor) == ("lots.hold", TESTER)


async def hold_ids(client: httpx.AsyncClient, lot: str) -> list[int]:
    holds = (await client.get("/api/v1/lots/holds", params={"limit": 500})).json()["items"]
    return sorted(h["id"] for h in holds if h["lot"] == lot)


async def test_release_signs_only_the_holds_shown_and_ticked(client):
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        lot = await start_lot(client)
        hold = {"hold_code": "OPERATOR", "reason": "first look"}
        assert (await client.post(f"/api/v1/lots/{lot}/hold", json=hold)).status_code == 200
        (seen,) = await hold_ids(client, lot)
        page = await web.get(f"/console/lots/{lot}")
        assert f'name="hold_ids" value="{seen}" checked' in page.text
        # While the dialog is open, someone holds the lot again.
        hold = {"hold_code": "OPERATOR", "reason": "second look"}
        assert (await client.post(f"/api/v1/lots/{lot}/hold", json=hold)).status_code == 200
        form = {"csrf": csrf, "reason": "first look done", "password": TESTER_PASSWORD}
        hx = {"HX-Request": "true"}
        none = await web.post(f"/console/lots/{lot}/release", data=form, headers=hx)
        assert "hold.none_active" in none.text  # nothing ticked: nothing signed
        assert len(await hold_ids(client, lot)) == 2
        signed = await web.post(
            f"/console/lots/{lot}/release", data={**form, "hold_ids": str(seen)}, headers=hx
        )
        assert "released" in signed.text
        remaining = await hold_ids(client, lot)
        assert len(remaining) == 1
        assert seen not in remaining
        assert (await client.get(f"/api/v1/lots/{lot}")).json()["state"] == "OnHold"


async def test_release_needs_a_correct_e_signature(client):
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        lot = await start_lot(client)
        await client.post(
            f"/api/v1/lots/{lot}/hold", json={"hold_code": "OPERATOR", "reason": "x1x"}
        )
        hx = {"HX-Request": "true"}
        unsigned = await web.post(
            f"/console/lots/{lot}/release", data={"csrf": csrf, "reason": "ok now"}, headers=hx
        )
        assert "auth.signature_required" in unsigned.text
        wrong = await web.post(
            f"/console/lots/{lot}/release",
            data={"csrf": csrf, "reason": "ok now", "password": "nope-nope"},
            headers=hx,
        )
        assert "auth.signature_invalid" in wrong.text
        assert (await client.get(f"/api/v1/lots/{lot}")).json()["state"] == "OnHold"
        (hold_id,) = await hold_ids(client, lot)
        signed = await web.post(
            f"/console/lots/{lot}/release",
            data={"csrf": csrf, "reason": "ok now", "password": TESTER_PASSWORD,
                  "hold_ids": str(hold_id)},
            headers=hx,
        )  # fmt: skip
        assert "released" in signed.text
        assert (await client.get(f"/api/v1/lots/{lot}")).json()["state"] == "Waiting"


async def test_an_operator_is_not_offered_and_is_refused_what_is_not_theirs(client):
    async with browser(client) as web:
        csrf = await sign_in(web, "t-operator", ROLE_PASSWORD)
        audit = await web.get("/console/audit")
        assert audit.status_code == 403
        recipes = await web.get("/console/recipes")
        assert "Approve…" not in recipes.text
        refused = await web.post(
            "/console/recipes/WETC_PRECLEAN/versions/1/approve",
            data={"csrf": csrf, "reason": "looks fine", "password": ROLE_PASSWORD},
            headers={"HX-Request": "true"},
        )
        assert "auth.forbidden" in refused.text


async def test_a_broken_session_redirects_and_htmx_is_told_where(client):
    async with browser(client) as web:
        web.cookies.set("mes_console", "not-a-token", domain="mes.test", path="/console")
        page = await web.get("/console/holds")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/login?next=/console/holds")
        fragment = await web.get(
            "/console/tools/F1-WETC01?part=status",
            headers={
                "HX-Request": "true",
                "HX-Current-URL": "http://mes.test/console/tools/F1-WETC01",
            },
        )
        assert fragment.status_code == 401
        assert fragment.headers["HX-Redirect"] == "/console/login?next=/console/tools/F1-WETC01"


async def test_the_change_feed_names_what_changed(client, db: Database):
    feed = ChangeFeed(db)
    assert await feed.poll() == []  # the first look only finds where the trail ends
    lot = await start_lot(client)
    tool = (await client.get("/api/v1/equipment/F1-ETPO01")).json()
    await client.post(
        "/api/v1/equipment/F1-ETPO01/state",
        json={"version": tool["version"], "state": "UDT", "reason": "broken"},
    )
    events = await feed.poll()
    assert (f"lot-{lot}", "F1") in events
    assert ("tool-F1-ETPO01", "F1") in events
    assert ("fab-F1", "F1") in events
    assert await feed.poll() == []  # each record once
    board = Interest(prefixes=("tool-",), fabs=frozenset({"F2"}))
    assert not board.wants("tool-F1-ETPO01", "F1")
    assert Interest(names=frozenset({f"lot-{lot}"})).wants(f"lot-{lot}", "F1")


async def test_the_feed_finds_a_record_committed_after_a_later_one(session, db: Database, clock):
    # On PostgreSQL ids are taken at insert and seen at commit: a transaction that took a lower
    # id may commit after one with a higher id was already read. The feed looks back for it.
    feed = ChangeFeed(db)
    assert await feed.poll() == []
    top = int(await session.scalar(select(func.max(AuditEvent.id))) or 0)

    def record(id_: int, lot: str) -> AuditEvent:
        return AuditEvent(
            id=id_, occurred_at=clock.now(), actor="t", role="system", operation="test",
            action="update", target_type="lot", target_id=lot, fab_id=None,
        )  # fmt: skip

    session.add(record(top + 10, "LATE-HIGH"))
    await session.flush()
    assert [name for name, _fab in await feed.poll()] == ["lot-LATE-HIGH"]
    session.add(record(top + 5, "EARLY-LOW"))
    await session.flush()
    assert [name for name, _fab in await feed.poll()] == ["lot-EARLY-LOW"]
    assert await feed.poll() == []


async def test_a_second_hold_is_an_event_of_its_lot(client, db: Database):
    # A hold on a lot already on hold changes no column of the lot, only adds a hold record:
    # the lot's page and the holds page must still hear of it.
    lot = await start_lot(client)
    hold = {"hold_code": "OPERATOR", "reason": "first look"}
    assert (await client.post(f"/api/v1/lots/{lot}/hold", json=hold)).status_code == 200
    feed = ChangeFeed(db)
    assert await feed.poll() == []
    hold = {"hold_code": "ENGINEERING", "reason": "second look"}
    answer = await client.post(f"/api/v1/lots/{lot}/hold", json=hold)
    assert answer.status_code == 200, answer.text
    events = await feed.poll()
    assert (f"lot-{lot}", "F1") in events
    assert ("holds", "F1") in events
