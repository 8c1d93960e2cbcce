"""The console's SPC pages over HTTP: the chart list (all, of a tool, of a lot), one chart drawn
as server-side SVG with its limits, spec limits, the violation marked and the capability the
API computes, and the links from the tool and lot pages."""

from __future__ import annotations

import re

from tests.api.test_console_http import browser, sign_in
from tests.api.test_spc_api import TOOL, _baseline, _run, chart  # noqa: F401 (the fixture)
from tests.conftest import ROLE_PASSWORD, TESTER, TESTER_PASSWORD


def line_y(svg: str, name: str) -> float:
    found = re.search(rf'data-line="{name}"[^>]*y1="([0-9.]+)"', svg)
    assert found is not None, name
    return float(found.group(1))


async def test_chart_list_and_page_show_limits_violations_and_capability(client, chart):  # noqa: F811
    await _baseline(client)
    assert (await _run(client, 101.0, 99.0))["state"] == "Waiting"
    held = await _run(client, 108.0, 100.0)  # rule 1 at point 9 (see test_spc_api)
    api = (await client.get(f"/api/v1/quality/charts/{chart['id']}", params={"last": 60})).json()
    async with browser(client) as web:
        await sign_in(web, TESTER, TESTER_PASSWORD)
        listed = await web.get("/console/spc")
        assert listed.status_code == 200
        row = re.search(
            r'<tr><td><a href="/console/spc/(\d+)">THK-WETC01</a>.*?</tr>', listed.text, re.S
        )
        assert row is not None
        assert int(row.group(1)) == chart["id"]
        assert '<span class="alarm">1</span>' in row.group(0)  # one open violation
        assert ">10</td>" in row.group(0)  # points
        for query in (f"tool={TOOL}", f"lot={held['code']}"):
            mine = await web.get(f"/console/spc?{query}")
            assert f'href="/console/spc/{chart["id"]}"' in mine.text, query
        other = await web.get("/console/spc?tool=F1-LI9301")
        assert "THK-WETC01" not in other.text
        assert "No charts" in other.text

        page = await web.get(f"/console/spc/{chart['id']}")
        assert page.status_code == 200, page.text[:300]
        svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
        # Higher values are drawn higher (smaller y): USL above UCL above CL above LCL above LSL.
        ys = [line_y(svg, n) for n in ("USL", "UCL", "CL", "LCL", "LSL")]
        assert ys == sorted(ys)
        assert len(re.findall(r'class="mark (?:ok|violation)"', svg)) == 10
        marked = re.findall(r'class="mark violation" data-point="(\d+)"', svg)
        assert marked == ["9"]
        assert "nelson_1" in svg  # the point's title says what it broke
        limits = api["chart"]["limits"]
        assert f"UCL {limits['ucl']:.4g}" in svg
        assert f"LCL {limits['lcl']:.4g}" in svg
        for name in ("cp", "cpk", "pp", "ppk"):
            shown = re.search(rf'id="cap-{name}">\w+ <b>([^<]+)</b>', page.text)
            assert shown is not None
            assert shown.group(1) == f"{api['capability'][name]:.2f}"
        assert f'href="/console/lots/{held["code"]}"' in page.text  # the violation's lot

        for path in (f"/console/tools/{TOOL}", f"/console/lots/{held['code']}"):
            linked = await web.get(path)
            assert f'href="/console/spc/{chart["id"]}"' in linked.text, path
            assert "1 open violation" in linked.text
        unrelated = await web.get("/console/tools/F1-LI9301")
        assert "No SPC chart concerns it." in unrelated.text

        missing = await web.get("/console/spc/987654")
        assert missing.status_code == 404
        assert "spc.chart_not_found" in missing.text
        bad = await web.get("/console/spc/0")
        assert bad.status_code == 422


async def test_the_inbox_lists_open_violations_and_closes_them_with_a_comment(client, chart):  # noqa: F811
    await _baseline(client)
    await _run(client, 101.0, 99.0)
    held = await _run(client, 108.0, 100.0)  # rule 1 at point 9
    violations = (await client.get("/api/v1/quality/violations", params={"open": "true"})).json()
    (violation,) = violations["items"]
    action = f"/console/violations/{violation['id']}/acknowledge"
    # An operator sees the inbox without the closing form, and is refused closing anyway.
    async with browser(client) as web:
        csrf = await sign_in(web, "t-operator", ROLE_PASSWORD)
        seen = await web.get("/console/violations")
        assert "nelson_1" in seen.text
        assert f'action="{action}"' not in seen.text
        refused = await web.post(
            action, data={"csrf": csrf, "key": "ack-op-0000001", "comment": "ok"}
        )
        assert "auth.forbidden" in refused.text
    still_open = (await client.get("/api/v1/quality/violations", params={"open": "true"})).json()
    assert still_open["total"] == 1
    async with browser(client) as web:
        csrf = await sign_in(web, TESTER, TESTER_PASSWORD)
        inbox = await web.get("/console/violations")
        assert inbox.status_code == 200
        row = re.search(r"<tr><td>.*?</tr>", inbox.text[inbox.text.index('id="spc-inbox"') :], re.S)
        assert row is not None
        assert "nelson_1" in row.group(0)
        assert f'href="/console/lots/{held["code"]}"' in row.group(0)
        assert f'href="/console/spc/{chart["id"]}"' in row.group(0)
        assert f'action="{action}"' in row.group(0)
        # No comment: refused with the code, nothing closed.
        empty = await web.post(action, data={"csrf": csrf, "key": "ack-000000000", "comment": ""})
        assert "spc.comment_required" in empty.text
        still = (await client.get("/api/v1/quality/violations", params={"open": "true"})).json()
        assert still["total"] == 1
        done = await web.post(
            action, data={"csrf": csrf, "key": "ack-123456789", "comment": "probe cleaned"}
        )
        assert done.status_code in (200, 303), done.text[:300]
        closed = (await client.get("/api/v1/quality/violations")).json()["items"][0]
        assert (closed["acknowledged_by"], closed["comment"]) == (TESTER, "probe cleaned")
        after = await web.get("/console/violations")
        assert "No open violations." in after.text
        # Closing it again: the service's refusal, shown.
        again = await web.post(
            action, data={"csrf": csrf, "key": "ack-223456789", "comment": "twice"}
        )
        assert "spc.already_acknowledged" in again.text
