"""The human-readable lines of the lot moves report (the JSON object is the figures as they are)."""

from __future__ import annotations

import os
from typing import Any


def describe(label: str, figures: dict[str, Any]) -> list[str]:
    lines = [
        f"{label}: {figures['moves']} moves, {figures['moves_per_s']} moves/s; latency per move "
        f"p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, p99 {figures['p99_ms']} ms, "
        f"max {figures['max_ms']} ms; errors {figures['errors']}"
        + (f" {figures['error_codes']}" if figures["errors"] else ""),
    ]
    for kind, k in figures["by_kind"].items():
        lines.append(
            f"    {kind}: {k['moves']} moves, p50 {k['p50_ms']} ms, p95 {k['p95_ms']} ms, "
            f"p99 {k['p99_ms']} ms"
        )
    cpu = ", ".join(
        f"{party} {figures[party + '_cores']} (kernel {figures[party + '_kernel_cores']})"
        for party in ("server", "postgres", "client", "profiler")
        if figures.get(party + "_cores")
    )
    lines.append(
        f"    CPU cores busy on average: {cpu}; other processes {figures['other_processes_cores']}"
        f"; machine {figures['machine_cores']} of {os.cpu_count()}"
    )
    if "niced_cores" in figures:
        # What "other" is made of: niced jobs fill the cores the parties leave idle, and
        # interrupts (loopback TCP's softirq) belong to no process.
        lines.append(
            f"    of the machine: niced processes {figures['niced_cores']}, interrupts "
            f"{figures['interrupts_cores']}"
        )
    if "database_sessions_opened" in figures:
        lines.append(
            f"    database connections opened during the window: "
            f"{figures['database_sessions_opened']}"
        )
    per_move = ", ".join(
        f"{party} {figures[party + '_cpu_ms_per_move']}"
        for party in ("server", "postgres", "client")
        if party + "_cpu_ms_per_move" in figures
    )
    if per_move:
        lines.append(f"    CPU ms per move: {per_move}")
    if len(figures.get("server_process_cores", [])) > 1:
        lines.append(f"    service processes (cores each): {figures['server_process_cores']}")
    if figures.get("niced_cores", 0) > 0.1 and _autogroups():
        # Seen on the 2-core machine: two simulations under ``nice -n 19`` took 0.6-1.05 cores
        # during the HTTP phases, the service 0.7.
        lines.append(
            "    WARNING: niced processes took CPU meanwhile, and with "
            "sched_autogroup_enabled=1, nice only ranks a process within its own session; "
            "lower the whole session instead (echo 19 > /proc/<pid>/autogroup)"
        )
    if figures["other_processes_cores"] > 0.2:
        lines.append(
            "    WARNING: other processes were busy meanwhile; these figures are disturbed"
        )
    if figures.get("clients_out_of_lots"):
        lines.append(f"    WARNING: {figures['clients_out_of_lots']} clients ran out of lots")
    if figures.get("service_crashed"):
        lines.append("    WARNING: the service exited during the run")
    return lines


def _autogroups() -> bool:
    """Whether the kernel shares the CPU between sessions first (Linux autogroup)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as flag:
            return flag.read().strip() == "1"
    except OSError:
        return False
