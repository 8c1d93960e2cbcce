"""Master-data lifecycles: an E10 substate is retired (kept in history, refused for new state
changes), and a route version signed for a later effective time can be withdrawn before it
takes effect (refused once it has)."""

from __future__ import annotations

from datetime import timedelta

from tests.api.problems import assert_problem
from tests.api.process_engineering import SIGNED, SIGNED_WITH_PASSWORD, start_lot

SUBSTATES = "/api/v1/e10-substates"
TOOL = "/api/v1/equipment/F1-WETC01"


async def _set_state(client, state: str, substate: str):
    tool = (await client.get(TOOL)).json()
    return await client.post(
        f"{TOOL}/state",
        json={"version": tool["version"], "state": state, "substate": substate, "reason": "r"},
    )


async def test_a_retired_substate_stays_in_history_and_cannot_be_entered(client, clock):
    created = await client.post(
        SUBSTATES, json={"code": "SDT.OLD_CLEAN", "description": "the old chamber clean"}
    )
    assert created.status_code == 201, created.text
    entered = await _set_state(client, "SDT", "SDT.OLD_CLEAN")
    assert entered.status_code == 200, entered.text
    clock.advance(timedelta(minutes=5))
    assert (await _set_state(client, "SBY", "SBY.NO_PRODUCT")).status_code == 200

    retired = await client.post(f"{SUBSTATES}/SDT.OLD_CLEAN/retire")
    assert retired.status_code == 200, retired.text
    assert (retired.json()["retired_by"], retired.json()["retired_at"]) == (
        "tester",
        "2026-01-05T08:05:00Z",
    )
    # New state changes are refused with a code that says why.
    problem = assert_problem(
        await _set_state(client, "SDT", "SDT.OLD_CLEAN"), 409, "tool.substate_retired"
    )
    assert "retired" in problem["detail"]
    assert (await client.get(TOOL)).json()["e10_state"] == "SBY"
    # The history still names it, and the table still lists it (marked).
    history = (await client.get(f"{TOOL}/state-history")).json()["items"]
    assert "SDT.OLD_CLEAN" in [h["substate"] for h in history]
    listed = {s["code"]: s for s in (await client.get(SUBSTATES)).json()}
    assert listed["SDT.OLD_CLEAN"]["retired_at"] is not None
    assert listed["SDT.CHAMBER_CLEAN"]["retired_at"] is None
    # Retiring twice, an unknown one, or one the MES records by itself is refused.
    assert_problem(
        await client.post(f"{SUBSTATES}/SDT.OLD_CLEAN/retire"), 409, "substate.already_retired"
    )
    assert_problem(await client.post(f"{SUBSTATES}/SDT.NOPE/retire"), 404, "substate.not_found")
    assert_problem(await client.post(f"{SUBSTATES}/UDT.NO_SIGNAL/retire"), 409, "substate.system")
    # A state correction may not name it either (it enters the substate for a past interval).
    correction = await client.post(
        f"{TOOL}/state-corrections",
        json={
            "start_at": "2026-01-05T07:00:00Z",
            "end_at": "2026-01-05T07:30:00Z",
            "substate": "SDT.OLD_CLEAN",
            "reason": "late entry",
        },
    )
    assert_problem(correction, 409, "tool.substate_retired")
    # The retirement is audited.
    audit = (
        await client.get("/api/v1/audit", params={"operation": "equipment.retire_substate"})
    ).json()["items"]
    assert len(audit) == 1
    assert audit[0]["actor"] == "tester"


async def test_retiring_needs_the_substate_permission(client, client_as):
    async with client_as("t-operator") as operator:
        refused = await operator.post(f"{SUBSTATES}/SDT.CHAMBER_CLEAN/retire")
    assert_problem(refused, 403, "auth.forbidden")


async def _schedule(client) -> str:
    added = await client.post("/api/v1/routes/R-TESTWF/versions", json={"copy_from": 1})
    assert added.status_code == 201, added.text
    url = "/api/v1/routes/R-TESTWF/versions/2"
    later = "2026-01-05T10:00:00Z"
    scheduled = await client.post(f"{url}/activate", json={**SIGNED, "effective_at": later})
    assert scheduled.json()["status"] == "pending", scheduled.text
    return url


async def test_a_pending_activation_can_be_cancelled_before_it_takes_effect(client, clock):
    url = await _schedule(client)
    assert_problem(
        await client.post(f"{url}/cancel-activation", json={}), 422, "request.invalid"
    )  # an e-signature is required, as for the activation
    cancelled = await client.post(f"{url}/cancel-activation", json=SIGNED)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["status"], body["effective_at"], body["activated_by"]) == ("draft", None, None)
    # Past the time it would have taken effect, version 1 is still in force for new lots.
    clock.advance(timedelta(hours=3))
    route = (await client.get("/api/v1/routes/R-TESTWF")).json()
    assert route["active_version"] == 1
    assert (await start_lot(client, "MONITOR"))["route_version"] == 1
    # Cancelling a draft is refused (the login is old now: the password signs).
    assert_problem(
        await client.post(f"{url}/cancel-activation", json=SIGNED_WITH_PASSWORD),
        409,
        "route.version_not_pending",
    )
    audit = (
        await client.get("/api/v1/audit", params={"operation": "routes.cancel_activation"})
    ).json()["items"]
    assert len(audit) == 1
    assert audit[0]["actor"] == "tester"


async def test_an_activation_that_took_effect_cannot_be_cancelled(client, clock):
    url = await _schedule(client)
    clock.advance(timedelta(hours=2))  # its effective time has come
    problem = assert_problem(
        await client.post(f"{url}/cancel-activation", json=SIGNED_WITH_PASSWORD),
        409,
        "route.version_not_pending",
    )
    assert "active" in problem["detail"]
    assert (await client.get("/api/v1/routes/R-TESTWF")).json()["active_version"] == 2
