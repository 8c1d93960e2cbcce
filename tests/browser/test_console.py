"""The console in a real browser: sign-in, live tool tiles, scanning, holds with e-signatures,
track-in and track-out by hand, four-eyes approval, permissions, broken sessions, accessibility."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from playwright.async_api import BrowserContext, Page, expect

from mes.audit.context import AuditContext, bind
from mes.clock import SystemClock
from mes.config import Settings
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.equipment import service as equipment_service
from mes.equipment.schemas import StateChange
from mes.equipment.states import E10State
from tests.browser.conftest import SIM_TOOL, Console, check_page, sign_in


async def open_release_dialog(page: Page) -> None:
    """Open the release dialog; again if a live refresh of the lot's actions (the refused
    signature's audit event arrives about a second later) replaced it as it opened."""
    for _ in range(5):
        await page.click("#release-open")
        try:
            await expect(page.locator("#release-reason")).to_be_visible(timeout=3000)
            return
        except AssertionError:
            continue
    await expect(page.locator("#release-reason")).to_be_visible()


async def test_sign_in_shows_every_fab_side_by_side(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    login = await context.new_page()
    await login.goto("/console")
    assert "/console/login" in login.url
    await check_page(login, screenshot_dir, "login")
    await login.close()
    page = await sign_in(context, "supervisor")
    await expect(page.locator("h1")).to_contain_text("Network overview")
    for fab in ("F1", "F2"):
        await expect(page.locator(f"#fab-{fab}")).to_contain_text("lots in WIP")
    await check_page(page, screenshot_dir, "overview")


async def test_wrong_password_is_refused(context: BrowserContext) -> None:
    page = await context.new_page()
    await page.goto("/console/login")
    await page.fill("#username", "operator")
    await page.fill("#password", "not-the-password")
    await page.click("button[type=submit]")
    await expect(page.locator("[role=alert]")).to_contain_text("Wrong username or password")


async def test_a_tool_tile_changes_state_live(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    page = await sign_in(context, "operator", "/console/fabs/F1")
    tile = page.locator(f"#tile-{SIM_TOOL}")
    await expect(tile).to_have_attribute("data-state", "SBY")
    await check_page(page, screenshot_dir, "board")
    # The simulated tool breaks down; its adapter (in the server process) puts it into
    # UDT.ALARM; the change feed tells the open board, which swaps the tile. No reload.
    await console.sim.inject("breakdown")
    try:
        await expect(page.locator(f"#tile-{SIM_TOOL}")).to_have_attribute(
            "data-state", "UDT", timeout=20_000
        )
        await expect(page.locator(f"#tile-{SIM_TOOL}")).to_contain_text("alarm")
    finally:
        await console.sim.clear_alarm("BREAKDOWN")
    await expect(page.locator(f"#tile-{SIM_TOOL}")).not_to_have_attribute(
        "data-state", "UDT", timeout=20_000
    )


async def test_scan_a_lot_then_hold_and_release_it_with_an_e_signature(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    lot = await console.start_lot()
    page = await sign_in(context, "operator")
    await page.fill("#scan", lot)
    await page.press("#scan", "Enter")
    await expect(page).to_have_url(re.compile(f"/console/lots/{lot}$"))
    await expect(page.locator("[data-lot-state]")).to_have_text("Waiting")

    await page.select_option("#hold-code", "OPERATOR")
    await page.fill("#hold-reason", "wafer chipped at the edge")
    await page.click("#hold-form button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("is on hold")
    await expect(page.locator("[data-lot-state]")).to_have_text("OnHold")
    await check_page(page, screenshot_dir, "lot")

    # The release dialog: a wrong password is refused and nothing changes.
    await open_release_dialog(page)
    await page.fill("#release-reason", "edge inspected, fine")
    await page.fill("#release-password", "wrong-password")
    await page.click("#release-dialog button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("auth.signature_invalid")
    await expect(page.locator("[data-lot-state]")).to_have_text("OnHold")

    await open_release_dialog(page)
    await page.fill("#release-reason", "edge inspected, fine")
    await page.fill("#release-password", "change-me-operator")
    await page.click("#release-dialog button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("released")
    await expect(page.locator("[data-lot-state]")).to_have_text("Waiting")
    # The trail names the signature, as for the API.
    trail = await console.call("supervisor", "GET", f"/api/v1/audit?target_id={lot}")
    signed = [e for e in trail["items"] if e.get("signature_meaning")]
    assert signed
    assert signed[0]["operation"] == "lots.release"
    assert signed[0]["actor"] == "operator"


async def test_track_a_lot_in_and_out_by_hand(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    lot = await console.start_lot()
    page = await sign_in(context, "operator", f"/console/lots/{lot}")
    tool = await page.locator("#track-in-tool").input_value()
    # The pre-check runs track-in's own checks before anything is done.
    await expect(page.locator("#precheck")).to_contain_text(f"may be tracked in on {tool}")
    await page.click("#track-in-form button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text(f"tracked in on {tool}")
    await expect(page.locator("[data-lot-state]")).to_have_text("Running")
    await page.click("#track-out-form button[type=submit]")
    await expect(page.locator("#action-result")).to_contain_text("tracked out: now at step 20")
    await expect(page.locator("[data-lot-state]")).to_have_text("Waiting")
    history = await console.call("supervisor", "GET", f"/api/v1/lots/{lot}/history")
    kinds = [e["event_type"] for e in history["items"]]
    assert kinds[-2:] == ["TRACK_IN", "TRACK_OUT"]

    tool_page = await context.new_page()
    await tool_page.goto(f"/console/tools/{tool}")
    await expect(tool_page.locator("#tool-status")).to_contain_text("Last 24 h")
    await check_page(tool_page, screenshot_dir, "tool")


async def test_the_tool_page_explains_its_dispatch_list(
    context: BrowserContext, console: Console
) -> None:
    lot = await console.start_lot()
    page = await sign_in(context, "operator", "/console/tools/F1-WETC01")
    row = page.locator("#dispatch-list tr", has_text=lot)
    await expect(row).to_contain_text("fifo")
    await expect(row).to_contain_text("priority class normal")


async def _draft(console: Console) -> tuple[str, int]:
    current = await console.call("engineer", "GET", "/api/v1/recipes/WETC_PRECLEAN/versions/1")
    made = await console.call(
        "engineer",
        "POST",
        "/api/v1/recipes/WETC_PRECLEAN/versions",
        json={"body": current["body"]},
    )
    return "WETC_PRECLEAN", int(made["version"])


async def test_an_operator_is_neither_offered_nor_allowed_an_engineers_approval(
    context: BrowserContext, console: Console
) -> None:
    recipe, version = await _draft(console)
    page = await sign_in(context, "operator", "/console/recipes")
    row = page.locator(f"#draft-{recipe}-{version}")
    await expect(row).to_contain_text("engineers approve")
    await expect(row.locator("button")).to_have_count(0)
    # Sent anyway (a hand-made form with a valid session and CSRF token): refused.
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    answer = await page.request.post(
        f"/console/recipes/{recipe}/versions/{version}/approve",
        form={"csrf": csrf or "", "reason": "looks right", "password": "change-me-operator"},
        headers={"HX-Request": "true"},
    )
    assert "auth.forbidden" in await answer.text()
    still = await console.call("engineer", "GET", f"/api/v1/recipes/{recipe}/versions/{version}")
    assert still["status"] == "draft"


async def test_a_second_engineer_approves_a_recipe_version(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    recipe, version = await _draft(console)
    author = await sign_in(context, "engineer", "/console/recipes")
    await expect(author.locator(f"#draft-{recipe}-{version}")).to_contain_text("your own version")
    await author.close()
    await context.clear_cookies()

    page = await sign_in(context, "engineer2", "/console/recipes")
    row = page.locator(f"#draft-{recipe}-{version}")
    await check_page(page, screenshot_dir, "recipes")
    await row.get_by_role("button", name="Approve…").click()
    dialog = page.locator(f"#approve-{recipe}-{version}")
    await dialog.locator("input[name=reason]").fill("parameters unchanged, checked")
    await dialog.locator("input[name=password]").fill("change-me-engineer2")
    await dialog.get_by_role("button", name="Sign and approve").click()
    await expect(page.locator("#approve-result")).to_contain_text("approved")
    await expect(page.locator(f"#draft-{recipe}-{version}")).to_have_count(0)
    done = await console.call("engineer", "GET", f"/api/v1/recipes/{recipe}/versions/{version}")
    assert (done["status"], done["approved_by"]) == ("approved", "engineer2")


async def test_a_broken_session_goes_to_the_login_page(
    context: BrowserContext, console: Console
) -> None:
    await context.add_cookies(
        [{"name": "mes_console", "value": "not.a.token", "url": console.url + "/console"}]
    )
    page = await context.new_page()
    await page.goto(f"/console/tools/{SIM_TOOL}")
    await expect(page).to_have_url(re.compile(r"/console/login\?next=/console/tools/"))
    await expect(page.locator("h1")).to_contain_text("Sign in")


async def test_supervisor_pages_pass_accessibility_checks(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    lot = await console.start_lot()
    await console.call(
        "supervisor",
        "POST",
        f"/api/v1/lots/{lot}/hold",
        json={"hold_code": "QUALITY", "reason": "particles above limit"},
    )
    page = await sign_in(context, "supervisor", "/console/holds")
    await expect(page.locator("#holds-table")).to_contain_text(lot)
    await check_page(page, screenshot_dir, "holds")
    await page.goto(f"/console/audit?target={lot}")
    await expect(page.locator("table")).to_contain_text("lots.hold")
    await check_page(page, screenshot_dir, "audit")


async def test_the_overview_and_board_show_a_line_with_work_in_it(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    lots = [await console.start_lot(fab) for fab in ("F1", "F1", "F1", "F2", "F2")]
    await console.call(
        "operator", "POST", f"/api/v1/lots/{lots[0]}/track-in", json={"tool": "F1-WETC02"}
    )
    page = await sign_in(context, "supervisor")
    await expect(page.locator("#fab-F1")).to_contain_text("Running")
    await check_page(page, screenshot_dir, "overview")
    await page.goto("/console/fabs/F1")
    await expect(page.locator("#tile-F1-WETC02")).to_contain_text(lots[0])
    await expect(page.locator("#tile-F1-WETC02")).to_have_attribute("data-state", "PRD")
    await check_page(page, screenshot_dir, "board")


async def test_engineering_and_planning_pages_pass_accessibility_checks(
    context: BrowserContext, console: Console, screenshot_dir: Path
) -> None:
    lot = await console.start_lot()
    page = await sign_in(context, "supervisor", "/console/wip?fab=F1")
    await expect(page.locator("#wip-table")).to_contain_text("PAD_OX_CLEAN")
    await check_page(page, screenshot_dir, "wip")
    await page.goto("/console/dispatch?fab=F1")
    await expect(page.locator("h1")).to_contain_text("Dispatch decisions")
    await check_page(page, screenshot_dir, "dispatch")
    await page.goto("/console/metrics?fab=F1")
    await expect(page.locator("#metrics-table")).to_contain_text("WET_CLEAN")
    await check_page(page, screenshot_dir, "metrics")
    await page.goto(f"/console/lots/{lot}")
    await expect(page.locator("#where-next-title")).to_be_visible()
    await check_page(page, screenshot_dir, "lot-supervisor")


async def test_a_change_committed_by_another_process_reaches_the_open_page(
    context: BrowserContext, console: Console
) -> None:
    page = await sign_in(context, "operator", "/console/fabs/F2")
    tile = page.locator("#tile-F2-ETPO01")
    await expect(tile).to_have_attribute("data-state", "SBY")
    # This test process is not the server: it commits through its own engine, as an adapter
    # or dispatcher process would. The server's change feed finds it in the audit trail.
    db = Database.from_settings(Settings(database_url=console.database_url))
    try:
        async with unit_of_work(db) as session:
            bind(
                session,
                AuditContext(
                    actor="other-process", role="system", operation="test", at=datetime.now(UTC)
                ),
            )
            tool = await equipment_service.get_equipment(session, "F2-ETPO01")
            change = StateChange(version=tool.version, state=E10State.ENG, reason="experiment")
            await equipment_service.change_state(
                session, "F2-ETPO01", change, actor="other-process", clock=SystemClock()
            )
    finally:
        await db.dispose()
    await expect(tile).to_have_attribute("data-state", "ENG", timeout=10_000)
