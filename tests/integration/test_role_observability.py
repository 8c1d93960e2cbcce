"""Each process role exposes its own metrics and writes JSON log lines when asked, as real
processes: `mes serve` (/metrics beside the API; the request id and actor in every line of a
request) and `mes dispatcher run` (no HTTP: its metrics on MES_METRICS_PORT)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.databases import create_database, drop_database
from tests.integration.test_cli_server import MES, _free_port, _run
from tests.scrape import figure

START_S = 60.0  # a loaded CI machine starts Python slowly


@pytest.fixture(scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, str]]:
    # Shared by the module's tests: migrating and seeding through the CLI is most of their time.
    url = await create_database(tmp_path_factory.mktemp("roles"), "roles")
    env = {**os.environ, "MES_DATABASE_URL": url, "MES_LOG_FORMAT": "json"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    try:
        await asyncio.to_thread(_run, ["db", "upgrade"], env)
        await asyncio.to_thread(_run, ["seed", "example"], env)
        yield env
    finally:
        await drop_database(url)


async def _until(check, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(START_S * 10)):
        try:
            if await check():
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {START_S:g} s: {what}")


def _json_lines(stderr: bytes) -> list[dict[str, object]]:
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    # Every line is one JSON object: a collector needs no multi-line parsing.
    return [json.loads(line) for line in lines]


async def _stop(process: asyncio.subprocess.Process) -> bytes:
    process.terminate()
    _out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    return err


async def test_serve_exposes_metrics_and_logs_json_with_request_id_and_actor(seeded) -> None:
    port = _free_port()
    server = await asyncio.create_subprocess_exec(
        *MES, "serve", "--host", "127.0.0.1", "--port", str(port),
        env=seeded, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def up() -> bool:
                return (await http.get("/healthz")).status_code == 200

            await _until(up, "mes serve answers")
            login = await http.post(
                "/api/v1/auth/token",
                data={"username": "engineer", "password": "change-me-engineer"},
            )
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "req-metrics-1"}
            missing = await http.get("/api/v1/lots/NOPE", headers=headers)
            assert missing.status_code == 404
            scraped = (await http.get("/metrics")).text
    finally:
        stderr = await _stop(server)
    assert figure(scraped, "mes_role", role="api") == 1
    latency = "mes_http_request_duration_seconds_count"
    assert figure(scraped, latency, route="/api/v1/lots/{lot}", status="404") == 1
    assert figure(scraped, latency, route="/api/v1/auth/token", status="200") == 1
    # Process metrics come with the client library (CPU, memory, open files).
    assert figure(scraped, "process_resident_memory_bytes") > 0
    lines = _json_lines(stderr)
    ours = [line for line in lines if line.get("request_id") == "req-metrics-1"]
    assert ours, lines
    assert all(line["actor"] == "engineer" for line in ours)
    assert any("/api/v1/lots/NOPE" in str(line["msg"]) for line in ours)  # the access line


async def test_the_dispatcher_role_serves_its_metrics_on_its_own_port(seeded) -> None:
    port = _free_port()
    env = {**seeded, "MES_METRICS_PORT": str(port), "MES_DISPATCH_INTERVAL_S": "0.5"}
    dispatcher = await asyncio.create_subprocess_exec(
        *MES, "dispatcher", "run", "--fab", "F1", "--owner", "cand-1",
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    scraped = ""
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def cycled() -> bool:
                nonlocal scraped
                scraped = (await http.get("/metrics")).text
                return figure(scraped, "mes_dispatch_cycle_duration_seconds_count", fab="F1") >= 2

            await _until(cycled, "two dispatch cycles as leader")
    finally:
        stderr = await _stop(dispatcher)
    assert figure(scraped, "mes_role", role="dispatcher") == 1
    assert figure(scraped, "mes_dispatch_leader", fab="F1") == 1
    assert figure(scraped, "mes_dispatch_cycle_duration_seconds_sum", fab="F1") > 0
    assert figure(scraped, "mes_db_pool_connections", state="idle") >= 1
    lines = _json_lines(stderr)
    leading = [line for line in lines if "leading F1" in str(line["msg"])]
    assert leading, lines
    assert leading[0]["actor"] == "dispatcher:cand-1"
    assert leading[0]["level"] == "info"
