"""The real service in a subprocess (``mes serve --workers N``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
JWT_SECRET = "bench-signing-key-" + uuid.uuid4().hex
DEFAULT_DATABASE_URL = os.environ.get(
    "MES_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM every process still running, then wait for each; kill one that will not stop.

    All are asked first, so their shutdowns overlap instead of adding up."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def service(url: str, workers: int, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "MES_DATABASE_URL": url,
        "MES_JWT_SECRET": JWT_SECRET,
    }
    host = ["--host", "127.0.0.1", "--port", str(port)]
    # As in production: several workers are processes with a socket each (mes.serving).
    command = [sys.executable, "-m", "mes.cli", "serve", *host, "--workers", str(workers)]
    with log.open("wb") as err:
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            yield server, f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


async def wait_ready(http: httpx.AsyncClient, server: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(1200):  # a loaded machine (other jobs) can take a while to import
        if server.poll() is not None:
            raise RuntimeError(f"the service exited:\n{_tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if (await http.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the service did not become ready in 120 s")
