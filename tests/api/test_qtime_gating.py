"""The Q-time gate at track-in and in the dispatch lists, through the API.

In the example fab GATE_OX_CLEAN (110, WET_CLEAN, 40 min) opens a 4-hour window to GATE_OX (120,
FURN_OX, 4 h batches of up to 6 lots); F1 has one furnace, F1-FUOX01.
"""

from __future__ import annotations

from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import SIGNED, move, start


async def _at_the_clean(client) -> str:
    code = (await start(client))["code"]
    jumped = await client.post(
        f"/api/v1/lots/{code}/jump", json={"to_sequence": 110, "signature": SIGNED}
    )
    assert jumped.status_code == 200, jumped.text
    return code


async def _furnace_down(client) -> None:
    version = (await client.get("/api/v1/equipment/F1-FUOX01")).json()["version"]
    down = await client.post(
        "/api/v1/equipment/F1-FUOX01/state",
        json={"state": "UDT", "reason": "tube leak", "version": version},
    )
    assert down.status_code == 200, down.text


async def _track_in_event(client, code: str) -> dict:
    events = (await client.get(f"/api/v1/lots/{code}/history")).json()["items"]
    return [e for e in events if e["event_type"] == "TRACK_IN"][-1]


async def test_the_gate_counts_the_lots_committed_to_the_furnace(client):
    running = await _at_the_clean(client)  # on the clean now: committed at its track-out
    tin = await client.post(f"/api/v1/lots/{running}/track-in", json={"tool": "F1-WETC01"})
    assert tin.status_code == 200, tin.text
    waiting = await _at_the_clean(client)  # cleaned: its window to the furnace is open
    await move(client, waiting)
    code = await _at_the_clean(client)
    # Two committed, one furnace idle: the third lot's batch would start 40 min from now, well
    # before its window closes (4 h 40 min): it is offered and may start.
    listing = (await client.get("/api/v1/dispatch/tools/F1-WETC02/list")).json()
    assert code in {r["lot"] for r in listing["ranked"]}
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC02"})
    assert tin.status_code == 200, tin.text
    gate = (await _track_in_event(client, code))["after"]["qtime_gate"]
    assert gate["ok"] is True
    assert "2 lots committed, 1 tools up" in gate["why"]
    assert "start there in 0.67 h, window closes in 4.67 h" in gate["why"]


async def test_no_furnace_up_refuses_the_clean_unless_a_supervisor_overrides(client, client_as):
    code = await _at_the_clean(client)
    await _furnace_down(client)
    # The dispatcher leaves it out, saying why.
    listing = (await client.get("/api/v1/dispatch/tools/F1-WETC01/list")).json()
    (excluded,) = [e for e in listing["excluded"] if e["lot"] == code]
    assert [r["code"] for r in excluded["reasons"]] == ["lot.qtime_gated"]
    assert "no tool of step 120's group is up" in excluded["reasons"][0]["detail"]
    # An operator's track-in is refused; an operator may not override.
    certified = await client.post(
        "/api/v1/users/t-operator/certifications",
        json={"tool_group": "WET_CLEAN", "signature": SIGNED},
    )
    assert certified.status_code == 201, certified.text
    operator = client_as("t-operator")
    refused = await operator.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01"})
    assert_problem(refused, 409, "lot.qtime_gated")
    forced = await operator.post(
        f"/api/v1/lots/{code}/track-in",
        json={"tool": "F1-WETC01", "qtime_gate_override": {"reason": "furnace back soon"}},
    )
    assert_problem(forced, 403, "lot.qtime_override_forbidden")
    assert (await client.get(f"/api/v1/lots/{code}")).json()["state"] == "Waiting"
    # A supervisor may (the tester holds every role), with a signed reason, recorded.
    reason = "furnace repair ends within the hour"
    overridden = await client.post(
        f"/api/v1/lots/{code}/track-in",
        json={"tool": "F1-WETC01", "qtime_gate_override": {"reason": reason}},
    )
    assert overridden.status_code == 200, overridden.text
    gate = (await _track_in_event(client, code))["after"]["qtime_gate"]
    assert (gate["ok"], gate["override"]) == (False, reason)
    audit = await client.get(
        "/api/v1/audit", params={"target_type": "lot", "target_id": code, "limit": 5}
    )
    assert reason in {row["reason"] for row in audit.json()["items"]}


async def test_a_step_opening_no_window_is_not_gated(client):
    code = (await start(client))["code"]  # step 10 opens no window
    await _furnace_down(client)
    tin = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-WETC01"})
    assert tin.status_code == 200, tin.text
    assert "qtime_gate" not in (await _track_in_event(client, code))["after"]


async def test_lots_waiting_at_a_fifo_furnace_count_as_ahead(client, client_as, session, clock):
    from mes.dispatch import service as dispatch_service
    from mes.fabs import service as fabs_service

    await _at_the_clean(client)  # a lot at the opening step: the gate reads the furnace
    # Two lots wait at the furnace step outside any window (a jump voids windows).
    for _ in range(2):
        other = (await start(client))["code"]
        jumped = await client.post(
            f"/api/v1/lots/{other}/jump", json={"to_sequence": 120, "signature": SIGNED}
        )
        assert jumped.status_code == 200, jumped.text
    f1 = (await fabs_service.get_fab(session, "F1")).id
    furnace = (await fabs_service.get_tool_group(session, "FURN_OX")).id

    async def downstream():
        snap = await dispatch_service.fab_snapshot(session, "F1", clock.now())
        return snap.situation.downstream[(f1, furnace)]

    # The default rule set ranks window lots first: the two lots are not ahead of ours.
    default = await downstream()
    assert (default.committed, default.queued, default.free_in_s) == (0, 0, (0.0,))
    fifo_only = {
        "fab": "F1",
        "tool_group": "FURN_OX",
        "rules": [{"rule": "fifo", "weight": 1, "params": {}}],
        "note": "FIFO on the furnace",
    }
    published = await client_as("t-engineer").post("/api/v1/dispatch/rule-sets", json=fifo_only)
    assert published.status_code == 201, published.text
    fifo = await downstream()
    assert (fifo.committed, fifo.queued) == (0, 2)
