"""Random sequences of lot transactions through the API, with the lot invariants checked after
every step (Hypothesis stateful testing).

How it runs. Hypothesis drives a ``RuleBasedStateMachine`` whose rules are plain functions, but
the app, its database connection and the fixtures live on pytest-asyncio's session event loop.
The test is therefore a *sync* test: between fixture setup and teardown that loop is not running,
so each rule sends its request with ``loop.run_until_complete`` on the very loop the fixtures
were built on. (An ``async def`` test cannot do this: its loop is already running, and a rule
cannot await.)

Isolation. All examples of one run share the test's transaction; each example opens a SAVEPOINT
on the test connection (the app's sessions nest their own savepoints inside it) and rolls it back
at teardown, and gets a fresh clock, so every example starts from the example fab alone.

Invariants, after every rule, for every lot the example created: read from the database (into
which the app's sessions have just released their savepoints), and through the API for the lots
the rule touched (lot detail) and, at the end of each example, for every lot (detail and
history):

1. wafers are conserved: the lots hold started + bonus - scrapped wafers, and each lot's
   ``wafer_count`` is its number of active wafers;
2. a lot that has not ended is at a step; a lot runs (state Running) iff it is on a tool, a tool
   holds no more lots than it may, and a tool is productive (PRD) iff a lot runs on it;
3. holds and state agree: OnHold needs an active hold, Waiting and InTransit have none;
4. folding the lot's history (before/after snapshots) arrives at the lot's current state;
5. no answer is a 5xx, every refusal is problem+json with a ``code``, and none is a database
   constraint violation (the test is the only writer, so that means a missing business check).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

from mes.check.invariants import check
from mes.check.report import Report
from mes.clock import FixedClock
from mes.equipment.models import Equipment
from mes.equipment.states import E10State
from mes.lots.models import Lot, LotEvent, LotHold, Wafer
from mes.lots.rules import SNAPSHOT_FIELDS, fold
from mes.lots.states import FINAL_STATES, LotState, WaferState
from tests.conftest import NOW, TESTER, TESTER_PASSWORD, bearer

T = TypeVar("T")

API = "/api/v1"
FABS = ("F1", "F2")
# Step sequences of the products' routes (R-LOGIC28: 10..380, R-TESTWF: 10..50).
ROUTES = {"LOGIC28": tuple(range(10, 390, 10)), "MONITOR": (10, 20, 30, 40, 50)}
HOLD_CODES = ("QUALITY", "OPERATOR", "ENGINEERING")
FINAL = {s.value for s in FINAL_STATES}
MAX_LIVE_LOTS = 6  # bounds the per-step cost of the checks
MAX_CLOCK_ADVANCE = timedelta(hours=12)
ESIGN_FRESH = timedelta(minutes=5)

# About 40 s on SQLite; raise them to hunt longer (300 x 40 runs for about five minutes).
EXAMPLES = int(os.environ.get("MES_STATEFUL_EXAMPLES", "25"))
STEPS = int(os.environ.get("MES_STATEFUL_STEPS", "40"))


class Harness:
    """What the machine drives: the app through ``client``, on the fixtures' event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: httpx.AsyncClient,
        connection: AsyncConnection,
        app: FastAPI,
    ) -> None:
        self.loop, self.client, self.connection, self.app = loop, client, connection, app
        self.tools: dict[tuple[str, str], list[str]] = {}
        self.examples = 0
        self.requests = 0
        self.operations: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)


class LotMachine(RuleBasedStateMachine):
    def __init__(self, h: Harness) -> None:
        super().__init__()
        h.examples += 1
        self.h = h
        self.clock = FixedClock(NOW)
        h.app.state.clock = self.clock
        self.login(NOW)
        self.savepoint: AsyncTransaction = h.run(h.connection.begin_nested())
        self.baseline_lots = h.run(self._count_lots())
        self.baseline_counters: dict[int, int] = dict(
            h.run(h.connection.execute(select(Equipment.id, Equipment.wafers_processed))).all()
        )
        self.lots: dict[str, dict[str, Any]] = {}  # code -> last detail read through the API
        self.started = self.bonus_wafers = self.scrapped = 0
        self.named = 0
        self.tools_used: set[str] = set()
        self.touched: set[str] = set()

    # --- plumbing --------------------------------------------------------------------------

    async def _check_everything(self) -> Report:
        """The invariant checker over the whole database, as this example left it."""
        async with self.h.app.state.db.read_sessions() as session:
            return await check(session)

    async def _count_lots(self) -> int:
        return int(await self.h.connection.scalar(select(func.count()).select_from(Lot)) or 0)

    def call(self, operation: str, method: str, url: str, body: Any = None) -> Any:
        """Send one request; answer its JSON on success, None on a (well-formed) refusal."""
        h = self.h
        response = h.run(h.client.request(method, url, json=body, headers=self.auth))
        h.requests += 1
        if operation:
            h.operations[operation] += 1
        status = response.status_code
        assert status < 500, f"{method} {url} {body} -> {status} {response.text}"
        if status < 400:
            if operation:
                h.outcomes["ok"] += 1
            return response.json() if response.content else None
        assert response.headers["content-type"].startswith("application/problem+json"), (
            f"{method} {url} -> {status} without problem+json: {response.text}"
        )
        problem = response.json()
        assert problem.get("code"), f"{method} {url} -> problem without code: {problem}"
        assert problem["status"] == status
        # The test is the only writer: a constraint violation means a business check is missing.
        assert problem["code"] != "db.constraint_violated", f"{method} {url} {body}: {problem}"
        if operation:
            h.outcomes[problem["code"]] += 1
        return None

    def get(self, url: str, **params: Any) -> Any:
        response = self.h.run(self.h.client.get(url, params=params, headers=self.auth))
        self.h.requests += 1
        assert response.status_code == 200, f"GET {url} -> {response.status_code} {response.text}"
        return response.json()

    def login(self, at: datetime) -> None:
        self.auth, self.logged_in_at = bearer(TESTER, auth_time=at), at

    def signature(self) -> dict[str, str]:
        sig = {"reason": "stateful test"}
        if self.clock.now() - self.logged_in_at > ESIGN_FRESH:  # the login is no longer fresh
            sig["password"] = TESTER_PASSWORD
        return sig

    def tools_for(self, fab: str, tool_group: str) -> list[str]:
        key = (fab, tool_group)
        if key not in self.h.tools:
            listed = self.get(f"{API}/equipment", fab=fab, tool_group=tool_group, limit=50)
            self.h.tools[key] = sorted(t["code"] for t in listed["items"])
        return self.h.tools[key]

    def pick(self, data: st.DataObject, wanted: Callable[[dict[str, Any]], bool]) -> str:
        """A lot for which the operation can succeed if there is one, else (to be refused) a lot
        still in the line, else any."""
        fitting = sorted(code for code, lot in self.lots.items() if wanted(lot))
        choice = fitting or sorted(self.live()) or sorted(self.lots)
        return data.draw(st.sampled_from(choice), label="lot")

    def live(self) -> list[str]:
        return [code for code, lot in self.lots.items() if lot["state"] not in FINAL]

    def adopt(self, lot: dict[str, Any]) -> None:
        """Remember a lot the answer shows (a start, a split child) and check it next."""
        self.lots.setdefault(lot["code"], lot)
        self.touched.add(lot["code"])

    def has_live_lots(self) -> bool:
        return bool(self.live())

    def any_in(self, *states: str) -> bool:
        return any(lot["state"] in states for lot in self.lots.values())

    # --- rules -----------------------------------------------------------------------------

    @initialize(product=st.sampled_from(sorted(ROUTES)), fab=st.sampled_from(FABS))
    def first_lots(self, product: str, fab: str) -> None:
        # Two alike lots, so merges and batches have partners from the start.
        for wafers in (3, 5):
            self._start(product, fab, wafers)

    @precondition(lambda self: len(self.live()) < MAX_LIVE_LOTS)
    @rule(
        product=st.sampled_from(sorted(ROUTES)),
        fab=st.sampled_from(FABS),
        wafers=st.integers(1, 25),
        code_length=st.none() | st.integers(4, 32),
    )
    def start(self, product: str, fab: str, wafers: int, code_length: int | None) -> None:
        self._start(product, fab, wafers, code_length)

    def _start(self, product: str, fab: str, wafers: int, code_length: int | None = None) -> None:
        body: dict[str, Any] = {"product": product, "fab": fab, "wafer_count": wafers}
        if code_length is not None:
            # A code of the caller's choosing (long ones stress the scribe and child ids).
            self.named += 1
            body["code"] = f"K{self.named}-".ljust(code_length, "x")[:code_length]
        lot = self.call("start", "POST", f"{API}/lots", body)
        if lot is None:
            assert code_length is not None, "starting a lot of an active product must succeed"
            return
        assert (lot["state"], lot["wafer_count"]) == ("Waiting", wafers)
        assert lot["step"]["sequence"] == 10
        self.started += wafers
        self.adopt(lot)

    @precondition(has_live_lots)
    @rule(data=st.data())
    def track_in(self, data: st.DataObject) -> None:
        self._track_in(data, self.pick(data, lambda lot: lot["state"] == "Waiting"))

    def _track_in(self, data: st.DataObject, code: str) -> bool:
        lot = self.lots[code]
        if lot["step"] is None:
            tools = ["F1-WETC01"]
        else:
            tools = self.tools_for(lot["fab"], lot["step"]["tool_group"]) or ["F1-WETC01"]
        tool = data.draw(st.sampled_from(tools), label="tool")
        answer = self.call("track-in", "POST", f"{API}/lots/{code}/track-in", {"tool": tool})
        self.touched.add(code)
        if answer is None:
            return False
        assert answer["lot"]["state"] == "Running"
        assert answer["tool"] == tool
        self.tools_used.add(tool)
        return True

    @precondition(lambda self: self.any_in("Waiting"))
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        # Track-in and track-out in one rule, so that lots get along their route.
        code = self.pick(data, lambda lot: lot["state"] == "Waiting")
        if self._track_in(data, code):
            self.lots_are_consistent()
            answer = self.call("track-out", "POST", f"{API}/lots/{code}/track-out", {})
            self.touched.add(code)
            assert answer is not None, "a lot that runs can be tracked out"
            assert answer["state"] in ("Waiting", "OnHold", "Completed")

    @precondition(lambda self: self.any_in("Running"))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(["pass", "pass", "pass", "rework"]),
        partly=st.booleans(),
    )
    def track_out(self, data: st.DataObject, outcome: str, partly: bool) -> None:
        code = self.pick(data, lambda lot: lot["state"] == "Running")
        body: dict[str, Any] = {"outcome": outcome}
        if partly:  # the tool did not process every wafer: the lot must stay, held
            wafers = self.lots[code]["wafer_count"]
            body["wafers_processed"] = data.draw(st.integers(0, max(0, wafers - 1)), "processed")
        answer = self.call("track-out", "POST", f"{API}/lots/{code}/track-out", body)
        self.touched.add(code)
        if answer is not None:
            assert answer["state"] in ("Waiting", "OnHold", "Completed")

    @precondition(has_live_lots)
    @rule(data=st.data(), hold_code=st.sampled_from(HOLD_CODES))
    def hold(self, data: st.DataObject, hold_code: str) -> None:
        code = self.pick(
            data, lambda lot: lot["state"] in ("Waiting", "OnHold", "Running", "InTransit")
        )
        was = self.lots[code]["state"]
        body = {"hold_code": hold_code, "reason": "stateful test"}
        answer = self.call("hold", "POST", f"{API}/lots/{code}/hold", body)
        self.touched.add(code)
        if answer is not None:
            # Running and travelling lots keep moving; the hold stops them at track-out/arrival.
            assert answer["state"] == (was if was in ("Running", "InTransit") else "OnHold")

    @precondition(lambda self: any(lot["holds"] for lot in self.lots.values()))
    @rule(data=st.data(), by_code=st.booleans())
    def release(self, data: st.DataObject, by_code: bool) -> None:
        code = self.pick(data, lambda lot: bool(lot["holds"]))
        holds = self.lots[code]["holds"]
        body: dict[str, Any] = {"signature": self.signature()}
        if by_code and holds:
            body["hold_code"] = data.draw(
                st.sampled_from(sorted({h["hold_code"] for h in holds})), label="hold_code"
            )
        answer = self.call("release", "POST", f"{API}/lots/{code}/release", body)
        self.touched.add(code)
        if answer is not None and "hold_code" not in body:
            assert answer["state"] not in ("OnHold",), "releasing every hold leaves none"

    @precondition(has_live_lots)
    @rule(data=st.data())
    def split(self, data: st.DataObject) -> None:
        code = self.pick(
            data,
            lambda lot: lot["state"] in ("Waiting", "OnHold") and lot["wafer_count"] >= 2,
        )
        active = active_wafers(self.lots[code]) or [f"{code}-W99"]
        chosen = data.draw(
            st.lists(
                st.sampled_from(active), min_size=1, max_size=max(1, len(active) - 1), unique=True
            ),
            label="wafers",
        )
        before = self.lots[code]
        answer = self.call("split", "POST", f"{API}/lots/{code}/split", {"wafers": chosen})
        self.touched.add(code)
        if answer is not None:
            parent, child = answer["parent"], answer["child"]
            assert parent["wafer_count"] == before["wafer_count"] - len(chosen)
            assert child["wafer_count"] == len(chosen)
            assert child["state"] == parent["state"]
            assert child["step"] == parent["step"]
            self.adopt(child)

    @precondition(lambda self: len(self.live()) >= 2)
    @rule(data=st.data())
    def merge(self, data: st.DataObject) -> None:
        def alike(a: dict[str, Any], b: dict[str, Any]) -> bool:
            return (
                a["code"] != b["code"]
                and a["state"] in ("Waiting", "OnHold")
                and all(a[k] == b[k] for k in ("state", "product", "fab", "step"))
                and a["wafer_count"] + b["wafer_count"] <= 25
            )

        lots = [self.lots[c] for c in sorted(self.lots)]
        pairs = [(a["code"], b["code"]) for a in lots for b in lots if alike(a, b)]
        if not pairs:  # to be refused: prefer lots still in the line
            live = [lot for lot in lots if lot["state"] not in FINAL]
            lots = live if len(live) >= 2 else lots
            pairs = [(a["code"], b["code"]) for a in lots for b in lots if a is not b]
        target, source = data.draw(st.sampled_from(pairs), label="target, source")
        total = self.lots[target]["wafer_count"] + self.lots[source]["wafer_count"]
        answer = self.call("merge", "POST", f"{API}/lots/{target}/merge", {"source": source})
        self.touched |= {target, source}
        if answer is not None:
            assert answer["wafer_count"] == total

    @precondition(has_live_lots)
    @rule(data=st.data())
    def scrap(self, data: st.DataObject) -> None:
        code = self.pick(data, lambda lot: lot["state"] not in FINAL)
        active = active_wafers(self.lots[code]) or [f"{code}-W99"]
        chosen = data.draw(
            st.lists(st.sampled_from(active), min_size=1, max_size=len(active), unique=True),
            label="wafers",
        )
        body = {"wafers": chosen, "reason_code": "BROKEN", "signature": self.signature()}
        answer = self.call("scrap", "POST", f"{API}/lots/{code}/scrap", body)
        self.touched.add(code)
        if answer is not None:
            self.scrapped += len(chosen)
            if answer["wafer_count"] == 0:
                assert answer["state"] == "Scrapped"

    @precondition(has_live_lots)
    @rule(data=st.data(), count=st.integers(1, 5))
    def bonus(self, data: st.DataObject, count: int) -> None:
        code = self.pick(data, lambda lot: lot["state"] not in FINAL)
        body = {"count": count, "reason_code": "FOUND"}
        answer = self.call("bonus", "POST", f"{API}/lots/{code}/bonus", body)
        self.touched.add(code)
        if answer is not None:
            self.bonus_wafers += count

    @precondition(has_live_lots)
    @rule(data=st.data())
    def jump(self, data: st.DataObject) -> None:
        code = self.pick(data, lambda lot: lot["state"] in ("Waiting", "OnHold"))
        lot = self.lots[code]
        here = lot["step"]["sequence"] if lot["step"] else None
        elsewhere = [q for q in ROUTES[lot["product"]] if q != here]
        to = data.draw(st.sampled_from(elsewhere), label="to_sequence")
        body = {"to_sequence": to, "signature": self.signature()}
        answer = self.call("jump", "POST", f"{API}/lots/{code}/jump", body)
        self.touched.add(code)
        if answer is not None:
            assert answer["step"]["sequence"] == to
            assert answer["state"] in ("Waiting", "OnHold")

    @precondition(has_live_lots)
    @rule(data=st.data())
    def ship(self, data: st.DataObject) -> None:
        code = self.pick(data, lambda lot: lot["state"] == "Waiting")
        to_fab = "F2" if self.lots[code]["fab"] == "F1" else "F1"
        answer = self.call("ship", "POST", f"{API}/lots/{code}/ship", {"to_fab": to_fab})
        self.touched.add(code)
        if answer is not None:
            assert (answer["state"], answer["fab"]) == ("InTransit", self.lots[code]["fab"])

    @precondition(lambda self: self.any_in("InTransit"))
    @rule(data=st.data())
    def receive(self, data: st.DataObject) -> None:
        code = self.pick(data, lambda lot: lot["state"] == "InTransit")
        was = self.lots[code]
        answer = self.call("receive", "POST", f"{API}/lots/{code}/receive", {})
        self.touched.add(code)
        if answer is not None:
            # A lot held on the road arrives on hold.
            assert answer["state"] == ("OnHold" if was["holds"] else "Waiting")
            assert answer["fab"] != was["fab"]

    @precondition(has_live_lots)
    @rule(data=st.data(), priority=st.sampled_from(["normal", "hot", "super_hot"]))
    def priority(self, data: st.DataObject, priority: str) -> None:
        code = self.pick(data, lambda lot: lot["state"] not in FINAL)
        body = {"priority_class": priority, "reason": "stateful test"}
        answer = self.call("priority", "POST", f"{API}/lots/{code}/priority", body)
        self.touched.add(code)
        if answer is not None:
            assert answer["priority_class"] == priority

    @precondition(has_live_lots)
    @rule(data=st.data())
    def terminate(self, data: st.DataObject) -> None:
        code = self.pick(data, lambda lot: lot["state"] in ("Waiting", "OnHold"))
        body = {"signature": self.signature()}
        answer = self.call("terminate", "POST", f"{API}/lots/{code}/terminate", body)
        self.touched.add(code)
        if answer is not None:
            assert answer["state"] == "Terminated"

    @precondition(has_live_lots)
    @rule(
        data=st.data(),
        kind=st.sampled_from(["hold_on_arrival", "hold_after_track_out"]),
        hold_code=st.sampled_from(HOLD_CODES),
    )
    def future_hold(self, data: st.DataObject, kind: str, hold_code: str) -> None:
        code = self.pick(data, lambda lot: lot["state"] not in FINAL)
        at = data.draw(st.sampled_from(ROUTES[self.lots[code]["product"]]), label="step_sequence")
        body = {"step_sequence": at, "kind": kind, "hold_code": hold_code, "reason": "look"}
        self.call("future-hold", "POST", f"{API}/lots/{code}/future-actions", body)
        self.touched.add(code)

    @precondition(lambda self: self.clock.now() - NOW < MAX_CLOCK_ADVANCE)
    @rule(minutes=st.sampled_from([10, 60, 150, 300]))
    def time_passes(self, minutes: int) -> None:
        # Lets Q-time windows (4 h and 6 h in R-LOGIC28) expire. The tester then signs in again:
        # a stale login would have to sign with the password, and each argon2 check costs more
        # than a whole step of this test.
        self.login(self.clock.advance(timedelta(minutes=minutes)))
        self.h.operations["time-passes"] += 1

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def lots_are_consistent(self) -> None:
        for code in sorted(self.touched):
            self.check_through_api(code, history=False)
        self.touched.clear()
        self.h.run(self.check_in_database())

    def check_through_api(self, code: str, *, history: bool = True) -> None:
        lot = self.get(f"{API}/lots/{code}")
        self.lots[code] = lot
        state = lot["state"]
        assert lot["wafer_count"] == len(active_wafers(lot)), lot
        if state not in FINAL:
            assert lot["step"] is not None, f"{code} is {state} but at no step"
        if state == "OnHold":
            assert lot["holds"], f"{code} is OnHold without an active hold"
        if state == "Waiting" or state in FINAL:
            assert not lot["holds"], f"{code} is {state} with active holds {lot['holds']}"
        if not history:
            return  # the database check folds every lot's history after every step
        events: list[dict[str, Any]] = []
        while True:
            page = self.get(f"{API}/lots/{code}/history", limit=500, offset=len(events))
            events += page["items"]
            if len(events) >= page["total"]:
                break
        assert events, f"{code} has no history"
        folded = fold((e["before"], e["after"]) for e in events)
        assert folded["state"] == state, (code, folded, events[-1])
        assert folded["wafer_count"] == lot["wafer_count"], (code, folded, events[-1])
        assert folded["priority_class"] == lot["priority_class"], (code, folded)
        assert folded["active_holds"] == len(lot["holds"]), (code, folded, lot["holds"])
        if state != "InTransit":
            assert events[-1]["fab"] == lot["fab"] or events[-1]["event_type"] == "SHIP"

    async def check_in_database(self) -> None:
        conn = self.h.connection
        codes = sorted(self.lots)
        rows = (
            await conn.execute(
                select(
                    Lot.id,
                    Lot.code,
                    Lot.state,
                    Lot.wafer_count,
                    Lot.current_step_id,
                    Lot.equipment_id,
                    Lot.fab_id,
                    Lot.priority_class,
                    Lot.destination_fab_id,
                ).where(Lot.code.in_(codes))
            )
        ).all()
        assert sorted(r.code for r in rows) == codes
        assert await self._count_lots() == self.baseline_lots + len(codes), "unexpected lots"
        ids = [r.id for r in rows]
        active = dict(
            (
                await conn.execute(
                    select(Wafer.lot_id, func.count())
                    .where(Wafer.lot_id.in_(ids), Wafer.state == WaferState.ACTIVE)
                    .group_by(Wafer.lot_id)
                )
            ).all()
        )
        holds = dict(
            (
                await conn.execute(
                    select(LotHold.lot_id, func.count())
                    .where(LotHold.lot_id.in_(ids), LotHold.released_at.is_(None))
                    .group_by(LotHold.lot_id)
                )
            ).all()
        )
        stray_wafers = await conn.scalar(
            select(func.count())
            .select_from(Wafer)
            .join(Lot, Lot.id == Wafer.lot_id)
            .where(Lot.id.in_(ids), Wafer.fab_id != Lot.fab_id)
        )
        assert not stray_wafers, "wafers in another fab than their lot"
        history: dict[int, list[tuple[Any, Any]]] = {i: [] for i in ids}
        for lot_id, before, after in await conn.execute(
            select(LotEvent.lot_id, LotEvent.before, LotEvent.after)
            .where(LotEvent.lot_id.in_(ids))
            .order_by(LotEvent.occurred_at, LotEvent.id)
        ):
            history[lot_id].append((before, after))

        # (1) wafer conservation
        expected = self.started + self.bonus_wafers - self.scrapped
        assert sum(r.wafer_count for r in rows) == expected, (
            f"lots hold {sum(r.wafer_count for r in rows)} wafers; started {self.started}"
            f" + bonus {self.bonus_wafers} - scrapped {self.scrapped} = {expected}"
        )
        assert sum(active.values()) == expected
        running: Counter[int] = Counter()
        for r in rows:
            assert r.wafer_count == active.get(r.id, 0), f"{r.code}: count vs active wafers"
            state = LotState(r.state)
            # (2) one step unless ended; on a tool iff running
            if state not in FINAL_STATES:
                assert r.current_step_id is not None, f"{r.code} is {state} at no step"
            assert (state == LotState.RUNNING) == (r.equipment_id is not None), r.code
            assert (state == LotState.IN_TRANSIT) == (r.destination_fab_id is not None), r.code
            if r.equipment_id is not None:
                running[r.equipment_id] += 1
            # (3) holds and state agree
            n_holds = holds.get(r.id, 0)
            if state == LotState.ON_HOLD:
                assert n_holds >= 1, f"{r.code} is OnHold without an active hold"
            if state == LotState.WAITING:
                assert n_holds == 0, f"{r.code} is {state} with {n_holds} active holds"
            # (3b) held material never leaves: an ended lot has no open hold (those it had
            # were closed by the event that ended it, which the history fold checks below)
            if state in FINAL_STATES:
                assert n_holds == 0, f"{r.code} ended {state} with {n_holds} active holds"
            # (4) the history folds to the lot as it is
            folded = fold(history[r.id])
            now = {
                "state": LotState(r.state).value,
                "step_id": r.current_step_id,
                "equipment_id": r.equipment_id,
                "wafer_count": r.wafer_count,
                "fab_id": r.fab_id,
                "priority_class": str(getattr(r.priority_class, "value", r.priority_class)),
                "active_holds": n_holds,
            }
            assert set(now) == set(SNAPSHOT_FIELDS)
            assert folded == now, f"{r.code}: history says {folded}, the lot is {now}"
        # (2) tools: within capacity, and productive exactly while a lot runs on them
        tools = (
            await conn.execute(
                select(Equipment.id, Equipment.code, Equipment.e10_state, Equipment.max_lots).where(
                    Equipment.code.in_(sorted(self.tools_used)) | Equipment.id.in_(sorted(running))
                )
            )
        ).all()
        for tool in tools:
            on_tool = running.get(tool.id, 0)
            assert on_tool <= tool.max_lots, f"{tool.code} runs {on_tool} lots"
            productive = E10State(tool.e10_state) == E10State.PRD
            assert productive == (on_tool > 0), f"{tool.code} is {tool.e10_state}, {on_tool} lots"
        # (5) each tool's wafer counter is its ledger: the wafers counted at track-in, less
        # the usage runs gave back (aborted, or tracked out partly processed)
        # ... and a run tracked out with fewer wafers processed than the lot had gave back
        # exactly the wafers it did not process
        ledger: Counter[int] = Counter()
        counted_at_track_in: dict[int, int] = {}
        # (6) per run: what its track-in counted, until a track-out (or abort) ends it; a run
        # ended is confirmed usage (counted less given back), one not ended is still in flight
        in_flight: dict[int, tuple[int, int]] = {}  # lot -> (tool, wafers counted)
        confirmed: Counter[int] = Counter()
        for lot_id, tool_id, kind, before, after in await conn.execute(
            select(
                LotEvent.lot_id,
                LotEvent.equipment_id,
                LotEvent.event_type,
                LotEvent.before,
                LotEvent.after,
            )
            # This machine's lots only: other tests may have run lots on the same tools. Every
            # event of them: one naming no tool may end a run (the lot's last wafers scrapped on
            # the tool: they were there, their usage stays).
            .where(LotEvent.lot_id.in_(ids))
            .order_by(LotEvent.occurred_at, LotEvent.id)
        ):
            details = after or {}
            if tool_id is None and kind != "TRACK_IN":
                tool_id = (before or {}).get("equipment_id")
            if kind == "TRACK_IN":
                counted_at_track_in[lot_id] = int(details.get("counted_wafers", 0))
                ledger[tool_id] += counted_at_track_in[lot_id]
                in_flight[lot_id] = (tool_id, counted_at_track_in[lot_id])
            given_back = int(details.get("usage_given_back", 0))
            ledger[tool_id] -= given_back
            was_running = (before or {}).get("equipment_id") is not None
            if was_running and details.get("equipment_id") is None and lot_id in in_flight:
                run_tool, counted_in = in_flight.pop(lot_id)  # the run ended here
                confirmed[run_tool] += counted_in - given_back
            if kind == "TRACK_OUT":
                # (7) processed + aborted + skipped (+ not reported) = the run's wafers
                outcomes = details["wafer_outcomes"]
                assert sum(outcomes.values()) == int((before or {})["wafer_count"]), (
                    f"lot {lot_id}: a run's wafer outcomes {outcomes} do not add up"
                )
                assert outcomes["Processed"] == int(details["wafers_processed"]), outcomes
            processed = details.get("wafers_processed")
            partial = processed is not None and int(processed) < int(
                (before or {}).get("wafer_count", 0)
            )
            if kind == "TRACK_OUT" and partial:
                assert given_back == counted_at_track_in[lot_id] - int(processed), (
                    f"a partial run of lot {lot_id} gave back {given_back} wafers"
                )
        counters = dict(
            (
                await conn.execute(
                    select(Equipment.id, Equipment.wafers_processed).where(
                        Equipment.id.in_([t.id for t in tools])
                    )
                )
            ).all()
        )
        for tool in tools:
            counted = counters[tool.id] - self.baseline_counters.get(tool.id, 0)
            assert counted == ledger[tool.id], (
                f"{tool.code} counted {counted} wafers, its runs account for {ledger[tool.id]}"
            )
            # ... which is the sum of its confirmed runs and of the runs still on it
            flying = sum(n for t, n in in_flight.values() if t == tool.id)
            assert counted == confirmed[tool.id] + flying, (
                f"{tool.code} counted {counted} wafers: confirmed runs {confirmed[tool.id]}"
                f" + runs in flight {flying}"
            )
        still_running = {r.id for r in rows if r.equipment_id is not None}
        assert set(in_flight) == still_running, "a run neither ended nor running"

    def teardown(self) -> None:
        try:
            for code in sorted(self.lots):
                self.check_through_api(code)
            report = self.h.run(self._check_everything())
            assert report.ok, [v.as_dict() for v in report.violations]
        finally:
            self.h.run(self.savepoint.rollback())


def active_wafers(lot: dict[str, Any]) -> list[str]:
    return [w["scribe_id"] for w in lot["wafers"] if w["state"] == "active"]


@pytest.fixture
async def event_loop_now() -> asyncio.AbstractEventLoop:
    """The loop the (session-scoped) async fixtures run on."""
    return asyncio.get_running_loop()


def summary(h: Harness, elapsed: float) -> str:
    refusals = sum(n for code, n in h.outcomes.items() if code != "ok")
    return (
        f"{h.examples} examples, {sum(h.operations.values())} operations "
        f"({h.outcomes['ok']} applied, {refusals} refused), {h.requests} requests, "
        f"{elapsed:.1f} s\n  operations: {dict(sorted(h.operations.items()))}\n"
        f"  outcomes: {dict(h.outcomes.most_common())}"
    )


def test_lot_state_machine(
    event_loop_now: asyncio.AbstractEventLoop,
    client: httpx.AsyncClient,
    connection: AsyncConnection,
    shared_app: FastAPI,
    clock: FixedClock,
) -> None:
    harness = Harness(event_loop_now, client, connection, shared_app)

    class Machine(LotMachine):  # what Hypothesis builds each example from
        def __init__(self) -> None:
            super().__init__(harness)

    began = time.perf_counter()
    try:
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                # The function-scoped fixtures (client, connection) serve every example of this
                # one run. Hypothesis only raises this check for @given tests that pytest
                # collects, not for machines run like this, but the concern it names applies;
                # sharing is safe here because each example works inside its own SAVEPOINT that
                # teardown rolls back, and gets a fresh clock, so no example sees another's lots.
                suppress_health_check=[HealthCheck.function_scoped_fixture],
            ),
        )
    finally:
        shared_app.state.clock = clock
        print(summary(harness, time.perf_counter() - began))
