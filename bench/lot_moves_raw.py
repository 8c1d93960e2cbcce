"""The baseline: the writes of one lot move as raw SQL over asyncpg, by concurrent workers."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
from lot_moves_fixture import OPERATOR, Fixture, utc_now
from measuring import Stats, Window, cpu_per_move, measure_cpu, summarise
from sqlalchemy.engine import make_url

from mes.equipment.states import DEFAULT_SUBSTATE, E10State


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


LOCK_LOT = "SELECT state, current_step_id, version FROM lot WHERE id = $1 FOR NO KEY UPDATE"
LOCK_TOOL = "SELECT e10_state, version FROM equipment WHERE id = $1 FOR NO KEY UPDATE"
UPDATE_TOOL = (
    "UPDATE equipment SET e10_state = $2, e10_substate = $3, state_since = $4, "
    "version = version + 1, updated_at = $4 WHERE id = $1"
)
INSERT_TOOL_EVENT = (
    "INSERT INTO equipment_state_event (fab_id, equipment_id, from_state, to_state, substate, "
    "occurred_at, recorded_at, source, actor, reason) "
    "VALUES ($1, $2, $3, $4, $5, $6, $6, 'system', $7, $8)"
)
TRACK_IN_LOT = (
    "UPDATE lot SET state = 'Running', equipment_id = $2, tracked_in_at = $3, "
    "version = version + 1, updated_at = $3 WHERE id = $1"
)
TRACK_OUT_LOT = (
    "UPDATE lot SET state = 'Waiting', equipment_id = NULL, tracked_in_at = NULL, "
    "current_step_id = $2, step_entered_at = $3, version = version + 1, updated_at = $3 "
    "WHERE id = $1"
)
INSERT_LOT_EVENT = (
    "INSERT INTO lot_event (lot_id, fab_id, event_type, occurred_at, actor, step_id, "
    "equipment_id, before, after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb)"
)
INSERT_AUDIT = (
    "INSERT INTO audit_event (occurred_at, actor, role, operation, action, target_type, "
    "target_id, fab_id, before, after) VALUES ($1, $2, 'operator', $3, $4, $5, $6, $7, "
    "$8::jsonb, $9::jsonb)"
)


class RawWorker:
    """One connection moving one lot along the route (round and round) through its own tools."""

    def __init__(
        self, conn: asyncpg.Connection, fixture: Fixture, n: int, window: Window, stats: Stats
    ) -> None:
        self.conn, self.window, self.stats = conn, window, stats
        self.lot_id, self.fab_id = fixture.raw_lots[n]
        self.steps, self.tools = fixture.steps, fixture.tool_ids[n]
        self.index, self.running = 0, False

    def _snapshot(self, state: str, step: int, tool: int | None) -> str:
        return json.dumps(
            {
                "state": state,
                "step_id": step,
                "equipment_id": tool,
                "wafer_count": 25,
                "fab_id": self.fab_id,
                "priority_class": "normal",
                "active_holds": 0,
            }
        )

    async def move(self) -> None:
        now = utc_now()
        step, group = self.steps[self.index]
        tool = self.tools[group]
        nxt = self.steps[(self.index + 1) % len(self.steps)][0]
        track_in = not self.running
        async with self.conn.transaction():
            lot = await self.conn.fetchrow(LOCK_LOT, self.lot_id)
            held = await self.conn.fetchrow(LOCK_TOOL, tool)
            new_state = E10State.PRD if track_in else E10State.SBY
            substate = DEFAULT_SUBSTATE[new_state]
            await self.conn.execute(UPDATE_TOOL, tool, new_state.value, substate, now)
            await self.conn.execute(
                INSERT_TOOL_EVENT,
                self.fab_id,
                tool,
                held["e10_state"],
                new_state.value,
                substate,
                now,
                OPERATOR[0],
                "lot track-in" if track_in else "last lot tracked out",
            )
            if track_in:
                await self.conn.execute(TRACK_IN_LOT, self.lot_id, tool, now)
                before = self._snapshot("Waiting", step, None)
                after = self._snapshot("Running", step, tool)
                lot_change = ({"state": "Waiting", "equipment_id": None}, {"state": "Running"})
            else:
                await self.conn.execute(TRACK_OUT_LOT, self.lot_id, nxt, now)
                before = self._snapshot("Running", step, tool)
                after = self._snapshot("Waiting", nxt, None)
                lot_change = ({"state": "Running", "current_step_id": step}, {"state": "Waiting"})
            operation = "lots.track_in" if track_in else "lots.track_out"
            version = lot["version"]
            await self.conn.executemany(
                INSERT_AUDIT,
                [
                    (
                        now,
                        OPERATOR[0],
                        operation,
                        "update",
                        "lot",
                        str(self.lot_id),
                        self.fab_id,
                        json.dumps({**lot_change[0], "version": version}),
                        json.dumps({**lot_change[1], "version": version + 1}),
                    ),
                    (
                        now,
                        OPERATOR[0],
                        operation,
                        "update",
                        "equipment",
                        str(tool),
                        self.fab_id,
                        json.dumps({"e10_state": held["e10_state"], "version": held["version"]}),
                        json.dumps({"e10_state": new_state.value, "version": held["version"] + 1}),
                    ),
                ],
            )
            await self.conn.execute(
                INSERT_LOT_EVENT,
                self.lot_id,
                self.fab_id,
                "TRACK_IN" if track_in else "TRACK_OUT",
                now,
                OPERATOR[0],
                step,
                tool,
                before,
                after,
            )
        if not track_in:
            self.index = (self.index + 1) % len(self.steps)
        self.running = track_in

    async def run(self) -> None:
        while not self.window.over:
            kind = "track_out" if self.running else "track_in"
            began = time.perf_counter()
            error = None
            try:
                await self.move()
            except (asyncpg.PostgresError, OSError) as exc:
                error = type(exc).__name__
            self.stats.record(self.window, kind, began, time.perf_counter(), error)
        if self.running:  # leave the tool free for the HTTP phases (not measured)
            await self.move()


async def raw_phase(url: str, fixture: Fixture, clients: int, warmup: float, seconds: float):
    dsn = asyncpg_dsn(url)
    conns = await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(clients)))
    try:
        stats = Stats()
        start = time.perf_counter() + warmup
        window = Window(start, start + seconds)
        workers = [RawWorker(conns[n], fixture, n, window, stats) for n in range(clients)]
        measure = asyncio.create_task(measure_cpu(window, None))
        await asyncio.gather(*(w.run() for w in workers))
        figures = {**summarise(stats, seconds), **await measure}
        return {**figures, **cpu_per_move(figures, seconds)}
    finally:
        await asyncio.gather(*(c.close() for c in conns))
