"""`mes serve --workers 2`: both processes take connections, and a token works on either."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.databases import create_database, drop_database

MES = [sys.executable, "-m", "mes.cli"]
CONNECTIONS = 24

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="finds each connection's process in /proc (Linux)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _workers(pid: int) -> list[int]:
    """The service processes under the supervisor ``pid`` (not multiprocessing's helper)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            if parent == pid and b"spawn_main" in command:
                found.append(int(entry))
    return found


def _socket_owners(pids: list[int]) -> dict[int, int]:
    """Socket inode → the process holding it."""
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[int(target[8:-1])] = pid
    return owners


def _server_side_inode(client_port: int, server_port: int) -> int | None:
    """The inode of the accepted socket of the connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            return int(fields[9])
    return None


def _wait_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    # Both workers import the whole service: generous, for a CI machine busy with other jobs.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert server.poll() is None, "mes serve exited"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise AssertionError("mes serve --workers 2 did not become ready")


def _spread(port: int, server: subprocess.Popen[bytes]) -> tuple[dict[int, int], list[int]]:
    _wait_ready(port, server)
    login = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    login.request(
        "POST",
        "/api/v1/auth/token",
        body="username=chief&password=two-workers-one-key-2026",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    answer = login.getresponse()
    body = answer.read()
    login.close()
    assert answer.status == 200, body
    token = json.loads(body)["access_token"]
    # Keep-alive connections opened at once, like terminals that log in together.
    connections = [
        http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(CONNECTIONS)
    ]
    statuses = []
    for conn in connections:
        conn.request("GET", "/api/v1/fabs", headers={"Authorization": f"Bearer {token}"})
        reply = conn.getresponse()
        reply.read()
        statuses.append(reply.status)
    workers = _workers(server.pid)
    owners = _socket_owners(workers)
    per_worker = dict.fromkeys(workers, 0)
    for conn in connections:
        assert conn.sock is not None
        inode = _server_side_inode(conn.sock.getsockname()[1], port)
        if inode in owners:
            per_worker[owners[inode]] += 1
        conn.close()
    return per_worker, statuses


def _serve_and_spread(env: dict[str, str]) -> tuple[dict[int, int], list[int], int]:
    port = _free_port()
    server = subprocess.Popen(
        [*MES, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        per_worker, statuses = _spread(port, server)
    finally:
        server.terminate()
        server.wait(30)
    return per_worker, statuses, server.returncode


async def test_two_workers_share_the_connections_and_the_signing_key(tmp_path: Path) -> None:
    url = await create_database(tmp_path, "workers")
    env = {k: v for k, v in os.environ.items() if k != "MES_JWT_SECRET"}
    env |= {"MES_DATABASE_URL": url, "MES_ADMIN_PASSWORD": "two-workers-one-key-2026"}
    try:
        for args in (
            ["db", "upgrade"],
            ["users", "create-admin", "--username", "chief", "--display-name", "Chief"],
        ):
            done = await asyncio.to_thread(
                subprocess.run, MES + args, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
        per_worker, statuses, exit_code = await asyncio.to_thread(_serve_and_spread, env)
        # No MES_JWT_SECRET: the supervisor made one key for both, so the token works anywhere.
        assert statuses == [200] * CONNECTIONS
        assert len(per_worker) == 2, per_worker
        assert sum(per_worker.values()) == CONNECTIONS, per_worker
        # The kernel hashes connections over the two sockets: both get a fair share (the odds
        # of fewer than 4 of 24 on one side by chance are below 1 in 2,000).
        assert min(per_worker.values()) >= 4, per_worker
        assert exit_code == 0
    finally:
        await drop_database(url)
