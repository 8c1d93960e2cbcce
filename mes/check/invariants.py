"""The invariant checker: reads the database and names every row that breaks an invariant.

Each check is one function of a read session returning ``Violation``s; ``check`` runs them all.
The checks read whole tables (the lot history included), so they cost O(rows): meant for tests,
crash recovery and ``mes check`` on demand, not for every request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit import service as audit_service
from mes.check.lots import check_history, check_lots_and_tools, check_wafers
from mes.check.report import Report, Violation, plain, row_dict
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.dispatch.models import DispatchDecision, DispatchLeader
from mes.jobs.models import EquipmentJob, EquipmentJobLot
from mes.jobs.states import FINAL as FINAL_JOB_STATES
from mes.lots.models import Lot
from mes.opcua.models import AdapterLease

# --- jobs ------------------------------------------------------------------------------------


async def check_jobs(session: AsyncSession, report: Report) -> list[Violation]:
    """At most one live job per lot; one job per lot, step and attempt; a job starts only once
    sent, and no two runs of one lot at one step overlap (no job started twice)."""
    found: list[Violation] = []
    rows = (
        await session.execute(
            select(
                EquipmentJob.id,
                EquipmentJob.job_order_id,
                EquipmentJob.lot_id.label("lead_lot_id"),
                EquipmentJob.step_id,
                EquipmentJob.attempt,
                EquipmentJob.status,
                EquipmentJob.sent_at,
                EquipmentJob.started_at,
                EquipmentJob.ended_at,
                EquipmentJobLot.lot_id,
                Lot.code.label("lot"),
            )
            .join(EquipmentJobLot, EquipmentJobLot.job_id == EquipmentJob.id)
            .join(Lot, Lot.id == EquipmentJobLot.lot_id)
            .order_by(EquipmentJob.id)
        )
    ).all()
    report.counts["equipment_job"] = len({r.id for r in rows})
    live: dict[int, list[Any]] = defaultdict(list)
    attempts: dict[tuple[int, int, int], set[str]] = defaultdict(set)
    runs: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for r in rows:
        if plain(r.status) not in {s.value for s in FINAL_JOB_STATES}:
            live[r.lot_id].append(r)
        attempts[(r.lot_id, r.step_id, r.attempt)].add(r.job_order_id)
        if r.started_at is not None:
            runs[(r.lot_id, r.step_id)].append(r)
            if r.sent_at is None:
                found.append(
                    Violation(
                        "jobs", f"job {r.job_order_id} started but was never sent", [row_dict(r)]
                    )
                )
    for jobs in live.values():
        if len(jobs) > 1:
            found.append(
                Violation(
                    "jobs",
                    f"lot {jobs[0].lot} is in {len(jobs)} live jobs "
                    f"{[j.job_order_id for j in jobs]}",
                    [row_dict(j) for j in jobs],
                )
            )
    for (lot_id, step_id, attempt), ids in attempts.items():
        if len(ids) > 1:
            found.append(
                Violation(
                    "jobs",
                    f"lot {lot_id} has {len(ids)} jobs {sorted(ids)} for attempt {attempt} at "
                    f"step {step_id}",
                    [
                        {
                            "lot_id": lot_id,
                            "step_id": step_id,
                            "attempt": attempt,
                            "jobs": sorted(ids),
                        }
                    ],
                )
            )
    for started in runs.values():
        started.sort(key=lambda r: r.started_at)
        for first, second in pairwise(started):
            if first.ended_at is None or first.ended_at > second.started_at:
                found.append(
                    Violation(
                        "jobs",
                        f"lot {first.lot} was started twice at one step: jobs "
                        f"{first.job_order_id} and {second.job_order_id} overlap",
                        [row_dict(first), row_dict(second)],
                    )
                )
    return found


# --- leases ----------------------------------------------------------------------------------

LEASE_TABLES: tuple[tuple[str, Any, Any], ...] = (
    ("adapter_lease", AdapterLease, AdapterLease.equipment_id),
    ("dispatch_leader", DispatchLeader, DispatchLeader.fab_id),
)


async def check_leases(
    session: AsyncSession, report: Report, *, leader_window: timedelta
) -> list[Violation]:
    """A lease row has one owner and sane times; no two dispatchers led one fab at once (their
    decisions interleave: A, B, A, B within ``leader_window``). A, B, A alone is a hand-over and
    back — A's lease lapsed while it was starved of CPU, B took it, B died — which the lease
    allows: every decision re-checks the lease in its own transaction."""
    found: list[Violation] = []
    for table, model, key in LEASE_TABLES:
        rows = (
            await session.execute(
                select(
                    key.label("resource"),
                    model.owner,
                    model.acquired_at,
                    model.renewed_at,
                    model.expires_at,
                )
            )
        ).all()
        report.counts[table] = len(rows)
        owners: dict[Any, set[str]] = defaultdict(set)
        for r in rows:
            owners[r.resource].add(r.owner)
            if not r.owner or not (r.acquired_at <= r.renewed_at <= r.expires_at):
                found.append(
                    Violation(
                        "leases",
                        f"{table} of {r.resource}: owner or times are not sane",
                        [row_dict(r)],
                    )
                )
        for resource, names in owners.items():
            if len(names) > 1:
                found.append(
                    Violation(
                        "leases",
                        f"{table} of {resource} is held by {sorted(names)}",
                        [{"table": table, "resource": resource, "owners": sorted(names)}],
                    )
                )
    decisions = await session.execute(
        select(DispatchDecision.fab_id, DispatchDecision.cycle_at, DispatchDecision.owner)
        .distinct()
        .order_by(DispatchDecision.fab_id, DispatchDecision.cycle_at)
    )
    last: dict[int, list[Any]] = defaultdict(list)  # fab -> the last owners' (owner, at)
    for d in decisions:
        seen = last[d.fab_id]
        if seen and seen[-1].owner == d.owner:
            seen[-1] = d
            continue
        # Owner A, B, A, then B again within the window: both kept acting as the fab's leader.
        if (
            len(seen) >= 3
            and seen[-2].owner == d.owner
            and seen[-3].owner == seen[-1].owner
            and d.cycle_at - seen[-3].cycle_at < leader_window
        ):
            found.append(
                Violation(
                    "leases",
                    f"fab {d.fab_id} was dispatched by {seen[-1].owner} and {d.owner} "
                    "at once (their decisions interleave)",
                    [row_dict(seen[-3]), row_dict(seen[-2]), row_dict(seen[-1]), row_dict(d)],
                )
            )
        seen.append(d)
    return found


# --- audit -----------------------------------------------------------------------------------


async def check_audit(session: AsyncSession, report: Report) -> list[Violation]:
    """The audit hash chain verifies (``mes audit verify``'s check)."""
    verification = await audit_service.verify(session)
    report.counts["audit_event_sealed"] = verification.checked
    return [
        Violation("audit", p.message, [{"audit_event": p.record_id, "chain_seq": p.chain_seq}])
        for p in verification.problems
    ]


# --- all -------------------------------------------------------------------------------------

KINDS = ("wafers", "lot_step", "lot_tool", "tool_wip", "history", "jobs", "leases", "audit")


async def check(
    session: AsyncSession, *, leader_window: timedelta = timedelta(seconds=90)
) -> Report:
    """Run every check in one read session (one snapshot on PostgreSQL if the caller's
    transaction is REPEATABLE READ; otherwise rows committed meanwhile may show up)."""
    report = Report()
    checks: Iterable[Callable[[AsyncSession, Report], Awaitable[list[Violation]]]] = (
        check_wafers,
        check_lots_and_tools,
        check_history,
        check_jobs,
        check_audit,
    )
    for run in checks:
        report.violations += await run(session, report)
    report.violations += await check_leases(session, report, leader_window=leader_window)
    return report


async def check_database(database: Database, **kwargs: Any) -> Report:
    """``check`` in a read transaction of its own: one snapshot of the database (PostgreSQL:
    REPEATABLE READ; SQLite's read transaction is one already), so that writers running
    meanwhile cannot make consistent rows look inconsistent."""
    async with unit_of_work(database, write=False) as session:
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        return await check(session, **kwargs)
