"""The console shows lots in transit on the WIP page of both fabs (arriving, with the expected
arrival; leaving) and recalls a shipment from the lot page."""

from __future__ import annotations

from tests.api.test_console_http import browser, sign_in, start_lot
from tests.conftest import TESTER, TESTER_PASSWORD

HX = {"HX-Request": "true"}


async def test_wip_pages_show_the_travelling_lot_and_the_lot_page_recalls_it(client):
    set_time = await client.put(
        "/api/v1/dispatch/transfer-times", json={"from_fab": "F1", "to_fab": "F2", "time_s": 5400}
    )
    assert set_time.status_code == 200, set_time.text
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        lot = await start_lot(client)
        shipped = await client.post(f"/api/v1/lots/{lot}/ship", json={"to_fab": "F2"})
        assert shipped.status_code == 200, shipped.text

        arriving = (await web.get("/console/wip", params={"fab": "F2"})).text
        row = arriving.split(f">{lot}</a>")[1].split("</tr>")[0]
        assert "<td>F1</td><td>F2</td>" in row
        assert ">1.5 h<" in row  # 90 minutes of transfer, none gone yet
        assert 'class="arriving"' in arriving.split(f">{lot}</a>")[0].rsplit("<tr", 1)[1]
        leaving = (await web.get("/console/wip", params={"fab": "F1"})).text
        assert 'class="leaving"' in leaving.split(f">{lot}</a>")[0].rsplit("<tr", 1)[1]

        page = await web.get(f"/console/lots/{lot}")
        assert "Recall the shipment" in page.text
        unexplained = await web.post(
            f"/console/lots/{lot}/recall", data={"csrf": csrf, "reason": ""}, headers=HX
        )
        assert "lot.reason_required" in unexplained.text
        assert (await client.get(f"/api/v1/lots/{lot}")).json()["state"] == "InTransit"
        recalled = await web.post(
            f"/console/lots/{lot}/recall",
            data={"csrf": csrf, "reason": "customer moved the order"},
            headers=HX,
        )
        assert "recalled" in recalled.text
        answer = (await client.get(f"/api/v1/lots/{lot}")).json()
        assert (answer["state"], answer["fab"]) == ("Waiting", "F1")
        after = (await web.get("/console/wip", params={"fab": "F2"})).text
        assert f">{lot}</a>" not in after
        assert "No lot travels to or from F2" in after
