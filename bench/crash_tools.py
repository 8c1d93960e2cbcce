"""The tools' side of the crash run (``bench/crash.py --tools``): simulated tools that the MES
drives while it is killed, and the check that what the tools did and what the MES recorded agree.

A small fab ``S1`` (the soak's four tools on a four-step route: wet bench, deposition, metrology,
etch) is loaded beside the example network; ``equipment_sims`` serves its tools in a process of
their own (the tools are not killed: they are the equipment) and journals every job state change
(``--journal``). The service under test runs the adapters of S1 and its dispatcher in auto mode,
so job orders are sent, run and tracked out while API clients work and the service is SIGKILLed.

The tools' journal is the ground truth:

* no job order started twice on a tool (one start time per tool and job order id);
* every job a tool ended with wafers processed is tracked out in the MES exactly once for each of
  its lots (a TRACK_OUT event of that lot at that tool and step): none lost, none twice;
* no lot is on two tools at once (started on one while a job holding it runs on another).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from soak import fab as soak_fab
from sqlalchemy import select

from mes.clock import SystemClock
from mes.db import migrate
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.equipment.models import Equipment
from mes.jobs.models import EquipmentJob
from mes.lots.models import Lot, LotEvent
from mes.seed import loader

FAB = "S1"
PRODUCT = "SPROD"
TOOLS = 4


def tool_fab(base_port: int) -> dict[str, Any]:
    """The S1 fab as loader data, without the soak's own user (the crash run has its users)."""
    return {**soak_fab(base_port), "users": []}


async def prepare_database(db: Database, base_port: int | None) -> None:
    """Migrate, load the example network and, with a base port, the S1 fab of simulated tools."""
    await migrate.upgrade(db.engine)
    async with unit_of_work(db) as session:
        await loader.load(session, loader.read_example(), clock=SystemClock())
        if base_port is not None:
            data = loader.ExampleData.model_validate(tool_fab(base_port))
            await loader.load(session, data, clock=SystemClock())


def service_env(lease_ttl_s: float) -> dict[str, str]:
    """What the killed service runs beside its API: S1's adapters and dispatcher (auto)."""
    return {
        "MES_ADAPTERS_ENABLED": "true",
        "MES_ADAPTER_FAB": FAB,
        "MES_ADAPTER_LEASE_TTL_S": str(lease_ttl_s),
        "MES_ADAPTER_RECONNECT_MAX_S": "2",
        "MES_DISPATCH_FABS": f"F1=advise,F2=advise,{FAB}",
    }


def start_sims(tmp: Path, base_port: int, speed: float) -> tuple[subprocess.Popen[bytes], Path]:
    (tmp / "tools.json").write_text(json.dumps(tool_fab(base_port)))
    journal = tmp / "tool-journal.jsonl"
    log = (tmp / "sims.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "equipment_sims", "--fab", str(tmp / "tools.json"),
         "--no-security", "--shelf-dir", str(tmp / "shelf"), "--speed", str(speed),
         "--journal", str(journal), "--log-level", "ERROR"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return proc, journal


async def feeder(load: Any, wip: int, rng: random.Random) -> None:
    """Keeps about ``wip`` S1 lots in the line; the dispatcher and the tools move them."""
    live: list[str] = []
    while not load.stop.is_set():
        for code in list(live):
            lot = await load.get(f"/api/v1/lots/{code}")
            if lot["state"] in ("Completed", "Scrapped", "Terminated"):
                live.remove(code)
        if len(live) < wip:
            body = {"product": PRODUCT, "fab": FAB, "wafer_count": rng.randint(2, 5)}
            started = await load.send("start", "engineer", "POST", "/api/v1/lots", body)
            if started is not None:
                live.append(started["code"])
            continue
        await asyncio.sleep(0.5)


def read_journal(journal: Path) -> list[dict[str, Any]]:
    if not journal.exists():
        return []
    lines = journal.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def lots_on_two_tools(records: list[dict[str, Any]]) -> list[str]:
    """Lots a job started on one tool while a job of another tool still held them. The journal is
    appended by one process in the order the tools made the changes, so its order is time."""
    holder: dict[str, tuple[str, str]] = {}  # lot -> (tool, job) of the job running it
    clashes: list[str] = []
    for r in records:
        key = (r["tool"], r["job"])
        final = r["state"] in ("Ended", "Aborted")
        for lot in r["lots"]:
            if final:
                if holder.get(lot) == key:
                    del holder[lot]
            elif r["started"] is not None:
                other = holder.setdefault(lot, key)
                if other != key:
                    clashes.append(f"{lot} on {other[0]}/{other[1]} and {key[0]}/{key[1]}")
    return clashes


async def compare(db: Database, journal: Path) -> dict[str, Any]:
    """The tools' journal against the MES's lot history (see the module's docstring)."""
    records = read_journal(journal)
    starts: dict[tuple[str, str], set[float]] = defaultdict(set)
    ended: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        key = (r["tool"], r["job"])
        if r["started"] is not None:
            starts[key].add(r["started"])
        if r["state"] == "Ended" and (r["processed"] or 0) > 0:
            ended[key] = r
    started_twice = sorted(f"{tool}/{job}" for (tool, job), s in starts.items() if len(s) > 1)
    async with unit_of_work(db, write=False) as session:
        jobs = {
            (tool, job_id): step_id
            for tool, job_id, step_id in await session.execute(
                select(Equipment.code, EquipmentJob.job_order_id, EquipmentJob.step_id)
                .join(Equipment, Equipment.id == EquipmentJob.equipment_id)
                .where(EquipmentJob.job_order_id.in_(sorted({j for _, j in ended})))
            )
        }
        outs: Counter[tuple[str, str, int]] = Counter(
            (lot, tool, step)
            for lot, tool, step in await session.execute(
                select(Lot.code, Equipment.code, LotEvent.step_id)
                .join(Lot, Lot.id == LotEvent.lot_id)
                .join(Equipment, Equipment.id == LotEvent.equipment_id)
                .where(LotEvent.event_type == "TRACK_OUT", Equipment.code.like(f"{FAB}-%"))
            )
        )
    lost: list[str] = []
    doubled: list[str] = []
    unknown = [f"{tool}/{job}" for tool, job in ended if (tool, job) not in jobs]
    for (tool, job), record in ended.items():
        step = jobs.get((tool, job))
        for lot in record["lots"]:
            n = outs[(lot, tool, step)] if step is not None else 0
            if n == 0:
                lost.append(f"{lot} of {tool}/{job}")
            elif n > 1:
                doubled.append(f"{lot} of {tool}/{job} x{n}")
    return {
        "tool_jobs_started": len(starts),
        "tool_jobs_processed": len(ended),
        "tool_lot_runs": sum(len(r["lots"]) for r in ended.values()),
        "tool_jobs_started_twice": started_twice,
        "tool_moves_lost": lost,
        "tool_moves_doubled": doubled,
        "tool_jobs_unknown_to_mes": unknown,
        "tool_lots_on_two_tools": lots_on_two_tools(records),
    }


async def settled(db: Database, journal: Path, within: float) -> dict[str, Any]:
    """``compare`` once the MES has caught up with what the tools ended (the adapters track out
    a job shortly after its end) and the tools have run at least one job (else the comparison
    proves nothing), or after ``within`` seconds."""
    began = time.monotonic()
    while True:
        result = await compare(db, journal)
        caught_up = not result["tool_moves_lost"] and result["tool_jobs_processed"] > 0
        if caught_up or time.monotonic() - began > within:
            return result
        await asyncio.sleep(1.0)
