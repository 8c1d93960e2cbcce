"""Live refreshes leave the operator's work alone: a region marked ``data-keep-edits`` is not
swapped while a dialog in it is open or a field is focused or edited; the refresh follows."""

from __future__ import annotations

import asyncio

from playwright.async_api import BrowserContext, Route, expect

from tests.browser.conftest import Console, sign_in

# Resolves with what the next live refresh of #lot-actions did: swapped it, or held it back.
WATCH_LOT_ACTIONS = """() => {
    const region = document.getElementById('lot-actions');
    window.lotActionsRefresh = new Promise((resolve) => {
        document.body.addEventListener('htmx:afterSwap', (e) => {
            if (e.detail.target && e.detail.target.id === 'lot-actions') resolve('swapped');
        });
        new MutationObserver(() => {
            if (region.hasAttribute('data-keep-edits-pending')) resolve('deferred');
        }).observe(region, {attributes: true});
    });
}"""


async def hold_by_api(console: Console, lot: str, reason: str) -> None:
    body = {"hold_code": "OPERATOR", "reason": reason}
    await console.call("supervisor", "POST", f"/api/v1/lots/{lot}/hold", json=body)


async def test_a_live_change_does_not_wipe_the_hold_reason_being_typed(
    context: BrowserContext, console: Console
) -> None:
    lot = await console.start_lot()
    page = await sign_in(context, "operator", f"/console/lots/{lot}")
    await expect(page.locator("[data-lot-state]")).to_have_text("Waiting")
    await page.evaluate(WATCH_LOT_ACTIONS)
    await page.fill("#hold-reason", "wafer chipped at the")  # still typing: the field has focus
    # Meanwhile a supervisor holds the lot elsewhere: the change feed tells this page.
    await hold_by_api(console, lot, "line stop by the supervisor")
    await expect(page.locator("[data-lot-state]")).to_have_text("OnHold")  # the body refreshed
    refresh = await asyncio.wait_for(page.evaluate("window.lotActionsRefresh"), 15)
    await expect(page.locator("#hold-reason")).to_have_value("wafer chipped at the")
    assert refresh == "deferred"
    await expect(page.locator("#hold-reason")).to_be_focused()
    # The operator finishes and sends; then the held-back refresh shows the new state.
    await page.type("#hold-reason", " edge")
    await page.click("#hold-form button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("is on hold")
    await expect(page.locator("#release-open")).to_be_visible()
    await expect(page.locator("#lot-actions")).not_to_have_attribute("data-keep-edits-pending", "")
    await expect(page.locator("#hold-reason")).to_have_value("")


async def test_a_release_signs_the_holds_shown_while_a_second_hold_arrives_live(
    context: BrowserContext, console: Console
) -> None:
    lot = await console.start_lot()
    await hold_by_api(console, lot, "first look at the edge")
    page = await sign_in(context, "operator", f"/console/lots/{lot}")
    holds = await context.new_page()
    await holds.goto("/console/holds")
    await expect(holds.locator("#holds-table")).to_contain_text(lot)
    await page.click("#release-open")
    await page.fill("#release-reason", "edge inspected, fine")
    await expect(page.locator("#release-holds input")).to_have_count(1)
    # A second hold arrives while the dialog is open: the page hears of it (a hold record on a
    # lot already on hold changes nothing else) and keeps the dialog as the operator sees it.
    await hold_by_api(console, lot, "second look by the supervisor")
    await expect(page.locator("#lot-actions")).to_have_attribute("data-keep-edits-pending", "")
    await expect(holds.locator("#holds-table")).to_contain_text("second look by the supervisor")
    await expect(page.locator("#release-reason")).to_have_value("edge inspected, fine")
    await page.fill("#release-password", "change-me-operator")
    await page.click("#release-dialog button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("released")
    # Only the hold the operator saw was signed for: the second one stays, and now shows.
    await expect(page.locator("[data-lot-state]")).to_have_text("OnHold")
    await expect(page.locator("#release-holds")).to_contain_text("second look by the supervisor")
    await expect(page.locator("#release-holds")).not_to_contain_text("first look at the edge")
    await expect(holds.locator("#holds-table")).not_to_contain_text("first look at the edge")


async def test_a_refresh_sent_before_the_dialog_opened_does_not_replace_it(
    context: BrowserContext, console: Console
) -> None:
    # Seen in CI: a refresh of the lot's actions was on its way when the operator opened the
    # release dialog; its answer replaced the open dialog. Here that answer is held back until
    # the dialog is open and being filled in, then let through.
    lot = await console.start_lot()
    await hold_by_api(console, lot, "edge to be inspected")
    page = await sign_in(context, "operator", f"/console/lots/{lot}")
    await expect(page.locator("#release-open")).to_be_visible()
    answer_held, requested = asyncio.Event(), asyncio.Event()

    async def hold_back(route: Route) -> None:
        requested.set()
        await answer_held.wait()
        await route.continue_()

    await page.route("**/console/lots/*?part=actions", hold_back)
    await page.evaluate("htmx.trigger(document.body, 'mes-changed')")
    await asyncio.wait_for(requested.wait(), 15)
    await page.click("#release-open")
    await page.fill("#release-reason", "edge inspected, fine")
    answer_held.set()
    await expect(page.locator("#lot-actions")).to_have_attribute("data-keep-edits-pending", "")
    await expect(page.locator("#release-reason")).to_be_visible()
    await expect(page.locator("#release-reason")).to_have_value("edge inspected, fine")
    await page.unroute("**/console/lots/*?part=actions")
    # Closing the dialog lets the held-back refresh through.
    await page.keyboard.press("Escape")
    await expect(page.locator("#lot-actions")).not_to_have_attribute("data-keep-edits-pending", "")
