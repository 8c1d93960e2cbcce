"""Measuring a load: the window, latencies and errors per kind of move, CPU used per party."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Window:
    start: float
    end: float

    def holds(self, began: float, ended: float) -> bool:
        return began >= self.start and ended <= self.end

    @property
    def over(self) -> bool:
        return time.perf_counter() >= self.end


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    errors_outside: Counter[str] = field(default_factory=Counter)
    dry_clients: int = 0

    def record(self, window: Window, kind: str, began: float, ended: float, error: str | None):
        inside = window.holds(began, ended)
        if error is not None:
            (self.errors if inside else self.errors_outside)[f"{kind}: {error}"] += 1
        elif inside:
            self.latencies[kind].append(ended - began)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def latency_figures(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 2),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else float("nan"),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 2) if ordered else float("nan"),
    }


def cpu_per_move(figures: dict[str, Any], seconds: float) -> dict[str, Any]:
    """CPU milliseconds per move of each party: the figure that noise on a shared machine
    disturbs least (wall-clock throughput depends on who else runs)."""
    moves = figures["moves"]
    return {
        f"{party}_cpu_ms_per_move": round(figures[f"{party}_cores"] * seconds * 1000 / moves, 2)
        for party in ("server", "postgres", "client")
        if moves and f"{party}_cores" in figures
    }


def summarise(stats: Stats, seconds: float) -> dict[str, Any]:
    everything = [v for values in stats.latencies.values() for v in values]
    moves = len(everything)
    return {
        "moves": moves,
        "moves_per_s": round(moves / seconds, 1),
        **latency_figures(everything),
        "by_kind": {
            kind: {"moves": len(values), **latency_figures(values)}
            for kind, values in sorted(stats.latencies.items())
        },
        "errors": sum(stats.errors.values()),
        "error_codes": dict(stats.errors.most_common()),
        "errors_outside_window": sum(stats.errors_outside.values()),
        "clients_out_of_lots": stats.dry_clients,
    }


# CPU of processes, from /proc (Linux): (user, system) seconds.
_TICK = os.sysconf("SC_CLK_TCK")
Cpu = tuple[float, float]


def _stat(pid: int) -> tuple[str, int, Cpu] | None:
    """Name, parent and CPU of a process: its own plus that of the children it has reaped.

    The children's part counts the processes that end inside a window: a PostgreSQL backend
    that closes (a pooled connection discarded) is gone from /proc by the after-snapshot, but
    the postmaster has reaped it and carries its CPU in ``cutime``/``cstime`` from then on;
    likewise a service worker reaped by ``mes serve``. Without it, whatever a process that
    ended had used showed up as "other processes" (the 2-worker phase lost 0.1-0.2 cores of
    PostgreSQL that way: its pools opened and closed connections all the time).
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    user = (int(fields[11]) + int(fields[13])) / _TICK
    kernel = (int(fields[12]) + int(fields[14])) / _TICK
    return comm, int(fields[1]), (user, kernel)


def _all_stats() -> dict[int, tuple[str, int, Cpu]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


def cpu_snapshot(server_pid: int | None) -> dict[str, dict[int, Cpu]]:
    """CPU seconds so far of the server's process tree, every PostgreSQL process, and this one."""
    stats = _all_stats()
    server: dict[int, Cpu] = {}
    if server_pid is not None:
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (_, ppid, _) in stats.items():
            children[ppid].append(pid)
        todo = [server_pid]
        while todo:
            pid = todo.pop()
            if pid in stats:
                server[pid] = stats[pid][2]
                todo += children[pid]
    postgres = {pid: cpu for pid, (comm, _, cpu) in stats.items() if comm.startswith("postgres")}
    own = os.times()
    profiler = {pid: cpu for pid, (comm, _, cpu) in stats.items() if comm == "py-spy"}
    snapshot = {
        "postgres": postgres,
        "profiler": profiler,
        "client": {0: (own.user, own.system)},
        "machine": {0: _machine_busy()},
        "machine_parts": {0: _machine_parts()},
    }
    if server_pid is not None:
        snapshot["server"] = server
    return snapshot


def _machine_busy() -> Cpu:
    """Busy seconds of all CPUs (user + nice, and system + irq + softirq), from /proc/stat."""
    user, nice, system, irq, softirq = _machine_fields()
    return user + nice, system + irq + softirq


def _machine_fields() -> tuple[float, float, float, float, float]:
    fields = [int(v) / _TICK for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return user, nice, system, irq, softirq


def _machine_parts() -> Cpu:
    """Seconds of all CPUs spent by niced processes (nice > 0, e.g. another job under
    ``nice -n 19``, which soaks up whatever the measured parties leave idle) and in interrupts
    (irq + softirq: part of loopback TCP is done there and charged to no process)."""
    _user, nice, _system, irq, softirq = _machine_fields()
    return nice, irq + softirq


def cpu_used(
    before: dict[str, dict[int, Cpu]], after: dict[str, dict[int, Cpu]], seconds: float
) -> dict[str, Any]:
    """Cores busy on average during the window, per party: in all, and in the kernel."""
    used: dict[str, Any] = {}
    (nice0, interrupts0), (nice1, interrupts1) = (
        before["machine_parts"][0],
        after["machine_parts"][0],
    )
    used["niced_cores"] = round((nice1 - nice0) / seconds, 2)
    used["interrupts_cores"] = round((interrupts1 - interrupts0) / seconds, 2)
    for party, pids in after.items():
        if party == "machine_parts":
            continue
        user = kernel = 0.0
        for pid, (u, k) in pids.items():
            u0, k0 = before[party].get(pid, (0.0, 0.0))
            user, kernel = user + u - u0, kernel + k - k0
        used[f"{party}_cores"] = round((user + kernel) / seconds, 2)
        used[f"{party}_kernel_cores"] = round(kernel / seconds, 2)
    if "server" in after:
        # Per process: whether every worker carries its share (the supervisor of
        # ``mes serve --workers N`` is in the list too, idle).
        per_process = [
            (u + k - sum(before["server"].get(pid, (0.0, 0.0)))) / seconds
            for pid, (u, k) in after["server"].items()
        ]
        used["server_process_cores"] = sorted((round(c, 2) for c in per_process), reverse=True)
    # Whatever else ran on the machine meanwhile (another load would distort the figures).
    ours = sum(
        float(used[f"{party}_cores"])
        for party in after
        if party not in ("machine", "machine_parts")
    )
    used["other_processes_cores"] = round(max(0.0, used["machine_cores"] - ours), 2)
    return used


async def measure_cpu(window: Window, server_pid: int | None) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    before = cpu_snapshot(server_pid)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    return cpu_used(before, cpu_snapshot(server_pid), window.end - window.start)


async def sessions_opened(window: Window, dsn: str) -> int:
    """Connections opened to the database of ``dsn`` during the window (PostgreSQL ≥ 14,
    ``pg_stat_database.sessions``; -1 before that): a pool that closes and reopens connections
    under steady load pays a backend start and every statement's preparation again each time.
    """
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        query = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        try:
            await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
            before = int(await conn.fetchval(query))
            await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
            # Backends report their start to the statistics within about a second.
            await asyncio.sleep(1.0)
            return int(await conn.fetchval(query)) - before
        except asyncpg.UndefinedColumnError:
            return -1
    finally:
        await conn.close()
