"""What a track-in sends to the database: no Q-time read at a step no window can end at, and
the tool written once even when a reticle is reserved (no early flush in the middle)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from tests.api.test_equipment_e10_pm import start_lot


@contextmanager
def statements(connection) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_rest) -> None:
        seen.append(" ".join(statement.split()).lower())

    sync = connection.sync_connection
    event.listen(sync, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(sync, "before_cursor_execute", note)


async def test_a_reticle_track_in_reads_no_windows_and_writes_the_tool_once(client, connection):
    code = await start_lot(client, sequence=40, wafers=5)  # LITHO_248: reticle RT-WELL-01
    with statements(connection) as seen:
        moved = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": "F1-LI4801"})
    assert moved.status_code == 200, moved.text
    assert (await client.get("/api/v1/durables/RT-WELL-01-A")).json()["usage_count"] == 5
    assert any(s.startswith("select") and "from durable" in s for s in seen)  # reticle reserved
    assert not any("lot_qtime" in s for s in seen)  # no route step closes a window at 40
    assert sum(s.startswith("update equipment ") for s in seen) == 1
    audit = await client.get("/api/v1/audit", params={"target_type": "equipment", "limit": 50})
    assert audit.status_code == 200, audit.text
    records = [
        r
        for r in audit.json()["items"]
        if r["operation"] == "lots.track_in" and r["target_id"] == "F1-LI4801"
    ]
    # One record of the tool's change: counters and E10 state together.
    assert [(r["before"]["wafers_processed"], r["after"]["wafers_processed"]) for r in records] == [
        (0, 5)
    ]
    assert records[0]["after"]["e10_state"] == "PRD"
