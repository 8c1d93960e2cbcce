"""The README's main job, end to end: `mes db upgrade`, `mes seed example`, `mes serve`, then
real HTTP over a socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.databases import create_database, drop_database

MES = [sys.executable, "-m", "mes.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(MES + args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_migrate_seed_and_serve_over_http(tmp_path: Path) -> None:
    url = await create_database(tmp_path, "cli")
    env = {**os.environ, "MES_DATABASE_URL": url}
    try:
        assert "database at revision" in await asyncio.to_thread(_run, ["db", "upgrade"], env)
        seeded = await asyncio.to_thread(_run, ["seed", "example", "--if-empty"], env)
        assert '"tools": 30' in seeded
        again = await asyncio.to_thread(_run, ["seed", "example", "--if-empty"], env)
        assert "not loaded" in again

        port = _free_port()
        server = await asyncio.create_subprocess_exec(
            *MES,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            # The releaser on, as in `make run`: the example's start plans release lots.
            env={**env, "MES_RELEASE_ENABLED": "true", "MES_RELEASE_INTERVAL_S": "0.5"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                for _ in range(600):  # 60 s: a loaded CI machine starts Python slowly
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                assert (await http.get("/readyz")).json()["status"] == "ok"
                assert (await http.get("/docs")).status_code == 200
                assert (await http.get("/api/v1/equipment")).status_code == 401
                login = await http.post(
                    "/api/v1/auth/token",
                    data={"username": "engineer", "password": "change-me-engineer"},
                )
                assert login.status_code == 200, login.text
                http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
                tools = (await http.get("/api/v1/equipment", params={"limit": 100})).json()
                assert tools["total"] == 30
                route = (await http.get("/api/v1/routes/R-LOGIC28/versions/1")).json()
                assert route["status"] == "active"
                assert len(route["steps"]) == 38
                missing = await http.get("/api/v1/lots/NOPE")
                assert missing.status_code == 404
                assert missing.headers["content-type"] == "application/problem+json"

                welcome = await asyncio.to_thread(
                    _run, ["seed", "welcome", "--url", f"http://127.0.0.1:{port}"], env
                )
                assert f"http://127.0.0.1:{port}/console" in welcome
                assert "supervisor  change-me-supervisor" in welcome
                for _ in range(150):
                    lots = (await http.get("/api/v1/lots", params={"limit": 100})).json()
                    if lots["total"] >= 6:
                        break
                    await asyncio.sleep(0.2)
                plans = (await http.get("/api/v1/start-plans")).json()["items"]
                assert sum(p["released"] for p in plans) == lots["total"] >= 6
                history = await http.get(f"/api/v1/lots/{lots['items'][0]['code']}/history")
                assert history.json()["items"][0]["actor"] == "releaser"
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), timeout=10)
    finally:
        await drop_database(url)


def test_welcome_gives_up_on_a_service_that_never_answers() -> None:
    done = subprocess.run(
        [*MES, "seed", "welcome", "--url", f"http://127.0.0.1:{_free_port()}", "--wait", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "did not become ready" in done.stderr


async def test_seed_refuses_a_database_with_data_without_if_empty(tmp_path: Path) -> None:
    url = await create_database(tmp_path, "cli2")
    env = {**os.environ, "MES_DATABASE_URL": url}
    try:
        await asyncio.to_thread(_run, ["db", "upgrade"], env)
        await asyncio.to_thread(_run, ["seed", "example"], env)
        done = await asyncio.to_thread(
            subprocess.run, [*MES, "seed", "example"], env=env, capture_output=True, text=True
        )
        assert done.returncode != 0
        assert "already holds data" in done.stderr
    finally:
        await drop_database(url)


async def test_process_export_and_import_from_the_command_line(tmp_path: Path) -> None:
    url = await create_database(tmp_path, "cli3")
    env = {**os.environ, "MES_DATABASE_URL": url}
    exported = tmp_path / "process.json"
    try:
        await asyncio.to_thread(_run, ["db", "upgrade"], env)
        await asyncio.to_thread(_run, ["seed", "example"], env)
        await asyncio.to_thread(
            _run, ["process", "export", "--product", "LOGIC28", "-o", str(exported)], env
        )
        document = json.loads(exported.read_text("utf-8"))
        assert [p["code"] for p in document["products"]] == ["LOGIC28"]
        # What is there already is unchanged, so importing it back creates nothing.
        summary = json.loads(
            await asyncio.to_thread(_run, ["process", "import", str(exported)], env)
        )
        assert summary["route_versions"] == {"created": 0, "unchanged": 1}
        assert all(kind["created"] == 0 for key, kind in summary.items() if key != "dry_run")

        document["recipes"][0]["versions"][0]["checksum"] = "0" * 64
        damaged = tmp_path / "damaged.json"
        damaged.write_text(json.dumps(document), "utf-8")
        done = await asyncio.to_thread(
            subprocess.run,
            [*MES, "process", "import", str(damaged)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2
        assert "import.invalid" in done.stderr
        assert "checksum does not match" in done.stderr
    finally:
        await drop_database(url)
