"""``/metrics`` after real requests: the figures a fab's IT graphs move as the API works."""

from __future__ import annotations

from datetime import timedelta

from mes.audit import service as audit_service
from mes.clock import FixedClock
from mes.db.transaction import unit_of_work
from mes.dispatch.scheduler import Dispatcher
from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import start, tools_for
from tests.scrape import figure

TRACK_IN = "/api/v1/lots/{lot}/track-in"


async def scrape(client) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_requests_and_lot_transactions_are_counted_by_route_and_outcome(client, anonymous):
    before = await scrape(anonymous)  # no credentials needed: the cluster network guards it
    lot = await start(client)
    wrong = await client.post(f"/api/v1/lots/{lot['code']}/track-in", json={"tool": "F1-LI9301"})
    assert_problem(wrong, 409, "tool.wrong_group")
    tool = (await tools_for(client, lot))[0]
    ok = await client.post(f"/api/v1/lots/{lot['code']}/track-in", json={"tool": tool})
    assert ok.status_code == 200, ok.text
    unknown = await client.get("/api/v1/no-such-thing/at-all")
    assert unknown.status_code == 404
    after = await scrape(anonymous)

    def moved(name: str, **labels: str) -> float:
        return figure(after, name, **labels) - figure(before, name, **labels)

    assert moved("mes_lot_transactions_total", kind="start_lot", outcome="ok") == 1
    assert moved("mes_lot_transactions_total", kind="track_in", outcome="ok") == 1
    assert moved("mes_lot_transactions_total", kind="track_in", outcome="tool.wrong_group") == 1
    latency = "mes_http_request_duration_seconds_count"
    assert moved(latency, method="POST", route=TRACK_IN, status="409") == 1
    assert moved(latency, method="POST", route=TRACK_IN, status="200") == 1
    assert moved(latency, method="POST", route="/api/v1/lots", status="201") == 1
    # Paths that match no route share one label: random URLs cannot grow the label set.
    assert moved(latency, route="other", status="404") == 1
    assert "/api/v1/no-such-thing/at-all" not in after
    # The latency was measured, not just counted.
    assert moved("mes_http_request_duration_seconds_sum", route=TRACK_IN) > 0
    assert figure(after, latency, method="GET", route="/metrics", status="200") >= 1
    # The test's connection is checked out of the pool for the whole test.
    assert figure(after, "mes_db_pool_connections", state="in_use") >= 1
    assert figure(after, "mes_role", role="api") == 1


async def test_a_sealing_pass_reports_how_long_records_waited(client, anonymous, db, clock):
    await start(client)  # audited at the clock's time
    later = FixedClock(clock.now() + timedelta(seconds=42))
    before = await scrape(anonymous)
    async with unit_of_work(db) as session:
        sealed = await audit_service.seal(session, clock=later)
    assert sealed >= 1
    after = await scrape(anonymous)
    assert (
        figure(after, "mes_audit_records_sealed_total")
        - figure(before, "mes_audit_records_sealed_total")
        == sealed
    )
    # The oldest record of the batch may predate the lot start (the seed's records).
    assert figure(after, "mes_audit_seal_lag_seconds") >= 42
    async with unit_of_work(db) as session:
        assert await audit_service.seal(session, clock=later) == 0
    assert figure(await scrape(anonymous), "mes_audit_seal_lag_seconds") == 0


async def test_dispatch_decisions_and_leadership_are_counted(client, anonymous, db, clock):
    await start(client, priority_class="hot")
    before = await scrape(anonymous)
    dispatcher = Dispatcher(db, clock, {"F1": "auto"}, owner="metrics-test", lease_ttl_s=60)
    report = await dispatcher.cycle("F1")
    dispatcher._note_leadership(report)
    assert report.leader
    assert report.requested
    after = await scrape(anonymous)
    requested = figure(after, "mes_dispatch_decisions_total", fab="F1", outcome="requested")
    assert requested - figure(
        before, "mes_dispatch_decisions_total", fab="F1", outcome="requested"
    ) == len(report.requested)
    assert figure(after, "mes_dispatch_leader", fab="F1") == 1
