"""The console's SPC and engineering pages and the lot page's future hold and merge in a real
browser: an SPC chart with its limits and a violation drawn as server-side SVG, linked from its
tool; a route draft activated with an e-signature; the qualification matrix and the dispatch
rule sets; accessibility (axe-core) and screenshots of each page."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Route, expect

from tests.api.test_routes_api import SOUND_STEPS
from tests.browser.conftest import Console, check_page, sign_in

SIGNED = {"signature": {"reason": "measurement plan reviewed"}}
# Not required: the browser tests share one line, and lots other tests track out by hand at this
# step carry no values.
THK = {"name": "THK", "unit": "nm", "wafers": [1, 3], "sites": 1, "lsl": 80.0, "usl": 120.0,
       "required": False}  # fmt: skip
# Two wafers a lot; three lots set the limits (baseline), then in control, then a shift.
LOTS = [(99.0, 101.0), (100.0, 102.0), (98.0, 100.0), (101.0, 99.0), (100.0, 109.0)]


async def _run_measured(console: Console, slot1: float, slot3: float) -> tuple[str, str]:
    """A lot through its first step on a free wet clean tool, with its two measured values."""
    lot = await console.start_lot()
    for tool in ("F1-WETC01", "F1-WETC02"):
        answer = await console.api.post(
            f"/api/v1/lots/{lot}/track-in",
            json={"tool": tool},
            headers={"Authorization": f"Bearer {await console.token('operator')}"},
        )
        if answer.status_code == 200:
            break
    else:
        raise AssertionError(f"no wet clean tool took {lot}: {answer.text}")
    values = [
        {"parameter": "THK", "slot": 1, "site": 1, "value": slot1},
        {"parameter": "THK", "slot": 3, "site": 1, "value": slot3},
    ]
    await console.call("operator", "POST", f"/api/v1/lots/{lot}/track-out", json={"edc": values})
    return lot, tool


async def _chart(console: Console) -> dict[str, Any]:
    plan = {"name": "BROWSER-THK", "operation": "PAD_OX_CLEAN", "body": {"parameters": [THK]}}
    await console.call("engineer", "POST", "/api/v1/quality/plans", json=plan)
    await console.call(
        "engineer2", "POST", "/api/v1/quality/plans/BROWSER-THK/versions/1/approve", json=SIGNED
    )
    body = {
        "code": "BROWSER-THK",
        "plan": "BROWSER-THK",
        "parameter": "THK",
        "context": {"operation": "PAD_OX_CLEAN"},
        "kind": "individuals",
        "baseline_points": 6,
        "actions": {"*": ["notify"]},  # no hold, no inhibit: the shared line keeps running
    }
    return dict(await console.call("engineer", "POST", "/api/v1/quality/charts", json=body))


async def test_an_spc_chart_shows_its_limits_and_marks_the_violation(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    chart = await _chart(console)
    ran = [await _run_measured(console, a, b) for a, b in LOTS]
    data = await console.call("engineer", "GET", f"/api/v1/quality/charts/{chart['id']}")
    broken = [p["number"] for p in data["points"] if p["violations"]]
    assert broken, "the shift breaks a run rule"

    page = await sign_in(context, "engineer", "/console/spc")
    await expect(page.locator("#spc-charts")).to_contain_text("BROWSER-THK")
    await check_page(page, screenshot_dir, "spc-list")
    await page.get_by_role("link", name="BROWSER-THK").click()
    await expect(page.locator("h1")).to_contain_text("SPC chart BROWSER-THK")
    svg = page.locator("#spc-svg")
    await expect(svg).to_be_visible()
    await expect(svg.locator(".mark")).to_have_count(len(data["points"]))
    await expect(svg.locator(".mark.violation")).to_have_count(len(broken))
    for line in ("CL", "UCL", "LCL", "USL", "LSL"):
        await expect(svg.locator(f'[data-line="{line}"]')).to_have_count(1)
    cpk = data["capability"]["cpk"]
    await expect(page.locator("#cap-cpk b")).to_have_text(f"{cpk:.2f}")
    await check_page(page, screenshot_dir, "spc-chart")

    tool = ran[-1][1]
    await page.goto(f"/console/tools/{tool}")
    await page.locator("#spc-links").scroll_into_view_if_needed()
    await page.get_by_role("link", name="BROWSER-THK").click()
    await expect(page.locator("#spc-svg")).to_be_visible()

    # The engineers' inbox: the open violations, each closed with a comment.
    await page.goto("/console/violations")
    rows = page.locator("#spc-inbox tbody tr")
    await expect(rows).to_have_count(len(broken))
    await check_page(page, screenshot_dir, "spc-inbox")
    first = rows.first
    await first.get_by_label("Comment").fill("cleaned the probe")
    await first.get_by_role("button", name="Acknowledge").click()
    await expect(page.locator("#action-result")).to_contain_text("acknowledged")


async def test_a_route_draft_is_read_and_activated_with_an_e_signature(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    kept = SOUND_STEPS  # three of R-TESTWF's five operations (as the API's route tests)
    draft = await console.call(
        "engineer", "POST", "/api/v1/routes/R-TESTWF/versions", json={"steps": kept}
    )
    number = draft["version"]
    page = await sign_in(context, "engineer", "/console/routes")
    await check_page(page, screenshot_dir, "routes")
    await page.get_by_role("link", name=f"v{number}", exact=True).first.click()
    await expect(page.locator("h1")).to_contain_text(f"version {number}")
    await expect(page.locator("#steps-table tbody tr")).to_have_count(len(kept))
    await expect(page.locator("#route-diff")).to_contain_text("removed")
    await check_page(page, screenshot_dir, "route-version")
    await page.get_by_role("button", name="Activate…").click()
    await page.fill("#act-reason", "last step moved to another route")
    await page.fill("#act-password", "change-me-engineer")
    await page.click("#activate-dialog button[type=submit]")
    await expect(page.locator("#activate-result")).to_contain_text(f"version {number} is active")
    after = await console.call("engineer", "GET", "/api/v1/routes/R-TESTWF")
    assert after["active_version"] == number


async def test_qualifications_and_rule_sets_pages(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    body = {
        "fab": "F1",
        "tool_group": "WET_CLEAN",
        "rules": [{"rule": "priority", "weight": 10}, {"rule": "fifo", "weight": 2}],
        "note": "hot lots first on the wet benches",
    }
    await console.call("engineer", "POST", "/api/v1/dispatch/rule-sets", json=body)
    page = await sign_in(context, "engineer", "/console/qualifications?fab=F1&tool_group=WET_CLEAN")
    await expect(page.locator("#qual-matrix")).to_contain_text("F1-WETC01")
    await check_page(page, screenshot_dir, "qualifications")
    await page.get_by_role("link", name="Dispatch rule sets").click()
    await expect(page.locator("h1")).to_contain_text("Dispatching rule sets of F1")
    await expect(page.locator("#rule-sets-table")).to_contain_text("F1/group/WET_CLEAN")
    await check_page(page, screenshot_dir, "rule-sets")


async def test_a_future_hold_and_a_merge_from_the_lot_page(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    lot = await console.start_lot()
    detail = await console.call("supervisor", "GET", f"/api/v1/lots/{lot}")
    scribes = [w["scribe_id"] for w in detail["wafers"]]
    split = await console.call(
        "supervisor", "POST", f"/api/v1/lots/{lot}/split", json={"wafers": scribes[:2]}
    )
    child = split["child"]["code"]
    page = await sign_in(context, "supervisor", f"/console/lots/{lot}")
    await page.select_option("#future-step", "30")
    await page.select_option("#future-code", "ENGINEERING")
    await page.fill("#future-reason", "check the oxide before litho")
    await page.click("#future-hold-form button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("will be held (ENGINEERING)")
    await expect(page.locator("#future-holds")).to_contain_text("check the oxide")
    await page.fill("#merge-source", child)
    await page.click("#merge-form button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text(f"{child} merged into {lot}")
    # The page refreshes itself: the lot has its wafers back, the genealogy shows the merge.
    await expect(page.locator("h1")).to_contain_text(f"{len(scribes)} wafers")
    await check_page(page, screenshot_dir, "lot-future-merge")
    # A live refresh replaces the region, and the form that sent the cancel, while the cancel is
    # on its way (seen in CI): the page must still refresh when the answer comes.
    answer_held = asyncio.Event()

    async def hold_back(route: Route) -> None:
        await answer_held.wait()
        await route.continue_()

    await page.route("**/future-holds/*/cancel", hold_back)
    cancel = page.get_by_role("button", name="Cancel the future hold at step 30")
    sent_from = await cancel.element_handle()
    await cancel.click()
    await page.evaluate("htmx.trigger(document.body, 'mes-changed')")
    await page.wait_for_function("form => !form.isConnected", arg=sent_from)
    answer_held.set()
    await expect(page.locator("#action-result")).to_contain_text("cancelled")
    await expect(page.locator("#future-holds")).to_have_count(0)
    after = await console.call("supervisor", "GET", f"/api/v1/lots/{lot}")
    assert after["wafer_count"] == len(scribes)
