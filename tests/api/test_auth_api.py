"""Login, lockout, API tokens, e-signatures and account administration."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from mes.audit.models import AuditEvent
from mes.auth.models import ApiToken
from tests.api.problems import assert_problem
from tests.conftest import ROLE_PASSWORD, TESTER, TESTER_PASSWORD

SIGNED = {"reason": "account administration"}


async def _login(anonymous, username: str, password: str):
    return await anonymous.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )


async def test_password_login_issues_a_working_bearer_token(anonymous, settings):
    response = await _login(anonymous, TESTER, TESTER_PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_ttl_s
    me = await anonymous.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.json()["username"] == TESTER


async def test_wrong_password_unknown_user_and_service_account_look_the_same(anonymous):
    for username, password in [
        (TESTER, "wrong password"),
        ("nobody-here", "whatever-pass"),
        ("t-equipment", "anything-at-all"),
    ]:
        response = await _login(anonymous, username, password)
        assert_problem(response, 401, "auth.invalid_credentials")


async def test_repeated_failures_lock_the_account(anonymous, settings, clock, session):
    for _ in range(settings.login_max_failures - 1):
        assert (await _login(anonymous, "t-operator", "bad guess 1")).status_code == 401
    locked = await _login(anonymous, "t-operator", "bad guess 2")
    body = assert_problem(locked, 429, "auth.locked")
    assert int(locked.headers["retry-after"]) == settings.login_lockout_s
    assert body["retry_after_s"] == settings.login_lockout_s
    # Even the right password is refused while locked ...
    assert (await _login(anonymous, "t-operator", ROLE_PASSWORD)).status_code == 429
    # ... and accepted once the lockout has passed.
    clock.advance(timedelta(seconds=settings.login_lockout_s + 1))
    assert (await _login(anonymous, "t-operator", ROLE_PASSWORD)).status_code == 200
    # The failures and the lock are in the audit trail.
    failures = await session.scalars(
        select(AuditEvent).where(
            AuditEvent.operation == "auth.login", AuditEvent.target_id == "t-operator"
        )
    )
    assert any((e.after or {}).get("locked_until") for e in failures)


async def test_failures_of_one_account_do_not_lock_another(anonymous, settings):
    for _ in range(settings.login_max_failures):
        await _login(anonymous, "t-engineer", "bad guess")
    assert (await _login(anonymous, "t-supervisor", ROLE_PASSWORD)).status_code == 200


async def test_service_account_tokens_are_shown_once_and_revocable(client, anonymous, session):
    issued = await client.post("/api/v1/users/t-equipment/tokens", json={"name": "etch adapter"})
    assert issued.status_code == 201, issued.text
    token = issued.json()["token"]
    public_id = issued.json()["public_id"]
    auth = {"Authorization": f"Bearer {token}"}
    assert (await anonymous.get("/api/v1/users/me", headers=auth)).json()["username"] == (
        "t-equipment"
    )
    # Only a digest is stored, and no audit record holds the secret.
    row = (await session.scalars(select(ApiToken).where(ApiToken.public_id == public_id))).one()
    assert token.split("_", 2)[2] not in row.secret_digest
    audit = await session.scalars(select(AuditEvent).where(AuditEvent.target_type == "api_token"))
    assert all(token not in str(e.after) for e in audit)
    listed = (await client.get("/api/v1/users/t-equipment/tokens")).json()
    assert [t["public_id"] for t in listed] == [public_id]
    assert "token" not in listed[0]

    revoked = await client.post(f"/api/v1/users/t-equipment/tokens/{public_id}/revoke")
    assert revoked.json()["revoked_at"] is not None
    assert_problem(await anonymous.get("/api/v1/users/me", headers=auth), 401, "auth.invalid_token")


async def test_api_tokens_are_only_for_service_accounts(client):
    response = await client.post("/api/v1/users/t-operator/tokens", json={"name": "x"})
    assert_problem(response, 409, "token.not_service_account")


async def test_a_forged_api_token_is_refused(client, anonymous):
    issued = (await client.post("/api/v1/users/t-dispatcher/tokens", json={"name": "d"})).json()
    forged = f"mes_{issued['public_id']}_{'A' * 43}"
    response = await anonymous.get("/api/v1/fabs", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "auth.invalid_token")


async def test_create_user_needs_a_signature_and_checks_roles(client, clock):
    new = {
        "username": "op.kim",
        "display_name": "Kim",
        "roles": ["operator"],
        "password": "a long enough secret",
    }
    missing = await client.post("/api/v1/users", json=new)
    assert_problem(missing, 422, "request.invalid")
    created = await client.post("/api/v1/users", json={**new, "signature": SIGNED})
    assert created.status_code == 201, created.text
    assert created.json()["roles"] == ["operator"]
    weak = {**new, "username": "op.lee", "password": "short", "signature": SIGNED}
    assert_problem(await client.post("/api/v1/users", json=weak), 422, "user.weak_password")
    machine_roles = {**new, "username": "op.max", "roles": ["equipment"], "signature": SIGNED}
    assert_problem(
        await client.post("/api/v1/users", json=machine_roles), 422, "user.invalid_roles"
    )
    duplicate = {**new, "signature": SIGNED}
    assert_problem(await client.post("/api/v1/users", json=duplicate), 409, "user.duplicate")


async def test_stale_login_must_sign_with_the_password(client, clock):
    clock.advance(timedelta(minutes=10))
    body = {
        "username": "eng.ada",
        "display_name": "Ada",
        "roles": ["engineer"],
        "password": "a long enough secret",
        "signature": SIGNED,
    }
    assert_problem(await client.post("/api/v1/users", json=body), 401, "auth.signature_required")
    wrong = {**body, "signature": {**SIGNED, "password": "not my password"}}
    assert_problem(await client.post("/api/v1/users", json=wrong), 401, "auth.signature_invalid")
    right = {**body, "signature": {**SIGNED, "password": TESTER_PASSWORD, "meaning": "review"}}
    response = await client.post("/api/v1/users", json=right)
    assert response.status_code == 201, response.text
    trail = (await client.get("/api/v1/audit", params={"target_id": "eng.ada"})).json()["items"]
    assert trail[0]["signature_method"] == "password"
    assert trail[0]["signature_meaning"] == "review"
    assert trail[0]["reason"] == SIGNED["reason"]


async def test_role_change_applies_to_the_next_request(client, client_as):
    async with client_as("t-operator") as operator:
        assert (await operator.post("/api/v1/products", json={})).status_code == 403
        user = (await client.get("/api/v1/users/t-operator")).json()
        changed = await client.patch(
            "/api/v1/users/t-operator",
            json={
                "version": user["version"],
                "roles": ["operator", "engineer"],
                "signature": SIGNED,
            },
        )
        assert changed.json()["roles"] == ["engineer", "operator"]
        assert changed.json()["version"] == user["version"] + 1
        made = await operator.post("/api/v1/products", json={"code": "P-OP", "name": "by op"})
        assert made.status_code == 201


async def test_disabled_account_is_refused_at_once(client, client_as):
    user = (await client.get("/api/v1/users/t-supervisor")).json()
    await client.patch(
        "/api/v1/users/t-supervisor",
        json={"version": user["version"], "is_active": False, "signature": SIGNED},
    )
    async with client_as("t-supervisor") as supervisor:
        assert_problem(await supervisor.get("/api/v1/fabs"), 401, "auth.invalid_token")


async def test_admins_cannot_lock_themselves_out(client):
    me = (await client.get("/api/v1/users/me")).json()
    response = await client.patch(
        f"/api/v1/users/{TESTER}",
        json={"version": me["version"], "is_active": False, "signature": SIGNED},
    )
    assert_problem(response, 409, "user.self_lockout")


async def test_password_change_voids_older_tokens(client, anonymous, clock):
    clock.advance(timedelta(seconds=5))
    changed = await client.post(
        "/api/v1/users/me/password",
        json={"current_password": TESTER_PASSWORD, "new_password": "a brand new passphrase"},
    )
    assert changed.status_code == 204, changed.text
    assert_problem(await client.get("/api/v1/fabs"), 401, "auth.invalid_token")
    assert (await _login(anonymous, TESTER, "a brand new passphrase")).status_code == 200


async def test_certification_of_an_operator(client):
    body = {"tool_group": "LITHO_193", "signature": SIGNED}
    certified = await client.post("/api/v1/users/t-operator/certifications", json=body)
    assert certified.status_code == 201, certified.text
    assert [c["tool_group"] for c in certified.json()["certifications"]] == ["LITHO_193"]
    revoked = await client.post(
        "/api/v1/users/t-operator/certifications/LITHO_193/revoke", json={"signature": SIGNED}
    )
    assert revoked.json()["certifications"] == []
    again = await client.post(
        "/api/v1/users/t-operator/certifications/LITHO_193/revoke", json={"signature": SIGNED}
    )
    assert_problem(again, 404, "user.not_certified")
    machine = await client.post("/api/v1/users/t-equipment/certifications", json=body)
    assert_problem(machine, 409, "user.not_human")


async def test_tool_adapters_report_state_with_their_api_token_role(client_as):
    async with client_as("t-equipment") as adapter:
        tool = (await adapter.get("/api/v1/equipment/F1-ETPO01")).json()
        # A plain state change needs no signature ...
        ok = await adapter.post(
            "/api/v1/equipment/F1-ETPO01/state", json={"version": tool["version"], "state": "PRD"}
        )
        assert ok.status_code == 200, ok.text


async def test_secrets_never_reach_the_logs(client, anonymous, caplog):
    caplog.set_level(logging.DEBUG)
    await _login(anonymous, TESTER, "a-wrong-secret-password")
    await _login(anonymous, TESTER, TESTER_PASSWORD)
    issued = (await client.post("/api/v1/users/t-equipment/tokens", json={"name": "x"})).json()
    body = {
        "username": "op.zed",
        "display_name": "Zed",
        "roles": ["operator"],
        "password": "zed-secret-passphrase",
        "signature": {**SIGNED, "password": TESTER_PASSWORD},
    }
    await client.post("/api/v1/users", json=body)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (
        "a-wrong-secret-password",
        TESTER_PASSWORD,
        issued["token"],
        "zed-secret-passphrase",
    ):
        assert secret not in logged
    trail = (await client.get("/api/v1/audit", params={"target_id": "op.zed"})).json()["items"]
    assert trail[0]["after"]["password_hash"] == "***"


async def test_wrong_signature_passwords_count_toward_the_lockout(
    client, client_as, anonymous, settings, clock
):
    lot = (await client.post("/api/v1/lots", json={"product": "LOGIC28", "fab": "F1"})).json()
    code = lot["code"]
    await client.post(f"/api/v1/lots/{code}/hold", json={"hold_code": "OPERATOR", "reason": "r"})
    clock.advance(timedelta(minutes=10))  # the login is stale: signing needs the password

    def release(password: str) -> dict:
        return {"signature": {"reason": "checked", "password": password}}

    async with client_as("t-operator") as operator:
        for attempt in range(settings.login_max_failures):
            wrong = await operator.post(
                f"/api/v1/lots/{code}/release", json=release(f"guess {attempt}")
            )
            assert_problem(wrong, 401, "auth.signature_invalid")
        # The account is locked now: the right password is refused, at signing and at login.
        right = await operator.post(f"/api/v1/lots/{code}/release", json=release(ROLE_PASSWORD))
        assert_problem(right, 429, "auth.locked")
    assert (await _login(anonymous, "t-operator", ROLE_PASSWORD)).status_code == 429
    assert (await client.get(f"/api/v1/lots/{code}")).json()["state"] == "OnHold"


async def test_wrong_current_passwords_in_a_password_change_count_toward_the_lockout(
    client_as, anonymous, settings
):
    async with client_as("t-operator") as operator:
        for attempt in range(settings.login_max_failures):
            wrong = await operator.post(
                "/api/v1/users/me/password",
                json={"current_password": f"guess {attempt}", "new_password": "a new passphrase"},
            )
            assert_problem(wrong, 401, "auth.invalid_credentials")
        # Locked now: the right current password is refused too, and so is a login.
        right = await operator.post(
            "/api/v1/users/me/password",
            json={"current_password": ROLE_PASSWORD, "new_password": "a new passphrase"},
        )
        assert_problem(right, 429, "auth.locked")
    assert (await _login(anonymous, "t-operator", ROLE_PASSWORD)).status_code == 429
