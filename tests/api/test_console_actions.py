"""Console actions beyond holds and moves: jobs, PM, split, scrap, ship — each through the API's
service, visible through the API afterwards; and the read-only pages around them."""

from __future__ import annotations

import re

from tests.api.test_console_http import browser, sign_in, start_lot
from tests.conftest import TESTER, TESTER_PASSWORD

HX = {"HX-Request": "true"}


async def test_run_a_lot_on_a_tool_then_withdraw_the_job(client):
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        lot = await start_lot(client)
        tool_page = await web.get("/console/tools/F1-WETC02")
        assert "Run here" in tool_page.text  # the tool has an OPC UA endpoint
        ran = await web.post(
            "/console/tools/F1-WETC02/jobs", data={"csrf": csrf, "lot": lot}, headers=HX
        )
        assert f"lot {lot} on F1-WETC02" in ran.text
        job = re.search(r"Job (\S+) requested", ran.text)
        assert job is not None
        assert (await client.get(f"/api/v1/lots/{lot}")).json()["state"] == "Running"
        status = await web.get("/console/tools/F1-WETC02?part=status")
        assert f"jobs/{job.group(1)}/abort" in status.text
        aborted = await web.post(
            f"/console/tools/F1-WETC02/jobs/{job.group(1)}/abort", data={"csrf": csrf}, headers=HX
        )
        assert "Abort requested" in aborted.text
        answer = (await client.get(f"/api/v1/jobs/{job.group(1)}")).json()
        assert answer["status"] == "aborted"  # not sent yet: withdrawn at once
        assert (await client.get(f"/api/v1/lots/{lot}")).json()["state"] == "Waiting"


async def test_start_and_complete_a_pm(client):
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        page = await web.get("/console/tools/F1-LI9301?part=status")
        assert "Start PM" in page.text
        started = await web.post(
            "/console/tools/F1-LI9301/pm/start",
            data={"csrf": csrf, "plan": "PM-LI93-WEEK"},
            headers=HX,
        )
        assert "started" in started.text
        tool = (await client.get("/api/v1/equipment/F1-LI9301")).json()
        assert tool["e10_substate"] == "SDT.PM"
        leaving = await web.post(
            "/console/tools/F1-LI9301/state",
            data={"csrf": csrf, "state": "SBY", "version": str(tool["version"])},
            headers=HX,
        )
        assert "pm." in leaving.text  # a PM in progress ends by completing it
        done = await web.post(
            "/console/tools/F1-LI9301/pm/complete", data={"csrf": csrf, "notes": "ok"}, headers=HX
        )
        assert "completed" in done.text
        assert (await client.get("/api/v1/equipment/F1-LI9301")).json()["e10_state"] == "SBY"


async def test_split_scrap_and_ship(client):
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        lot = await start_lot(client)
        wafers = [
            w["scribe_id"] for w in (await client.get(f"/api/v1/lots/{lot}")).json()["wafers"]
        ]
        none = await web.post(f"/console/lots/{lot}/split", data={"csrf": csrf}, headers=HX)
        assert "lot.no_wafers_chosen" in none.text
        split = await web.post(
            f"/console/lots/{lot}/split",
            data={"csrf": csrf, "wafer": wafers[:2]},
            headers=HX,
        )
        child = re.search(r"new lot (\S+)\.</div>", split.text)
        assert child is not None
        assert (await client.get(f"/api/v1/lots/{child.group(1)}")).json()["wafer_count"] == 2
        unsigned = await web.post(
            f"/console/lots/{lot}/scrap",
            data={"csrf": csrf, "wafer": wafers[2], "reason_code": "BROKEN", "reason": "dropped"},
            headers=HX,
        )
        assert "auth.signature_required" in unsigned.text
        scrapped = await web.post(
            f"/console/lots/{lot}/scrap",
            data={
                "csrf": csrf,
                "wafer": wafers[2],
                "reason_code": "BROKEN",
                "reason": "dropped",
                "password": TESTER_PASSWORD,
            },
            headers=HX,
        )
        assert "scrapped (BROKEN)" in scrapped.text
        shipped = await web.post(
            f"/console/lots/{lot}/ship", data={"csrf": csrf, "to_fab": "F2"}, headers=HX
        )
        assert "in transit" in shipped.text
        assert (await client.get(f"/api/v1/lots/{lot}")).json()["state"] == "InTransit"
        overview = await web.get("/console")
        assert lot in overview.text  # listed under the shipping fab's lots in transit


async def test_wip_and_dispatch_pages(client):
    async with browser(client) as web:
        await sign_in(web, TESTER, TESTER_PASSWORD)
        lot = await start_lot(client)
        wip = await web.get("/console/wip", params={"fab": "F1", "state": "Waiting"})
        assert wip.status_code == 200
        assert "PAD_OX_CLEAN" in wip.text  # the first step of LOGIC28, where the lot waits
        running = await web.get("/console/wip", params={"fab": "F1", "state": "Running"})
        assert "No lots match" in running.text
        dispatch = await web.get("/console/dispatch", params={"fab": "F1"})
        assert dispatch.status_code == 200
        assert "manual track-ins" in dispatch.text
        lot_page = await web.get(f"/console/lots/{lot}")
        assert "Where next" in lot_page.text
        assert "F1-WETC01" in lot_page.text
