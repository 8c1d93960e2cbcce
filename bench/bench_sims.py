"""How many simulated tools one process serves: start-up time, memory and CPU of a fab of sims.

    python bench/bench_sims.py [--tools 30] [--speed 60] [--seconds 10] [--job-wafers 25]

1. Starts the tools of the seeded fab (``mes/seed/example_fab.json``; more than 30 repeats them
   under new ids) in this process, on consecutive ports from ``--base-port``, with the shelf
   cache warm (built first if missing, not timed), and reports start-up time and RSS growth.
2. A client process-side load: one asyncua client per tool (in this same process, so the CPU
   figure covers both sides), each subscribed to the tool's events and process values; a
   25-wafer job is started on every tool that can take it, and CPU per wall second is reported
   over ``--seconds``.
3. Times one single-wafer job of ``--job-wafers`` wafers at ``--speed`` to its Ended event.
The last line of the output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from asyncua import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from equipment_sims.fab import load_fab  # noqa: E402
from equipment_sims.launcher import DEFAULT_SHELF_DIR, SimFab  # noqa: E402
from equipment_sims.shelf import prepare_shelf  # noqa: E402
from equipment_sims.spec import ToolSpec  # noqa: E402
from mes.opcua import model as m  # noqa: E402
from tests.equipment_sims.conftest import ToolClient, job_order, wait_until  # noqa: E402

BODIES: dict[str, dict[str, Any]] = {
    "litho": {"dose": 30.0},
    "implant": {"dose": 1e15},
    "metrology": {"sites": 9},
    "etch": {"time": 60, "rf_power": 500},
    "deposition": {"time": 60, "temperature": 400},
    "furnace": {"time": 3600, "temperature": 900},
    "wet": {"sc1_time": 600, "hf_time": 60},
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fab_specs(n: int, base_port: int) -> list[ToolSpec]:
    seeded = load_fab(ROOT / "mes" / "seed" / "example_fab.json")
    specs = [
        replace(
            seeded[i % len(seeded)], tool_id=f"{seeded[i % len(seeded)].tool_id}-{i // len(seeded)}"
        )
        if i >= len(seeded)
        else seeded[i]
        for i in range(n)
    ]
    return [replace(s, port=base_port + i) for i, s in enumerate(specs)]


class CountingClient(ToolClient):
    """Also counts the data changes of its subscription (one subscription per client)."""

    data_changes = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        CountingClient.data_changes += 1


async def main(args: argparse.Namespace) -> dict[str, Any]:
    await prepare_shelf(DEFAULT_SHELF_DIR)
    specs = fab_specs(args.tools, args.base_port)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    fab = SimFab(specs, speed=args.speed, seed=1)
    await fab.start()
    startup = time.perf_counter() - t0
    rss_sims = rss_mb() - rss0
    figures: dict[str, Any] = {
        "tools": len(specs),
        "startup_s": round(startup, 2),
        "startup_per_tool_ms": round(startup / len(specs) * 1000, 1),
        "rss_sims_mb": round(rss_sims, 1),
        "rss_per_tool_mb": round(rss_sims / len(specs), 2),
    }
    print(f"started {len(specs)} sims in {startup:.2f} s, +{rss_sims:.0f} MB RSS", flush=True)
    try:
        clients: list[tuple[Client, ToolClient]] = []
        for server in fab.servers.values():
            client = Client(server.endpoint, timeout=30)
            await client.connect()
            tc = CountingClient(client, server.spec.tool_id)
            await tc.setup()
            pd = await tc.child(m.PROCESS_DATA)
            await tc.subscription.subscribe_data_change(await pd.get_variables())
            clients.append((client, tc))
            body = BODIES[server.spec.family]
            await tc.download("R1", body)
            lots = [(f"L{i}", list(range(1, 26))) for i in range(server.spec.min_batch)]
            await tc.job("StoreAndStart", job_order("J1", "R1", *lots), "")
        figures["rss_with_clients_mb"] = round(rss_mb() - rss0, 1)
        c0, w0, n0 = cpu_s(), time.perf_counter(), CountingClient.data_changes
        events0 = sum(len(tc.events) for _, tc in clients)
        await asyncio.sleep(args.seconds)
        wall = time.perf_counter() - w0
        figures["cpu_per_wall_s"] = round((cpu_s() - c0) / wall, 3)
        figures["value_notifications_per_s"] = round((CountingClient.data_changes - n0) / wall, 1)
        figures["events_per_s"] = round(
            (sum(len(tc.events) for _, tc in clients) - events0) / wall, 1
        )
        print(
            f"{len(specs)} sims + clients busy: {figures['cpu_per_wall_s']:.0%} of a core, "
            f"{figures['value_notifications_per_s']} value notifications/s, "
            f"{figures['events_per_s']} events/s",
            flush=True,
        )
        for client, _ in clients:
            await client.disconnect()
    finally:
        await fab.stop()

    if args.job_wafers:
        litho = ToolSpec(
            "LITHO-T", specs[0].kind, "litho", port=args.base_port, tool_group="LITHO_193"
        )
        async with (
            SimFab([litho], speed=args.speed) as one,
            Client(one["LITHO-T"].endpoint, timeout=30) as client,
        ):
            tc = CountingClient(client, "LITHO-T")
            await tc.setup()
            await tc.download("R1", BODIES["litho"])
            t0 = time.perf_counter()
            slots = list(range(1, args.job_wafers + 1))
            await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", slots)), "")
            ended = lambda: any(e.JobState == "Ended" for e in tc.job_events("J1"))  # noqa: E731
            await wait_until(ended, "the job's end", within=3600)
            figures["job_wafers"] = args.job_wafers
            figures["job_speed"] = args.speed
            figures["job_real_s"] = round(time.perf_counter() - t0, 2)
            print(
                f"{args.job_wafers}-wafer litho job at speed {args.speed:g}: "
                f"{figures['job_real_s']} s",
                flush=True,
            )
    return figures


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tools", type=int, default=30)
    p.add_argument("--speed", type=float, default=60.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--job-wafers", type=int, default=25)
    p.add_argument("--base-port", type=int, default=24841)
    print(json.dumps(asyncio.run(main(p.parse_args()))))
