"""Lot types through the API: set at start, shown, filtered, changed with a signed reason;
engineering lots on ENG tools and unreleased recipe versions only under an engineer's
e-signature (production lots never); monitor lots out of output and released by monitor
start plans; a furnace batch of two products on one recipe version."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from mes.console import floor
from mes.planning.models import StartPlan
from mes.planning.releaser import Releaser
from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import SIGNED, move, start, tools_for

RELEASE = {"signature": {"reason": "DOE split 4, run approved by process engineering"}}


async def _tool_to(client, tool: str, state: str) -> None:
    current = (await client.get(f"/api/v1/equipment/{tool}")).json()
    changed = await client.post(
        f"/api/v1/equipment/{tool}/state",
        json={"version": current["version"], "state": state, "reason": "engineering time"},
    )
    assert changed.status_code == 200, changed.text


async def _history(client, code: str) -> list[dict]:
    return (await client.get(f"/api/v1/lots/{code}/history", params={"limit": 100})).json()["items"]


async def test_the_lot_type_is_set_at_start_listed_and_changed_with_a_signed_reason(
    client, client_as
):
    plain = await start(client)
    assert plain["lot_type"] == "production"  # the default
    eng = await start(client, lot_type="engineering")
    assert eng["lot_type"] == "engineering"
    bulk = await client.post(
        "/api/v1/lots/bulk-start",
        json={"product": "MONITOR", "fab": "F1", "count": 2, "lot_type": "monitor"},
    )
    assert bulk.status_code == 201, bulk.text
    assert {lot["lot_type"] for lot in bulk.json()["lots"]} == {"monitor"}
    listed = await client.get("/api/v1/lots", params={"lot_type": "engineering", "limit": 500})
    assert [lot["code"] for lot in listed.json()["items"]] == [eng["code"]]
    bad = await client.get("/api/v1/lots", params={"lot_type": "pilot"})
    assert_problem(bad, 422, "request.invalid")

    async with client_as("t-operator") as operator:
        denied = await operator.post(
            f"/api/v1/lots/{plain['code']}/lot-type",
            json={"lot_type": "rework", "signature": SIGNED},
        )
    assert_problem(denied, 403, "auth.forbidden")
    changed = await client.post(
        f"/api/v1/lots/{plain['code']}/lot-type",
        json={"lot_type": "rework", "signature": {"reason": "wafers back for re-oxidation"}},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["lot_type"] == "rework"
    last = (await _history(client, plain["code"]))[-1]
    assert (last["event_type"], last["reason"]) == ("LOT_TYPE", "wafers back for re-oxidation")
    assert (last["after"]["lot_type_before"], last["after"]["lot_type"]) == ("production", "rework")
    same = await client.post(
        f"/api/v1/lots/{plain['code']}/lot-type",
        json={"lot_type": "rework", "signature": SIGNED},
    )
    assert_problem(same, 422, "lot.type_unchanged")
    # A split child is what its parent is.
    detail = (await client.get(f"/api/v1/lots/{plain['code']}")).json()
    split = await client.post(
        f"/api/v1/lots/{plain['code']}/split", json={"wafers": [detail["wafers"][0]["scribe_id"]]}
    )
    assert split.status_code in (200, 201), split.text
    assert split.json()["child"]["lot_type"] == "rework"
    # Not while it runs: the run was admitted under the type it had.
    tool = (await tools_for(client, eng))[0]
    assert (
        await client.post(f"/api/v1/lots/{eng['code']}/track-in", json={"tool": tool})
    ).status_code == 200
    running = await client.post(
        f"/api/v1/lots/{eng['code']}/lot-type",
        json={"lot_type": "production", "signature": SIGNED},
    )
    assert_problem(running, 409, "lot.running")


async def test_a_tool_in_eng_runs_engineering_lots_only_under_an_engineers_signature(
    client, client_as
):
    production = await start(client)
    eng = await start(client, lot_type="engineering")
    tool = (await tools_for(client, eng))[0]
    await _tool_to(client, tool, "ENG")

    refused = await client.post(f"/api/v1/lots/{production['code']}/track-in", json={"tool": tool})
    assert_problem(refused, 409, "tool.engineering_only")
    # A production lot never takes the engineering path, signed or not (here on an SBY tool).
    other = (await tools_for(client, production))[1]
    signed_production = await client.post(
        f"/api/v1/lots/{production['code']}/track-in", json={"tool": other, "engineering": RELEASE}
    )
    assert_problem(signed_production, 409, "lot.not_engineering")

    unsigned = await client.post(f"/api/v1/lots/{eng['code']}/track-in", json={"tool": tool})
    assert_problem(unsigned, 409, "lot.engineering_signature_required")
    async with client_as("t-supervisor") as supervisor:
        not_engineer = await supervisor.post(
            f"/api/v1/lots/{eng['code']}/track-in", json={"tool": tool, "engineering": RELEASE}
        )
    assert_problem(not_engineer, 403, "lot.signer_not_engineer")

    ran = await client.post(
        f"/api/v1/lots/{eng['code']}/track-in", json={"tool": tool, "engineering": RELEASE}
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["lot"]["state"] == "Running"
    # E10: the time stays engineering time; the tool does not turn productive.
    assert (await client.get(f"/api/v1/equipment/{tool}")).json()["e10_state"] == "ENG"
    tracked = [e for e in await _history(client, eng["code"]) if e["event_type"] == "TRACK_IN"]
    assert tracked[-1]["after"]["engineering"] == {
        "signed_by": "tester",
        "eng_tool": True,
        "recipe_status": "approved",
        "qualified": True,
    }
    out = await client.post(f"/api/v1/lots/{eng['code']}/track-out", json={})
    assert out.status_code == 200, out.text
    assert (await client.get(f"/api/v1/equipment/{tool}")).json()["e10_state"] == "ENG"
    # Back in SBY, the production lot runs as before.
    await _tool_to(client, tool, "SBY")
    back = await client.post(f"/api/v1/lots/{production['code']}/track-in", json={"tool": tool})
    assert back.status_code == 200, back.text


async def test_a_job_on_an_eng_tool_takes_the_same_signed_release(client):
    tool = "F1-WETC02"  # connected to its (simulated) tool through an adapter
    await _tool_to(client, tool, "ENG")
    production = await start(client)
    refused = await client.post(f"/api/v1/lots/{production['code']}/jobs", json={"tool": tool})
    assert_problem(refused, 409, "tool.engineering_only")
    eng = await start(client, lot_type="engineering")
    unsigned = await client.post(f"/api/v1/lots/{eng['code']}/jobs", json={"tool": tool})
    assert_problem(unsigned, 409, "lot.engineering_signature_required")
    job = await client.post(
        f"/api/v1/lots/{eng['code']}/jobs", json={"tool": tool, "engineering": RELEASE}
    )
    assert job.status_code == 201, job.text
    assert (await client.get(f"/api/v1/lots/{eng['code']}")).json()["state"] == "Running"


async def test_unqualified_and_draft_recipe_versions_run_for_signed_engineering_lots_only(client):
    production = await start(client)
    eng = await start(client, lot_type="engineering")
    tool = (await tools_for(client, eng))[0]
    first = (await client.get("/api/v1/recipes/WETC_PRECLEAN/versions/1")).json()
    draft = await client.post(
        "/api/v1/recipes/WETC_PRECLEAN/versions", json={"body": first["body"]}
    )
    assert draft.status_code == 201, draft.text
    number = draft.json()["version"]

    # The draft runs for the engineering lot only, with a signed release.
    asked = {"tool": tool, "engineering": {**RELEASE, "recipe_version": number}}
    refused = await client.post(f"/api/v1/lots/{production['code']}/track-in", json=asked)
    assert_problem(refused, 409, "lot.not_engineering")
    missing = await client.post(
        f"/api/v1/lots/{eng['code']}/track-in",
        json={"tool": tool, "engineering": {**RELEASE, "recipe_version": 99}},
    )
    assert_problem(missing, 404, "recipe.version_not_found")
    ran = await client.post(f"/api/v1/lots/{eng['code']}/track-in", json=asked)
    assert ran.status_code == 200, ran.text
    assert ran.json()["recipe"]["version"] == number
    tracked = [e for e in await _history(client, eng["code"]) if e["event_type"] == "TRACK_IN"]
    assert tracked[-1]["after"]["engineering"]["recipe_status"] == "draft"
    assert tracked[-1]["after"]["recipe_version"] == number
    assert (await client.post(f"/api/v1/lots/{eng['code']}/track-out", json={})).status_code == 200

    # No standing qualification on the tool: production is refused as ever, an engineering
    # lot is told what would let it run, and runs once an engineer signs.
    other = await start(client, lot_type="engineering")
    withdrawn = await client.post(
        f"/api/v1/recipes/WETC_PRECLEAN/versions/1/qualifications/{tool}/disqualify",
        json={"reason": "particles after the last PM"},
    )
    assert withdrawn.status_code == 200, withdrawn.text
    prod = await client.post(f"/api/v1/lots/{production['code']}/track-in", json={"tool": tool})
    assert_problem(prod, 409, "tool.not_qualified")
    unsigned = await client.post(f"/api/v1/lots/{other['code']}/track-in", json={"tool": tool})
    assert_problem(unsigned, 409, "lot.engineering_signature_required")
    signed = await client.post(
        f"/api/v1/lots/{other['code']}/track-in", json={"tool": tool, "engineering": RELEASE}
    )
    assert signed.status_code == 200, signed.text
    # The newest version that is not obsolete: the draft.
    assert signed.json()["recipe"]["version"] == number


async def test_two_products_sharing_a_recipe_version_share_a_furnace_batch(client):
    # LOGIC28 and ANALOG180 both oxidise their pad oxide with FUOX_PADOX version 1: one batch.
    logic = await start(client)
    analog = await start(client, product="ANALOG180")
    for lot in (logic, analog):
        await move(client, lot["code"])  # the wet clean: both wait at PAD_OX now
    furnace = "F1-FUOX01"
    first = await client.post(f"/api/v1/lots/{logic['code']}/track-in", json={"tool": furnace})
    assert first.status_code == 200, first.text
    second = await client.post(f"/api/v1/lots/{analog['code']}/track-in", json={"tool": furnace})
    assert second.status_code == 200, second.text
    assert second.json()["recipe"] == first.json()["recipe"]
    assert (second.json()["lot"]["route"], first.json()["lot"]["route"]) == (
        "R-ANALOG",
        "R-LOGIC28",
    )
    # A lot of another recipe (gate oxide) does not join the pad-oxide batch.
    gate = await start(client)
    jumped = await client.post(
        f"/api/v1/lots/{gate['code']}/jump", json={"to_sequence": 120, "signature": SIGNED}
    )
    assert jumped.status_code == 200, jumped.text
    mismatch = await client.post(f"/api/v1/lots/{gate['code']}/track-in", json={"tool": furnace})
    assert_problem(mismatch, 409, "tool.batch_mismatch")


async def test_one_job_order_runs_a_batch_of_two_products(client):
    logic = await start(client)
    analog = await start(client, product="ANALOG180")
    for lot in (logic, analog):
        await move(client, lot["code"])
    job = await client.post(
        "/api/v1/jobs", json={"tool": "F1-FUOX01", "lots": [logic["code"], analog["code"]]}
    )
    assert job.status_code == 201, job.text
    assert sorted(job.json()["lots"]) == sorted([logic["code"], analog["code"]])
    assert (job.json()["recipe"], job.json()["recipe_version"]) == ("FUOX_PADOX", 1)


async def _moves_today(session, clock) -> int:
    session.expire_all()
    (fab,) = await floor.network(session, clock.now(), "F1")
    return fab.moves_today


async def test_monitor_lots_are_no_output(client, clock, session):
    tool = "F1-WETC01"
    since = clock.now() - timedelta(minutes=1)
    moves = await _moves_today(session, clock)
    monitor = await start(client, lot_type="monitor")
    production = await start(client)
    for lot in (monitor, production):
        tin = await client.post(f"/api/v1/lots/{lot['code']}/track-in", json={"tool": tool})
        assert tin.status_code == 200, tin.text
        out = await client.post(f"/api/v1/lots/{lot['code']}/track-out", json={})
        assert out.status_code == 200, out.text
    clock.advance(timedelta(minutes=5))
    figures = await client.get(
        "/api/v1/metrics/equipment",
        params={"tool": tool, "start": since.isoformat(), "end": clock.now().isoformat()},
    )
    assert figures.status_code == 200, figures.text
    # Both ran 5 wafers; only the production lot's are E79 units.
    assert figures.json()["oee"]["units"] == 5
    # The console's moves of the day count the production lot's track-out only.
    assert await _moves_today(session, clock) == moves + 1


async def test_a_monitor_start_plan_releases_monitor_lots(client, db, clock, session):
    seeded = (await client.get("/api/v1/start-plans/F1-MONITOR")).json()
    assert seeded["lot_type"] == "monitor"  # the example's monitor plans
    await session.execute(update(StartPlan).values(active=False))
    await session.flush()
    plan = {
        "code": "T-MON",
        "fab": "F1",
        "product": "MONITOR",
        "rate": 1,
        "rate_per": "hour",
        "lot_type": "monitor",
        "starts_at": clock.now().isoformat(),
    }
    created = await client.post("/api/v1/start-plans", json=plan)
    assert created.status_code == 201, created.text
    assert created.json()["lot_type"] == "monitor"
    (release,) = (await Releaser(db, clock, owner="t", lease_ttl_s=600).cycle()).released
    lot = (await client.get(f"/api/v1/lots/{release}")).json()
    assert lot["lot_type"] == "monitor"
