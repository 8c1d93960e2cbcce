"""What-if jobs of the service: the simulation runs in a worker process, off the request path,
one run (rule set, seed) at a time, so the job's progress is the share of runs done.

Jobs and their results are kept in the serving process (the newest ``keep``), not in the
database: a restart forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mes.simulation import kpi, model, runner
from mes.simulation.rulesets import SimRules
from mes.simulation.state import InitialState


@dataclass
class WhatIfJob:
    id: str
    fab: str
    days: float
    rules: list[str]
    seeds: int
    created_at: datetime
    read: dict[str, int]
    status: str = "queued"  # queued, running, done, failed
    progress: float = 0.0
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def _process_pool() -> Executor:
    # spawn, not fork: the service process has threads and an event loop to leave behind.
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


class WhatIfJobs:
    def __init__(self, *, keep: int = 50) -> None:
        self.keep = keep
        self.jobs: dict[str, WhatIfJob] = {}
        self._pool: Executor | None = None

    def submit(
        self,
        *,
        fab: str,
        testbed_model: model.FabModel,
        initial: InitialState,
        rules: list[SimRules],
        seeds: int,
        days: float,
        now: datetime,
        read: dict[str, int],
    ) -> WhatIfJob:
        job = WhatIfJob(uuid.uuid4().hex, fab, days, [r.name for r in rules], seeds, now, read)
        self.jobs[job.id] = job
        self._trim()
        job.task = asyncio.create_task(self._run(job, testbed_model, initial, rules))
        return job

    async def _run(
        self,
        job: WhatIfJob,
        testbed_model: model.FabModel,
        initial: InitialState,
        rules: list[SimRules],
    ) -> None:
        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = _process_pool()
        job.status = "running"
        results: dict[str, list[kpi.RunResult]] = {}
        total = len(rules) * job.seeds
        try:
            for chosen in rules:
                for seed in range(1, job.seeds + 1):
                    run = await loop.run_in_executor(
                        self._pool,
                        runner.run_one,
                        testbed_model,
                        chosen,
                        seed,
                        job.days,
                        0.0,
                        None,
                        initial,
                    )
                    results.setdefault(chosen.name, []).append(run)
                    job.progress = round(sum(len(v) for v in results.values()) / total, 3)
            job.result = {name: kpi.summarize(runs) for name, runs in results.items()}
            job.status = "done"
        except Exception as exc:  # a failed run fails its job, never the service
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = datetime.now(job.created_at.tzinfo)

    def _trim(self) -> None:
        finished = [j for j in self.jobs.values() if j.status in ("done", "failed")]
        for old in finished[: max(0, len(self.jobs) - self.keep)]:
            del self.jobs[old.id]

    async def close(self) -> None:
        for job in self.jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job.task
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
