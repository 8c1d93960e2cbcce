"""Browser tests of the console: Debian's Chromium driven by Playwright, against the real service
(``mes serve`` in its own process, on a free port) over a freshly seeded example network, with one
of its tools served by a simulated OPC UA tool and the service's adapter connected to it.

Chromium comes from the system (``/usr/bin/chromium``, installed by ``.ci/run``): Playwright's
own browser download is not used. Without it, or without Playwright, the tests skip and say why.
Screenshots go to a temporary folder, or to ``MES_SCREENSHOT_DIR`` (``docs/screenshots`` to
refresh the README's pictures).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from equipment_sims.clock import SimClock
from equipment_sims.fab import load_fab
from equipment_sims.server import SimServer
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.equipment.models import Equipment
from mes.seed import loader
from tests.databases import BACKEND, create_database, drop_database
from tests.equipment_sims.conftest import free_port

CHROMIUM = Path(os.environ.get("MES_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SIM_TOOL = "F1-ETPO01"  # the one tool served by a simulated tool and an adapter
JWT_SECRET = "browser-test-signing-key-0123456789-0123456789"
PASSWORDS = {u: f"change-me-{u}" for u in ("operator", "engineer", "engineer2", "supervisor")}

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    async_playwright = None  # type: ignore[assignment]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = None
    if async_playwright is None:
        reason = "playwright is not installed (make venv installs the dev extra)"
    elif not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    elif BACKEND == "postgresql" and not os.environ.get("MES_BROWSER_POSTGRES"):
        # The pages are the same on both databases, which the HTTP tests of the console cover;
        # one browser pass (SQLite) keeps CI within its time. MES_BROWSER_POSTGRES=1 repeats it.
        reason = "browser tests run in the SQLite pass (MES_BROWSER_POSTGRES=1 runs them here)"
    if reason is None:
        return
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class Console:
    url: str
    sim: SimServer
    api: httpx.AsyncClient
    process: asyncio.subprocess.Process
    database_url: str

    async def token(self, username: str) -> str:
        answer = await self.api.post(
            "/api/v1/auth/token", data={"username": username, "password": PASSWORDS[username]}
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    async def call(self, username: str, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {await self.token(username)}"}
        answer = await self.api.request(method, path, headers=headers, **kwargs)
        assert answer.status_code < 300, answer.text
        return answer.json() if answer.content else None

    async def start_lot(self, fab: str = "F1", product: str = "LOGIC28") -> str:
        body = {"product": product, "fab": fab, "wafer_count": 5}
        return str((await self.call("supervisor", "POST", "/api/v1/lots", json=body))["code"])


async def _seed(url: str, sim_port: int) -> None:
    engine = create_engine(Settings(database_url=url))
    try:
        await migrate.upgrade(engine)
        async with unit_of_work(Database(engine)) as session:
            await loader.load(session, loader.read_example(), clock=SystemClock())
        # Test arrangement: only the simulated tool has an endpoint, so the adapter connects to
        # it alone (and never to a `make run` fab that may be serving the example's ports).
        async with engine.begin() as conn:
            await conn.execute(update(Equipment).values(opcua_endpoint=None))
            await conn.execute(
                update(Equipment)
                .where(Equipment.code == SIM_TOOL)
                .values(opcua_endpoint=f"opc.tcp://127.0.0.1:{sim_port}/{SIM_TOOL}")
            )
    finally:
        await engine.dispose()


async def _wait_healthy(api: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    for _ in range(240):
        if process.returncode is not None:
            raise RuntimeError(f"mes serve exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if (await api.get("/health")).status_code < 500:
                return
        await asyncio.sleep(0.25)
    raise RuntimeError("mes serve did not answer within 60 s")


@pytest.fixture(scope="session")
async def console(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Console]:
    folder = Path(tmp_path_factory.mktemp("console"))
    url = await create_database(folder, "console")
    sim_port, port = free_port(), free_port()
    await _seed(url, sim_port)
    (spec,) = load_fab(ROOT / "mes" / "seed" / "example_fab.json", only={SIM_TOOL})
    sim = SimServer(spec, clock=SimClock(60.0), port=sim_port, seed=3, shelf_dir=folder / "shelf")
    await sim.start()
    env = {
        **os.environ,
        "MES_DATABASE_URL": url,
        "MES_JWT_SECRET": JWT_SECRET,
        "MES_ADAPTERS_ENABLED": "true",
        "MES_DISPATCH_FABS": "",  # people move the lots in these tests
        "MES_LOG_LEVEL": "warning",
    }
    log = (folder / "server.log").open("wb")
    mes = Path(sys.executable).parent / "mes"
    process = await asyncio.create_subprocess_exec(
        str(mes), "serve", "--host", "127.0.0.1", "--port", str(port),
        env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    api = httpx.AsyncClient(base_url=base, timeout=30)
    try:
        await _wait_healthy(api, process)
        yield Console(base, sim, api, process, url)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
        await api.aclose()
        await sim.stop()
        log.close()
        await drop_database(url)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser, console: Console) -> AsyncIterator[BrowserContext]:
    made = await browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 860})
    made.set_default_timeout(15_000)
    yield made
    await made.close()


async def sign_in(context: BrowserContext, username: str, target: str = "/console") -> Page:
    page = await context.new_page()
    await page.goto(target)
    await page.fill("#username", username)
    await page.fill("#password", PASSWORDS[username])
    await page.click("button[type=submit]")
    await page.wait_for_load_state("domcontentloaded")
    return page


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    chosen = os.environ.get("MES_SCREENSHOT_DIR")
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="console-shots-"))


async def check_page(page: Page, shots: Path, name: str) -> None:
    """Screenshot the page and run axe-core on it: no serious or critical violations."""
    await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    await page.add_script_tag(path=str(AXE))
    violations = await page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ['violations']});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
            }));
        }"""
    )
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert bad == [], f"{name}: {bad}"


__all__ = ["PASSWORDS", "SIM_TOOL", "Console", "check_page", "sign_in"]
