"""Carriers through the API: lots into carriers with slot maps, the split child's carrier, load
ports (E87 transfer states), carrier moves, sorter jobs. Against the example fab."""

from __future__ import annotations

from tests.api.problems import assert_problem

API = "/api/v1"


async def start(client, **extra) -> dict:
    body = {"product": "LOGIC28", "fab": "F1", "wafer_count": 4, **extra}
    response = await client.post(f"{API}/lots", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def scribes(client, code: str) -> list[str]:
    lot = (await client.get(f"{API}/lots/{code}")).json()
    return [w["scribe_id"] for w in lot["wafers"]]


async def events(client, code: str) -> list[dict]:
    return (await client.get(f"{API}/lots/{code}/history")).json()["items"]


async def occupied(client, carrier: str) -> dict[int, str]:
    page = await client.get(f"{API}/carriers/{carrier}/slot-map")
    assert page.status_code == 200, page.text
    return {s["slot"]: s["wafer"] for s in page.json()["slots"] if s is not None}


async def test_split_child_gets_a_carrier_chosen_or_named(client):
    lot = await start(client, carrier="F1-FP0007")
    code = lot["code"]
    w = await scribes(client, code)
    chosen = await client.post(f"{API}/lots/{code}/split", json={"wafers": w[:1]})
    assert chosen.status_code == 201, chosen.text
    # The lowest-coded empty, clean carrier waiting in a stocker of the fab.
    assert chosen.json()["child"]["carrier"] == "F1-FP0001"
    split_event = next(e for e in await events(client, code) if e["event_type"] == "SPLIT")
    assert (split_event["after"]["carrier"], split_event["after"]["carrier_chosen_by_mes"]) == (
        "F1-FP0001",
        True,
    )
    assert await occupied(client, "F1-FP0001") == {1: w[0]}
    assert (await client.get(f"{API}/carriers/F1-FP0001")).json()["state"] == "in_use"

    named = await client.post(
        f"{API}/lots/{code}/split", json={"wafers": w[1:2], "carrier": "F1-FP0003"}
    )
    assert named.status_code == 201, named.text
    assert named.json()["child"]["carrier"] == "F1-FP0003"
    child_events = await events(client, named.json()["child"]["code"])
    assert child_events[-1]["after"]["carrier_chosen_by_mes"] is False

    before = (await client.get(f"{API}/lots/{code}")).json()
    busy = await client.post(
        f"{API}/lots/{code}/split", json={"wafers": w[2:3], "carrier": "F1-FP0003"}
    )
    assert_problem(busy, 409, "carrier.not_available")
    after = (await client.get(f"{API}/lots/{code}")).json()
    assert (after["wafer_count"], after["version"]) == (before["wafer_count"], before["version"])

    # A lot tracked without a carrier splits without one, unless one is named.
    loose = await start(client)
    lw = await scribes(client, loose["code"])
    plain = await client.post(f"{API}/lots/{loose['code']}/split", json={"wafers": lw[:1]})
    assert plain.json()["child"]["carrier"] is None


async def test_no_free_carrier_refuses_the_split(client):
    lot = await start(client, carrier="F2-FP0001", fab="F2")
    for n in range(2, 31):
        took = await client.post(f"{API}/carriers/F2-FP{n:04d}/move", json={"to": "in_transit"})
        assert took.status_code == 200, took.text
    w = await scribes(client, lot["code"])
    refused = await client.post(f"{API}/lots/{lot['code']}/split", json={"wafers": w[:1]})
    assert_problem(refused, 409, "carrier.none_free")
    assert (await client.get(f"{API}/lots/{lot['code']}")).json()["wafer_count"] == 4


async def test_assign_then_transfer_with_a_slot_map(client):
    lot = await start(client, wafer_count=3)
    code = lot["code"]
    w = await scribes(client, code)
    for slots, problem in (
        ({w[0]: 5, w[1]: 5, w[2]: 7}, "carrier.invalid_slot_map"),  # two wafers, one slot
        ({w[0]: 5, w[1]: 6}, "carrier.invalid_slot_map"),  # a wafer left out
        ({w[0]: 5, w[1]: 6, w[2]: 7, "NOT-A-WAFER": 8}, "carrier.invalid_slot_map"),
    ):
        bad = await client.post(
            f"{API}/lots/{code}/carrier", json={"carrier": "F1-FP0002", "slots": slots}
        )
        assert_problem(bad, 422, problem)
    assert (await client.get(f"{API}/carriers/F1-FP0002")).json()["state"] == "available"

    put = await client.post(
        f"{API}/lots/{code}/carrier",
        json={"carrier": "F1-FP0002", "slots": {w[0]: 5, w[1]: 6, w[2]: 25}},
    )
    assert put.status_code == 200, put.text
    assert put.json()["job"] is None  # a first carrier: bookkeeping, no sorter move
    assert put.json()["lots"][0]["carrier"] == "F1-FP0002"
    assert await occupied(client, "F1-FP0002") == {5: w[0], 6: w[1], 25: w[2]}
    assert (await events(client, code))[-1]["event_type"] == "CARRIER_ASSIGN"

    taken = await start(client, carrier="F1-FP0004")
    busy = await client.post(f"{API}/lots/{code}/carrier", json={"carrier": "F1-FP0004"})
    assert_problem(busy, 409, "carrier.not_available")
    assert taken["carrier"] == "F1-FP0004"

    moved = await client.post(f"{API}/lots/{code}/carrier", json={"carrier": "F1-FP0003"})
    assert moved.status_code == 200, moved.text
    job = moved.json()["job"]
    assert (job["kind"], job["source_carrier"], job["target_carrier"]) == (
        "transfer",
        "F1-FP0002",
        "F1-FP0003",
    )
    assert [(m["wafer"], m["from_slot"], m["to_slot"]) for m in job["moves"]] == [
        (w[0], 5, 5),
        (w[1], 6, 6),
        (w[2], 25, 25),
    ]
    assert await occupied(client, "F1-FP0002") == {}
    assert (await client.get(f"{API}/carriers/F1-FP0002")).json()["state"] == "dirty"
    assert (await events(client, code))[-1]["event_type"] == "CARRIER_TRANSFER"


async def test_load_port_transfer_states(client):
    assert_problem(await client.get(f"{API}/tools/NOPE/load-ports"), 404, "tool.not_found")
    assert_problem(
        await client.post(f"{API}/tools/NOPE/load-ports/1/load", json={"carrier": "F1-FP0010"}),
        404,
        "tool.not_found",
    )
    ports = (await client.get(f"{API}/tools/F1-ETPO01/load-ports")).json()
    assert [
        (p["port_number"], p["transfer_state"], p["in_service"], p["carrier"]) for p in ports
    ] == [
        (1, "ReadyToLoad", True, None),
        (2, "ReadyToLoad", True, None),
    ]
    base = f"{API}/tools/F1-ETPO01/load-ports"
    loaded = await client.post(f"{base}/1/load", json={"carrier": "F1-FP0010"})
    assert loaded.status_code == 200, loaded.text
    assert (loaded.json()["transfer_state"], loaded.json()["carrier"]) == (
        "TransferBlocked",
        "F1-FP0010",
    )
    carrier = (await client.get(f"{API}/carriers/F1-FP0010")).json()
    assert (carrier["location"], carrier["tool"], carrier["port_number"], carrier["stocker"]) == (
        "load_port",
        "F1-ETPO01",
        1,
        None,
    )
    assert_problem(
        await client.post(f"{base}/1/load", json={"carrier": "F1-FP0011"}),
        409,
        "load_port.invalid_transition",
    )
    assert_problem(
        await client.post(f"{base}/2/load", json={"carrier": "F1-FP0010"}),
        409,
        "carrier.at_load_port",
    )
    assert_problem(
        await client.post(f"{base}/2/load", json={"carrier": "F2-FP0001"}), 409, "carrier.other_fab"
    )
    assert_problem(
        await client.post(f"{API}/carriers/F1-FP0010/move", json={"to": "stocker"}),
        409,
        "carrier.at_load_port",
    )
    assert_problem(
        await client.post(f"{base}/1/unload", json={}), 409, "load_port.invalid_transition"
    )
    down = {"in_service": False, "reason": "latch sensor"}
    assert_problem(await client.post(f"{base}/1/service", json=down), 409, "load_port.occupied")
    assert_problem(await client.post(f"{base}/2/ready-to-unload"), 409, "load_port.empty")
    ready = await client.post(f"{base}/1/ready-to-unload")
    assert ready.json()["transfer_state"] == "ReadyToUnload"
    gone = await client.post(f"{base}/1/unload", json={"to": "stocker", "stocker": "F1-STK02"})
    assert (gone.json()["transfer_state"], gone.json()["carrier"]) == ("ReadyToLoad", None)
    carrier = (await client.get(f"{API}/carriers/F1-FP0010")).json()
    assert (carrier["location"], carrier["stocker"], carrier["tool"]) == (
        "stocker",
        "F1-STK02",
        None,
    )

    out = await client.post(f"{base}/1/service", json=down)
    assert (out.json()["transfer_state"], out.json()["in_service"]) == ("OutOfService", False)
    assert_problem(
        await client.post(f"{base}/1/load", json={"carrier": "F1-FP0010"}),
        409,
        "load_port.invalid_transition",
    )
    back = await client.post(f"{base}/1/service", json={"in_service": True, "reason": "fixed"})
    assert back.json()["transfer_state"] == "ReadyToLoad"
    assert_problem(
        await client.post(f"{base}/17/load", json={"carrier": "F1-FP0010"}), 422, "request.invalid"
    )
    assert_problem(
        await client.post(f"{API}/tools/F1-LI9301/load-ports/3/ready-to-unload"),
        404,
        "load_port.not_found",
    )
    assert_problem(
        await client.post(f"{API}/carriers/F1-FP0010/move", json={"to": "load_port"}),
        422,
        "request.invalid",
    )


async def test_a_carrier_whose_lot_runs_stays_on_the_port(client):
    lot = await start(client, carrier="F1-FP0012")
    group = lot["step"]["tool_group"]
    tools = await client.get(
        f"{API}/equipment", params={"fab": "F1", "tool_group": group, "limit": 5}
    )
    tool = tools.json()["items"][0]["code"]
    loaded = await client.post(
        f"{API}/tools/{tool}/load-ports/1/load", json={"carrier": "F1-FP0012"}
    )
    assert loaded.status_code == 200, loaded.text
    tin = await client.post(f"{API}/lots/{lot['code']}/track-in", json={"tool": tool})
    assert tin.status_code == 200, tin.text
    refused = await client.post(f"{API}/tools/{tool}/load-ports/1/ready-to-unload")
    assert_problem(refused, 409, "load_port.carrier_in_process")
    # Nor can its wafers go to a sorter while it runs.
    w = await scribes(client, lot["code"])
    busy = await client.post(
        f"{API}/sorter-jobs", json={"kind": "reslot", "lot": lot["code"], "slots": {w[0]: 9}}
    )
    assert_problem(busy, 409, "carrier.lot_not_sortable")


async def test_sorter_jobs_reslot_split_merge(client):
    lot = await start(client, carrier="F1-FP0005")
    code = lot["code"]
    w = await scribes(client, code)
    job = await client.post(
        f"{API}/sorter-jobs", json={"kind": "reslot", "lot": code, "slots": {w[0]: 10}}
    )
    assert job.status_code == 201, job.text
    assert job.headers["location"].endswith(f"/sorter-jobs/{job.json()['job']['id']}")
    assert [(m["wafer"], m["from_slot"], m["to_slot"]) for m in job.json()["job"]["moves"]] == [
        (w[0], 1, 10)
    ]
    # A swap: both wafers change slots in one transaction.
    swap = await client.post(
        f"{API}/sorter-jobs", json={"kind": "reslot", "lot": code, "slots": {w[1]: 3, w[2]: 2}}
    )
    assert swap.status_code == 201, swap.text
    assert await occupied(client, "F1-FP0005") == {2: w[2], 3: w[1], 4: w[3], 10: w[0]}
    same = await client.post(
        f"{API}/sorter-jobs", json={"kind": "reslot", "lot": code, "slots": {w[0]: 10}}
    )
    assert_problem(same, 409, "carrier.nothing_to_sort")
    outside = await client.post(
        f"{API}/sorter-jobs", json={"kind": "reslot", "lot": code, "slots": {w[0]: 2}}
    )
    assert_problem(outside, 422, "carrier.invalid_slot_map")

    split = await client.post(
        f"{API}/sorter-jobs",
        json={
            "kind": "split",
            "lot": code,
            "wafers": [w[1], w[2]],
            "carrier": "F1-FP0006",
            "slots": {w[1]: 20, w[2]: 21},
        },
    )
    assert split.status_code == 201, split.text
    parent, child = split.json()["lots"]
    assert (parent["wafer_count"], child["wafer_count"], child["carrier"]) == (2, 2, "F1-FP0006")
    moves = split.json()["job"]["moves"]
    assert [
        (m["wafer"], m["from_carrier"], m["from_slot"], m["to_carrier"], m["to_slot"])
        for m in moves
    ] == [
        (w[1], "F1-FP0005", 3, "F1-FP0006", 20),
        (w[2], "F1-FP0005", 2, "F1-FP0006", 21),
    ]
    assert await occupied(client, "F1-FP0006") == {20: w[1], 21: w[2]}
    assert await occupied(client, "F1-FP0005") == {4: w[3], 10: w[0]}

    merge = await client.post(
        f"{API}/sorter-jobs", json={"kind": "merge", "lot": code, "source": child["code"]}
    )
    assert merge.status_code == 201, merge.text
    target, source = merge.json()["lots"]
    assert (target["wafer_count"], source["state"], source["carrier"]) == (4, "Terminated", None)
    assert await occupied(client, "F1-FP0005") == {4: w[3], 10: w[0], 20: w[1], 21: w[2]}
    assert (await client.get(f"{API}/carriers/F1-FP0006")).json()["state"] == "dirty"

    listed = (await client.get(f"{API}/sorter-jobs", params={"lot": code})).json()
    assert [j["kind"] for j in listed["items"]] == ["merge", "split", "reslot", "reslot"]
    one = await client.get(f"{API}/sorter-jobs/{listed['items'][0]['id']}")
    assert one.json() == listed["items"][0]
    assert_problem(await client.get(f"{API}/sorter-jobs/999999"), 404, "sorter.not_found")
    kinds = [e["event_type"] for e in await events(client, code)]
    assert kinds.count("RESLOT") == 2
    assert "SPLIT" in kinds
    assert "MERGE" in kinds


async def test_sorter_job_requests_that_cannot_run(client, client_as):
    loose = await start(client)
    for body, status, problem in (
        ({"kind": "split", "lot": loose["code"]}, 422, "sorter.invalid_request"),
        ({"kind": "merge", "lot": loose["code"]}, 422, "sorter.invalid_request"),
        ({"kind": "reslot", "lot": loose["code"]}, 422, "sorter.invalid_request"),
        ({"kind": "transfer", "lot": loose["code"]}, 422, "sorter.invalid_request"),
        (
            {"kind": "transfer", "lot": loose["code"], "carrier": "F1-FP0008"},
            409,
            "carrier.lot_without_carrier",
        ),
        (
            {"kind": "reslot", "lot": loose["code"], "slots": {"X": 1}},
            409,
            "carrier.lot_without_carrier",
        ),
        ({"kind": "reslot", "lot": "NOPE", "slots": {"X": 1}}, 404, "lot.not_found"),
        ({"kind": "sort", "lot": loose["code"]}, 422, "request.invalid"),
    ):
        assert_problem(await client.post(f"{API}/sorter-jobs", json=body), status, problem)
    boxed = await start(client, carrier="F1-FP0009")
    into_itself = await client.post(
        f"{API}/sorter-jobs", json={"kind": "merge", "lot": boxed["code"], "source": boxed["code"]}
    )
    assert_problem(into_itself, 422, "lot.merge_self")
    # The failed transfer changed nothing: the carrier is still free.
    assert (await client.get(f"{API}/carriers/F1-FP0008")).json()["state"] == "available"
    dispatcher = client_as("t-dispatcher")
    denied = await dispatcher.post(
        f"{API}/sorter-jobs", json={"kind": "reslot", "lot": loose["code"], "slots": {"X": 1}}
    )
    assert denied.status_code == 403


async def test_the_carrier_travels_with_a_shipped_lot(client):
    lot = await start(client, carrier="F1-FP0013")
    code = lot["code"]
    base = f"{API}/tools/F1-ETPO02/load-ports/2"
    assert (await client.post(f"{base}/load", json={"carrier": "F1-FP0013"})).status_code == 200
    docked = await client.post(f"{API}/lots/{code}/ship", json={"to_fab": "F2"})
    assert_problem(docked, 409, "carrier.at_load_port")
    assert (await client.get(f"{API}/lots/{code}")).json()["state"] == "Waiting"
    await client.post(f"{base}/ready-to-unload")
    assert (await client.post(f"{base}/unload", json={})).status_code == 200
    shipped = await client.post(f"{API}/lots/{code}/ship", json={"to_fab": "F2"})
    assert shipped.status_code == 200, shipped.text
    carrier = (await client.get(f"{API}/carriers/F1-FP0013")).json()
    assert (carrier["location"], carrier["fab"]) == ("in_transit", "F1")
    received = await client.post(f"{API}/lots/{code}/receive", json={})
    assert received.status_code == 200, received.text
    carrier = (await client.get(f"{API}/carriers/F1-FP0013")).json()
    assert (carrier["location"], carrier["stocker"], carrier["fab"]) == ("stocker", None, "F2")


async def test_no_job_on_one_tool_for_a_carrier_docked_on_another(client):
    lot = await start(client, carrier="F1-FP0014")
    group = lot["step"]["tool_group"]
    tools = await client.get(
        f"{API}/equipment", params={"fab": "F1", "tool_group": group, "limit": 5}
    )
    first, second = [t["code"] for t in tools.json()["items"][:2]]
    base = f"{API}/tools/{first}/load-ports/1"
    assert (await client.post(f"{base}/load", json={"carrier": "F1-FP0014"})).status_code == 200
    refused = await client.post(f"{API}/lots/{lot['code']}/jobs", json={"tool": second})
    assert_problem(refused, 409, "carrier.at_other_tool")
    after = (await client.get(f"{API}/lots/{lot['code']}")).json()
    assert (after["state"], after["version"]) == ("Waiting", lot["version"])
    here = await client.post(f"{API}/lots/{lot['code']}/jobs", json={"tool": first})
    assert here.status_code == 201, here.text
