"""``mes serve --workers N``: N service processes on one port, each with a listening socket of
its own (``SO_REUSEPORT``), so that the kernel spreads the clients' connections over them.

Why not ``uvicorn --workers N``: there the parent binds one socket and the workers share it.
Whichever worker wakes first accepts every pending connection at once (asyncio accepts up to
the backlog per wake-up), and a keep-alive client then stays with that worker for good: with
operators' terminals, OPC UA adapters and the dispatcher holding their connections open, one
worker took the whole load and the second almost none (0.97 vs 0.01 cores in the lot moves
benchmark). With a socket per process the kernel picks the listener for each new connection by
a hash of its addresses, so connections, and with them the load, divide about evenly.

The parent only supervises: it starts the workers, restarts one that dies, and stops them all
on SIGTERM or SIGINT. Every worker is a full replica (docs/deployment.md): its own pool of
database connections and its own audit sealer, which serialise through the database.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

from mes.config import Settings

log = logging.getLogger("mes.serve")

# A worker that dies sooner than this after its start is not restarted (a bad setting, a port
# taken): restarting it would only loop.
MIN_UPTIME_S = 5.0


def reuse_port_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket on ``host:port`` that other processes may bind to the same address too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _worker(host: str, port: int, log_level: str) -> None:
    """One service process: its own socket on the shared port, the app, uvicorn."""
    from mes.main import create_app
    from mes.observability import logs

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)  # a spawned process starts bare
    sock = reuse_port_socket(host, port)
    config = uvicorn.Config(
        create_app(settings),
        log_level=log_level,
        log_config=logs.uvicorn_log_config(settings.log_format),
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run ``workers`` service processes on ``host:port`` until SIGTERM or SIGINT."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise SystemExit("--workers > 1 needs SO_REUSEPORT (Linux, BSD, macOS)")
    if settings.jwt_secret is None:
        # Each process would sign tokens with a key of its own, which the others refuse.
        os.environ["MES_JWT_SECRET"] = secrets.token_urlsafe(48)
        log.warning("MES_JWT_SECRET is unset: the workers share a key made for this run")
    # Bound (not listening: it would take connections) once here first, so that a port that
    # is taken fails the start instead of every worker.
    reuse_port_socket(host, port, listen=False).close()
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        process = context.Process(
            target=_worker, args=(host, port, settings.log_level), name="mes-worker"
        )
        process.start()
        return process

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running = {start(): time.monotonic() for _ in range(workers)}
    log.info("serving on %s:%d with %d worker processes", host, port, workers)
    try:
        while not stopping and running:
            time.sleep(0.2)
            for process, started in list(running.items()):
                if process.is_alive() or stopping:
                    continue
                del running[process]
                if time.monotonic() - started < MIN_UPTIME_S:
                    log.error("worker %s exited at its start (%s)", process.pid, process.exitcode)
                    stopping = True
                else:
                    log.warning("worker %s exited (%s); restarting", process.pid, process.exitcode)
                    running[start()] = time.monotonic()
    finally:
        for process in running:
            if process.is_alive():
                process.terminate()
        for process in running:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    if any(p.exitcode not in (0, -signal.SIGTERM) for p in running):
        raise SystemExit(1)
