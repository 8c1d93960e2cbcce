"""The adapters' figures on /metrics: sessions by state, tool events with their lag (arrival
to commit), the outbox, as a job runs on a simulated tool."""

from __future__ import annotations

from tests.scrape import figure

from .conftest import ROUTE, Fab, wait_for


async def scrape(fab: Fab) -> str:
    response = await fab.api.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_sessions_events_and_lag_move_as_a_job_runs(fab: Fab) -> None:
    _sequence, _op, _group, _recipe, tool = ROUTE[0]
    await fab.start_sim(tool)
    before = await scrape(fab)
    registry = fab.start_adapter()

    async def connected() -> bool:
        return (await fab.connection(tool))["state"] == "connected"

    await wait_for(connected, f"{tool} connected", within=20)
    up = await scrape(fab)
    assert figure(up, "mes_adapter_sessions", state="connected") >= 1
    lot = await fab.start_lot(wafers=2)
    job = await fab.request_job(lot, tool)
    done = await fab.wait_job(job["job_order_id"], "completed", "failed", "aborted")
    assert done["status"] == "completed", done
    after = await scrape(fab)

    def moved(name: str, **labels: str) -> float:
        return figure(after, name, **labels) - figure(before, name, **labels)

    # The job's start, its wafers and its end were each committed and timed.
    assert moved("mes_tool_events_total", kind="JobEvent", outcome="applied") >= 2
    assert moved("mes_tool_events_total", kind="SubstrateEvent", outcome="applied") >= 2
    events = moved("mes_tool_events_total")
    assert events >= 4
    assert moved("mes_tool_event_lag_seconds_count") == events
    lag = moved("mes_tool_event_lag_seconds_sum") / events
    assert 0 < lag < 5, lag  # milliseconds on an idle machine; seconds at worst under load
    # Nothing is waiting once the job ran.
    assert figure(after, "mes_adapter_outbox_depth") == 0
    await fab.kill_adapter(registry)
    # A stopped registry's sessions leave the figures.
    assert figure(await scrape(fab), "mes_adapter_sessions", state="connected") == 0
