"""What-if: simulate a fab from where it stands now under two or more rule sets, as a job
(``POST /whatif`` answers at once with the job; ``GET /whatif/{id}`` its progress and figures)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession
from mes.errors import InvalidInput, NotFound
from mes.kit.api import ClockDep, CodeStr
from mes.simulation import model, whatif
from mes.simulation.jobs import WhatIfJob, WhatIfJobs
from mes.simulation.rulesets import BUILTIN, RuleChoiceError, SimRules, resolve

router = APIRouter(prefix="/whatif", tags=["simulation"])

# Publishing rule sets and trying them out go together (engineering).
Engineer = Annotated[Principal, requires(roles.DISPATCH_RULES)]
NAMES = ("production", *BUILTIN, "testbed")


class WhatIfRequest(BaseModel):
    fab: CodeStr
    days: float = Field(14.0, gt=0, le=90)
    rules: list[str] = Field(
        default_factory=lambda: ["production", "fifo"], min_length=1, max_length=4
    )
    seeds: int = Field(1, ge=1, le=5)


class WhatIfRead(BaseModel):
    id: str
    fab: str
    days: float
    rules: list[str]
    seeds: int
    status: str
    progress: float
    created_at: datetime
    finished_at: datetime | None
    read: dict[str, int]
    error: str | None = None
    result: dict[str, Any] | None = None


def _jobs(request: Request) -> WhatIfJobs:
    jobs: WhatIfJobs = request.app.state.whatif
    return jobs


def _read(job: WhatIfJob) -> WhatIfRead:
    return WhatIfRead(
        id=job.id,
        fab=job.fab,
        days=job.days,
        rules=job.rules,
        seeds=job.seeds,
        status=job.status,
        progress=job.progress,
        created_at=job.created_at,
        finished_at=job.finished_at,
        read=job.read,
        error=job.error,
        result=job.result,
    )


def _choose(names: list[str], production: SimRules) -> list[SimRules]:
    chosen = []
    for name in names:
        key = name.strip().lower()
        if key not in NAMES:
            raise InvalidInput(
                f"unknown rule set {name!r}; known: {', '.join(NAMES)}",
                code="whatif.unknown_rule_set",
            )
        try:
            chosen.append(production if key == "production" else resolve(key))
        except RuleChoiceError as exc:  # pragma: no cover - the names are checked above
            raise InvalidInput(str(exc), code="whatif.unknown_rule_set") from exc
    if len({c.name for c in chosen}) != len(chosen):
        raise InvalidInput("a rule set is named twice", code="whatif.duplicate_rule_set")
    return chosen


@router.post("", response_model=WhatIfRead, status_code=status.HTTP_202_ACCEPTED)
async def start_whatif(
    body: WhatIfRequest, _by: Engineer, session: ReadSession, clock: ClockDep, request: Request
) -> WhatIfRead:
    """Read the fab now (one read transaction) and simulate ``days`` ahead in a worker process
    under each rule set (``production``: the fab's own sets per tool group)."""
    live = await whatif.read_fab(session, body.fab, clock.now())
    rules = _choose(body.rules, live.production)
    job = _jobs(request).submit(
        fab=body.fab,
        testbed_model=model.build(live.testbed),
        initial=live.initial,
        rules=rules,
        seeds=body.seeds,
        days=body.days,
        now=clock.now(),
        read=live.counts,
    )
    return _read(job)


@router.get("/{job_id}", response_model=WhatIfRead)
async def get_whatif(job_id: str, request: Request) -> WhatIfRead:
    """A what-if job: its progress (share of runs done) and, when done, every figure."""
    job = _jobs(request).jobs.get(job_id)
    if job is None:
        raise NotFound(f"no what-if job {job_id}", code="whatif.not_found")
    return _read(job)
