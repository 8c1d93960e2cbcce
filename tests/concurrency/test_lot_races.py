"""Races on lots: many clients at once on the same lots, through the API, with real commits.

Like test_optimistic_locking, these tests commit for real on the suite's own database (no
rolled-back outer transaction), over an app whose clock stands still at NOW so the test tokens
stay valid. Audit records cannot be removed (append-only) and the lots stay too: every lot comes
from the lot counter, so its code is new in every run. The track-in race runs on tools it
installs under fresh codes (the example fab's tools keep an audit trail later tests read), and
a lot left running is tracked out at the end, so no tool stays busy.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mes.auth.tokens import issue_access_token
from mes.check.invariants import check_database
from mes.clock import FixedClock
from mes.config import Settings
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.lots.models import Lot, LotHold, Wafer
from mes.lots.rules import fold
from mes.lots.states import FINAL_STATES, LotState, WaferState
from mes.main import create_app
from tests.conftest import JWT_SECRET, NOW, TESTER, bearer

# --- a: one lot, many track-ins --------------------------------------------------------------

RACERS = 50
RACE_TOOLS = 4  # of the lot's tool group; the racers spread over them

# --- b: split / merge / hold / release churn on a shared pool ------------------------------

# Seconds of churn and concurrent clients per backend. SQLite admits one writer at a time
# (BEGIN IMMEDIATE, waiting up to its busy timeout), so it runs a shorter, smaller variant that
# still interleaves requests without coming near that timeout.
CHURN_SECONDS = {"postgresql": 20.0, "sqlite": 3.0}
CHURN_CLIENTS = {"postgresql": 20, "sqlite": 6}
POOL_LOTS = 8
POOL_WAFERS = 12
HOLD_CODES = ("QUALITY", "OPERATOR", "ENGINEERING")
SIGNED = {"reason": "race test release"}
# Weights of the operations a churning client picks from.
OPERATIONS = {"split": 3, "merge": 3, "hold": 2, "release": 2}
PAGE = 500


@pytest.fixture
def committed_db(engine: AsyncEngine) -> Database:
    return Database(engine)


@dataclass
class Fab:
    """The API as one test's clients see it, remembering the lots the test started."""

    http: httpx.AsyncClient
    started: list[str] = field(default_factory=list)

    async def start(self, count: int, wafer_count: int) -> list[dict[str, Any]]:
        response = await self.http.post(
            "/api/v1/lots/bulk-start",
            json={"product": "LOGIC28", "fab": "F1", "count": count, "wafer_count": wafer_count},
        )
        assert response.status_code == 201, response.text
        lots: list[dict[str, Any]] = response.json()["lots"]
        self.started += [lot["code"] for lot in lots]
        return lots

    async def lot(self, code: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/lots/{code}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def history(self, code: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while True:
            response = await self.http.get(
                f"/api/v1/lots/{code}/history", params={"limit": PAGE, "offset": len(events)}
            )
            assert response.status_code == 200, response.text
            page = response.json()
            events += page["items"]
            if len(events) >= page["total"]:
                return events

    async def lots_on(self, tool: str) -> list[str]:
        response = await self.http.get("/api/v1/lots", params={"tool": tool, "limit": PAGE})
        assert response.status_code == 200, response.text
        return [lot["code"] for lot in response.json()["items"]]

    async def install_tools(self, fab: str, tool_group: str, count: int) -> list[str]:
        """New tools of ``tool_group``, qualified for every recipe the group's tools run.

        The example fab's own tools stay untouched: the audit records a race leaves on a tool
        cannot be removed, and later tests read the audit trail of those tools.
        """
        run = uuid.uuid4().hex[:6].upper()
        template = (
            await self.http.get(
                "/api/v1/equipment", params={"fab": fab, "tool_group": tool_group, "limit": 1}
            )
        ).json()["items"][0]
        recipes = (
            await self.http.get("/api/v1/recipes", params={"tool_group": tool_group, "limit": PAGE})
        ).json()["items"]
        approved = [
            (recipe["name"], version["version"])
            for recipe in recipes
            for version in recipe["versions"]
            if version["status"] == "approved"
        ]
        codes = []
        for n in range(1, count + 1):
            # "F1-WZ…" sorts after the example tools, which tests take first from a listing.
            code = f"{fab}-WZRACE-{run}-{n}"
            created = await self.http.post(
                "/api/v1/equipment",
                json={
                    "code": code,
                    "name": f"race tool {n}",
                    "fab": fab,
                    "area": template["area"],
                    "tool_group": tool_group,
                },
            )
            assert created.status_code == 201, created.text
            for name, version in approved:
                qualified = await self.http.post(
                    f"/api/v1/recipes/{name}/versions/{version}/qualifications",
                    json={"tool": code},
                )
                assert qualified.status_code == 201, qualified.text
            codes.append(code)
        return codes


@pytest.fixture
async def fab(settings: Settings, committed_db: Database) -> AsyncIterator[Fab]:
    app = create_app(settings, database=committed_db, clock=FixedClock(NOW))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mes.test", headers=bearer(TESTER)
    ) as http:
        mes = Fab(http)
        yield mes
        # Free the tools: a lot left running would keep its tool busy for later tests.
        for code in mes.started:
            if (await mes.lot(code))["state"] == "Running":
                out = await http.post(f"/api/v1/lots/{code}/track-out", json={})
                assert out.status_code == 200, out.text


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  {line}")


# --- a ---------------------------------------------------------------------------------------


async def test_fifty_track_ins_of_one_lot_put_it_on_exactly_one_tool(
    fab: Fab, committed_db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    (lot,) = await fab.start(count=1, wafer_count=5)
    code = lot["code"]
    tools = await fab.install_tools(lot["fab"], lot["step"]["tool_group"], RACE_TOOLS)

    async def track_in(n: int) -> httpx.Response:
        return await fab.http.post(
            f"/api/v1/lots/{code}/track-in", json={"tool": tools[n % len(tools)]}
        )

    responses = await asyncio.gather(*(track_in(n) for n in range(RACERS)))

    outcome = Counter(r.status_code for r in responses)
    unexpected = [r.text for r in responses if r.status_code not in (200, 409)]
    assert outcome == {200: 1, 409: RACERS - 1}, (outcome, unexpected[:5])
    refusals = Counter(r.json()["code"] for r in responses if r.status_code == 409)
    assert all(c.startswith(("lot.", "tool.")) for c in refusals), refusals
    _report(capsys, f"{RACERS} track-ins of {code} on {tools}: {dict(outcome)}, {dict(refusals)}")

    winner = next(r for r in responses if r.status_code == 200).json()
    on_tool = winner["tool"]
    assert on_tool in tools
    assert winner["lot"]["state"] == "Running"
    assert (await fab.lot(code))["state"] == "Running"
    for tool in tools:
        assert (code in await fab.lots_on(tool)) == (tool == on_tool), tool
        state = (await fab.http.get(f"/api/v1/equipment/{tool}")).json()["e10_state"]
        assert state == ("PRD" if tool == on_tool else "SBY"), tool

    events = await fab.history(code)
    track_ins = [e for e in events if e["event_type"] == "TRACK_IN"]
    assert len(track_ins) == 1, [e["event_type"] for e in events]
    assert track_ins[0]["tool"] == on_tool
    assert fold((e["before"], e["after"]) for e in events)["state"] == "Running"
    report = await check_database(committed_db)
    assert report.ok, [v.as_dict() for v in report.violations]


# --- b ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the churning clients were told."""

    succeeded: Counter[str] = field(default_factory=Counter)
    refused: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def record(self, op: str, response: httpx.Response) -> bool:
        if response.status_code >= 500:
            self.failures.append(f"{op} {response.request.url.path}: {response.text[:300]}")
        elif response.status_code >= 400:
            self.refused[(op, response.status_code, response.json().get("code", "?"))] += 1
        else:
            self.succeeded[op] += 1
            return True
        return False

    def summary(self) -> str:
        ok, no = sum(self.succeeded.values()), sum(self.refused.values())
        by_code = Counter[str]()
        for (_, status, code), n in self.refused.items():
            by_code[f"{status} {code}"] += n
        return (
            f"{ok + no + len(self.failures)} operations: {ok} succeeded "
            f"{dict(self.succeeded)}, {no} refused {dict(by_code.most_common())}, "
            f"{len(self.failures)} failed (5xx)"
        )


@dataclass
class Pool:
    """Every lot the churn made (``lots``), and those not merged away yet (``alive``)."""

    lots: list[str]
    alive: list[str]

    def split_off(self, child: str) -> None:
        self.lots.append(child)
        self.alive.append(child)

    def merged_away(self, source: str) -> None:
        if source in self.alive:
            self.alive.remove(source)


async def _churn(fab: Fab, pool: Pool, tally: Tally, rng: random.Random, deadline: float) -> None:
    """Random operations on random lots until ``deadline``. Clients pick among the lots they
    believe alive; another client may have merged one away meanwhile (refused: lot.finished)."""
    http = fab.http

    async def split() -> None:
        code = rng.choice(pool.alive)
        detail = await http.get(f"/api/v1/lots/{code}")
        if not tally.record("read", detail):
            return
        lot = detail.json()
        wafers = [w["scribe_id"] for w in lot["wafers"] if w["state"] == "active"]
        if not wafers:
            return  # a merged-away lot: nothing to name in a split
        # Sometimes the whole lot (refused: split_all), usually a proper part of it.
        moving = rng.sample(wafers, rng.randint(1, len(wafers)))
        body: dict[str, Any] = {"wafers": moving}
        if rng.random() < 0.5:
            body["version"] = lot["version"]  # the version read: stale if someone came between
        response = await http.post(f"/api/v1/lots/{code}/split", json=body)
        if tally.record("split", response):
            pool.split_off(response.json()["child"]["code"])

    async def merge() -> None:
        if len(pool.alive) < 2:
            return
        target, source = rng.sample(pool.alive, 2)
        response = await http.post(f"/api/v1/lots/{target}/merge", json={"source": source})
        if tally.record("merge", response):
            pool.merged_away(source)

    async def hold() -> None:
        response = await http.post(
            f"/api/v1/lots/{rng.choice(pool.alive)}/hold",
            json={"hold_code": rng.choice(HOLD_CODES), "reason": "race test hold"},
        )
        tally.record("hold", response)

    async def release() -> None:
        response = await http.post(
            f"/api/v1/lots/{rng.choice(pool.alive)}/release", json={"signature": SIGNED}
        )
        tally.record("release", response)

    operations: dict[str, Callable[[], Awaitable[None]]] = {
        "split": split,
        "merge": merge,
        "hold": hold,
        "release": release,
    }
    names, weights = list(OPERATIONS), list(OPERATIONS.values())
    while time.monotonic() < deadline:
        (name,) = rng.choices(names, weights)
        try:
            await operations[name]()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            tally.failures.append(f"{name}: {exc!r}")


async def test_split_merge_hold_release_churn_conserves_wafers_and_history(
    fab: Fab, committed_db: Database, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seconds, clients = CHURN_SECONDS[backend], CHURN_CLIENTS[backend]
    roots = [lot["code"] for lot in await fab.start(count=POOL_LOTS, wafer_count=POOL_WAFERS)]
    wafers_started = POOL_LOTS * POOL_WAFERS
    pool = Pool(lots=list(roots), alive=list(roots))
    tally = Tally()
    seed = random.randrange(2**32)
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(_churn(fab, pool, tally, random.Random(seed + n), deadline) for n in range(clients))
    )
    report = f"{clients} clients x {seconds:g} s on {backend} (seed {seed}): {tally.summary()}"
    _report(capsys, report)
    assert not tally.failures, f"{report}\n" + "\n".join(tally.failures[:20])
    assert tally.succeeded["split"], report
    assert tally.succeeded["merge"], report

    # Everything the pool became, from the database: the started lots and their split children.
    async with unit_of_work(committed_db, write=False) as session:
        lots = list(
            await session.scalars(
                select(Lot)
                .where(
                    or_(*(Lot.code == r for r in roots), *(Lot.code.like(f"{r}.%") for r in roots))
                )
                .order_by(Lot.code)
            )
        )
        active_wafers = dict(
            (
                await session.execute(
                    select(Wafer.lot_id, func.count())
                    .where(Wafer.lot_id.in_([lot.id for lot in lots]))
                    .where(Wafer.state == WaferState.ACTIVE)
                    .group_by(Wafer.lot_id)
                )
            ).all()
        )
        active_holds = dict(
            (
                await session.execute(
                    select(LotHold.lot_id, func.count())
                    .where(LotHold.lot_id.in_([lot.id for lot in lots]))
                    .where(LotHold.released_at.is_(None))
                    .group_by(LotHold.lot_id)
                )
            ).all()
        )
    assert sorted(lot.code for lot in lots) == sorted(pool.lots), "pool and database disagree"
    assert sum(lot.wafer_count for lot in lots) == wafers_started, report
    assert sum(active_wafers.values()) == wafers_started
    for lot in lots:
        assert lot.wafer_count == active_wafers.get(lot.id, 0), lot.code
        holds = active_holds.get(lot.id, 0)
        if lot.state in FINAL_STATES:
            # Only merges end lots here, and a merge hands the source's holds to the target.
            assert (lot.state, lot.wafer_count, holds) == (LotState.TERMINATED, 0, 0), lot.code
        elif lot.state != LotState.RUNNING:
            assert (lot.state == LotState.ON_HOLD) == (holds > 0), (lot.code, lot.state, holds)
        folded = fold((e["before"], e["after"]) for e in await fab.history(lot.code))
        assert (folded["state"], folded["wafer_count"], folded["active_holds"]) == (
            lot.state.value,
            lot.wafer_count,
            holds,
        ), lot.code
    # And the whole database, by the invariant checker.
    checked = await check_database(committed_db)
    assert checked.ok, [v.as_dict() for v in checked.violations]


# --- found by the churn ----------------------------------------------------------------------


async def test_a_split_too_deep_for_a_lot_code_is_refused_not_a_server_error(client) -> None:
    """Each generation of split children adds three characters to the lot code; the ninth
    would not fit the 32 characters of a lot code (a 500 on PostgreSQL, an unaddressable lot
    on SQLite, before the rule)."""
    started = await client.post(
        "/api/v1/lots", json={"product": "LOGIC28", "fab": "F1", "wafer_count": 25}
    )
    assert started.status_code == 201, started.text
    code = started.json()["code"]
    for _ in range(30):
        wafers = [
            w["scribe_id"] for w in (await client.get(f"/api/v1/lots/{code}")).json()["wafers"]
        ]
        response = await client.post(f"/api/v1/lots/{code}/split", json={"wafers": wafers[1:]})
        if response.status_code != 201:
            break
        code = response.json()["child"]["code"]
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "lot.code_too_long"
    assert len(code) <= 32
    assert (await client.get(f"/api/v1/lots/{code}")).json()["wafer_count"] == len(wafers)


async def test_the_first_starts_of_a_year_race_to_one_lot_counter(
    settings: Settings, committed_db: Database
) -> None:
    """Found by the crash test: the year's first starts, made at once, all created the year's
    lot-number counter, and all but one were refused (409 db.constraint_violated)."""
    year = NOW.replace(year=2041)  # a year no other test starts lots in
    app = create_app(settings, database=committed_db, clock=FixedClock(year))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    body = {"product": "LOGIC28", "fab": "F1", "wafer_count": 1}
    # Issued now (the token library checks the issue time against the real clock), valid until
    # the test's year, signed in then (e-signatures need a fresh login).
    real_now = datetime.now(UTC)
    token = issue_access_token(
        TESTER, secret=JWT_SECRET, now=real_now, ttl=year - real_now + timedelta(days=1),
        auth_time=year,
    )  # fmt: skip
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://mes.test",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        answers = await asyncio.gather(*(http.post("/api/v1/lots", json=body) for _ in range(6)))
        assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
        codes = sorted(a.json()["code"] for a in answers)
        assert codes == [f"L41-{n:04d}" for n in range(1, 7)]
        for code in codes:  # leave nothing in the line for later tests
            done = await http.post(
                f"/api/v1/lots/{code}/terminate", json={"signature": {"reason": "test"}}
            )
            assert done.status_code == 200, done.text
