"""The console's engineering edits in a real browser: a dispatch rule set published from its page
(and the shadow report beside it), the E10 and OEE charts drawn as server-side SVG, and a
qualification withdrawn and given back from the matrix; an operator is offered none of the
forms. Accessibility (axe-core) and screenshots of each page."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import BrowserContext, expect

from mes.clock import SystemClock
from mes.config import Settings
from mes.db.engine import Database, create_engine
from mes.dispatch.scheduler import Dispatcher, Mode
from tests.browser.conftest import Console, check_page, sign_in

MATRIX = "/console/qualifications?fab=F1&tool_group=ETCH_OXIDE"


async def test_a_shadow_rule_set_is_published_from_the_rule_sets_page(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    page = await sign_in(context, "engineer", "/console/rule-sets?fab=F1")
    await expect(page.locator("#shadow-report")).to_contain_text("Shadow sets against production")
    await page.get_by_text("Publish a new version").click()
    await page.select_option("#pub-scope", "group/ETCH_OXIDE")
    await page.get_by_label("shadow", exact=True).check()
    await page.get_by_label("Rule 1", exact=True).select_option("fifo")
    await page.get_by_label("Weight 1", exact=True).fill("1")
    await page.get_by_label("Rule 2", exact=True).select_option("priority")
    await page.get_by_label("Weight 2", exact=True).fill("3")
    await page.fill("#pub-note", "try FIFO first on the oxide etchers")
    await check_page(page, screenshot_dir, "rule-sets-publish")
    await page.click("#publish-form button[type=submit]")
    await expect(page.locator("#publish-result")).to_contain_text(
        "F1/group/ETCH_OXIDE#shadow version 1 (shadow) is published"
    )
    # The table refreshes itself with the new version.
    await expect(page.locator("#rule-sets-table")).to_contain_text("F1/group/ETCH_OXIDE")
    sets = await console.call("engineer", "GET", "/api/v1/dispatch/rule-sets?fab=F1")
    (shadow,) = [s for s in sets if s["scope"] == "F1/group/ETCH_OXIDE#shadow"]
    assert [(r["rule"], r["weight"]) for r in shadow["rules"]] == [("fifo", 1.0), ("priority", 3.0)]
    # A refusal is shown with its problem code, nothing published.
    await page.get_by_label("Parameters 1", exact=True).fill("scale_s")
    await page.click("#publish-form button[type=submit]")
    await expect(page.locator("#publish-result")).to_contain_text("request.invalid")


async def test_the_shadow_report_shows_where_the_shadow_set_would_choose_otherwise(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    await console.start_lot()  # an older normal lot: FIFO's choice
    hot = str(
        (
            await console.call(
                "supervisor", "POST", "/api/v1/lots",
                json={"product": "LOGIC28", "fab": "F1", "wafer_count": 5, "priority_class": "hot"},
            )
        )["code"]
    )  # fmt: skip
    body = {"fab": "F1", "tool_group": "WET_CLEAN", "rules": [{"rule": "fifo"}], "shadow": True}
    await console.call("engineer", "POST", "/api/v1/dispatch/rule-sets", json=body)
    # One real dispatch cycle in advisory mode: decisions logged (shadow beside production),
    # no job requested, so the shared line is left as it was for the other tests.
    engine = create_engine(Settings(database_url=console.database_url))
    try:
        runner = Dispatcher(
            Database(engine), SystemClock(), {"F1": Mode.ADVISE}, owner="browser-test",
            lease_ttl_s=5,
        )  # fmt: skip
        await runner.cycle("F1")
    finally:
        await engine.dispose()
    report = await console.call(
        "operator", "GET", "/api/v1/dispatch/shadow-report?fab=F1&since=2026-01-01T00:00:00Z"
    )
    assert report["compared"] >= 1
    page = await sign_in(context, "operator", "/console/rule-sets?fab=F1&hours=2")
    rate = f"{100 * report['agreement_rate']:.0f} %"
    await expect(page.locator("#shadow-agreement b")).to_have_text(rate)
    differences = page.locator("#shadow-differences tbody tr")
    await expect(differences).to_have_count(len(report["differences"]))
    assert report["differences"], "the hot lot is production's choice, not FIFO's"
    # Production takes the hot lot first; FIFO an older normal lot (the one above, or one
    # another test left waiting when the whole folder runs).
    first = differences.first
    await expect(first.locator("td").nth(2)).to_contain_text(hot)
    await expect(first.locator("td").nth(3)).not_to_contain_text(hot)
    await expect(page.locator("#publish-form")).to_have_count(0)  # an operator may not publish
    await check_page(page, screenshot_dir, "rule-sets-shadow-report")


async def test_e10_and_oee_charts_per_tool_group(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    page = await sign_in(context, "operator", "/console/metrics?fab=F1&hours=24")
    e10 = page.locator("#e10-svg")
    await expect(e10).to_be_visible()
    await expect(e10.locator('g[data-group="WET_CLEAN"] rect.seg').first).to_be_visible()
    await expect(page.locator("#oee-svg g[data-group]")).to_have_count(
        await e10.locator("g[data-group]").count()
    )
    await check_page(page, screenshot_dir, "metrics-charts")


async def test_a_qualification_is_withdrawn_and_given_back_from_the_matrix(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    operator = await sign_in(context, "operator", MATRIX)
    await expect(operator.locator("#qual-matrix")).to_contain_text("F1-ETOX01")
    await expect(operator.locator("#qualify-form")).to_have_count(0)
    await expect(operator.locator("#withdraw-form")).to_have_count(0)
    await context.clear_cookies()

    page = await sign_in(context, "engineer", MATRIX)
    await check_page(page, screenshot_dir, "qualifications-edit")
    await page.select_option("#withdraw-which", "ETOX_CONTACT|1|F1-ETOX01|")
    await page.fill("#withdraw-reason", "endpoint detection drifts")
    await page.click("#withdraw-form button[type=submit]")
    await expect(page.locator("#qual-result")).to_contain_text(
        "ETOX_CONTACT v1 is no longer qualified on F1-ETOX01."
    )
    cell = page.locator("#qual-matrix tbody tr", has_text="F1-ETOX01").locator("td").first
    await expect(cell).not_to_contain_text("v1")
    # Given back on one chamber, then on the whole tool (other tests use the tool).
    await page.select_option("#qualify-version", "ETOX_CONTACT|1")
    await page.select_option("#qualify-chamber", "F1-ETOX01|PM2")
    await page.click("#qualify-form button[type=submit]")
    await expect(page.locator("#qual-result")).to_contain_text("qualified on F1-ETOX01 chamber PM2")
    await expect(cell).to_contain_text("v1 PM2")
    await page.select_option("#qualify-version", "ETOX_CONTACT|1")
    await page.select_option("#qualify-tool", "F1-ETOX01")
    await page.click("#qualify-form button[type=submit]")
    await expect(page.locator("#qual-result")).to_contain_text(
        "ETOX_CONTACT v1 is qualified on F1-ETOX01."
    )
    await check_page(page, screenshot_dir, "qualifications-after")


async def test_a_lot_is_made_an_engineering_lot_and_its_run_released_at_track_in(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    lot = await console.start_lot()
    # The engineer tracks the lot in, so needs the wet benches' certification (a supervisor's).
    certified = await console.api.post(
        "/api/v1/users/engineer/certifications",
        json={"tool_group": "WET_CLEAN", "signature": {"reason": "trained on the wet benches"}},
        headers={"Authorization": f"Bearer {await console.token('supervisor')}"},
    )
    assert certified.status_code in (201, 409), certified.text
    page = await sign_in(context, "engineer", f"/console/lots/{lot}")
    await expect(page.locator("#eng-release")).to_have_count(0)  # a production lot
    # The actions are swapped twice after a change: at once (the form's answer) and when the
    # change feed's event for the lot arrives; fields filled in between would be replaced.
    await page.evaluate(
        """window.actionSwaps = 0;
        document.body.addEventListener('htmx:afterSwap', (e) => {
            if (e.detail.target.id === 'lot-actions') window.actionSwaps += 1;
        });"""
    )
    await page.get_by_role("button", name="Change lot type…").click()
    await page.select_option("#lot-type-new", "engineering")
    await page.fill("#lot-type-reason", "DOE split: thinner pad oxide")
    await page.fill("#lot-type-password", "change-me-engineer")
    await page.click("#lot-type-dialog button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("is now of type engineering")
    await page.wait_for_function("window.actionSwaps >= 2")
    # The actions refresh themselves: an engineering lot offers the signed release.
    release = page.locator("#eng-release")
    await expect(release).to_have_count(1)
    await release.locator("summary").click()
    await release.get_by_label("Release this run as an engineering run").check()
    await page.fill("#eng-reason", "DOE split approved by process engineering")
    await page.fill("#eng-password", "change-me-engineer")
    await check_page(page, screenshot_dir, "lot-engineering-release")
    await page.click("#track-in-form button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text(
        "Engineering run released by engineer."
    )
    after = await console.call("engineer", "GET", f"/api/v1/lots/{lot}")
    assert (after["lot_type"], after["state"]) == ("engineering", "Running")
    # Off the tool again: the other tests share the wet benches.
    await console.call("engineer", "POST", f"/api/v1/lots/{lot}/track-out", json={})
