"""Invariants of lots: wafers conserved, one step and at most one tool, tools holding what runs
on them, and each lot's history folding to the lot."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.check.report import Report, Violation, plain, row_dict
from mes.equipment.models import Equipment
from mes.equipment.states import E10State
from mes.jobs.models import EquipmentJob, EquipmentJobLot
from mes.jobs.states import FINAL as FINAL_JOB_STATES
from mes.lots.models import Genealogy, Lot, LotEvent, LotHold, Wafer
from mes.lots.rules import SNAPSHOT_FIELDS, fold
from mes.lots.states import FINAL_STATES, LotState, WaferState
from mes.routes.models import Step

# --- wafers ----------------------------------------------------------------------------------

# How each kind of lot event may change the lot's wafer count, from (before, after): the count
# it must end at. Every other event leaves the count as it was.
_WAFER_MOVES: Mapping[str, Callable[[Mapping[str, Any], Mapping[str, Any]], int]] = {
    "SPLIT": lambda b, a: int(b["wafer_count"]) - len(a.get("wafers") or []),
    "MERGE": lambda b, a: int(b["wafer_count"]) + int(a.get("wafers") or 0),
    "MERGED_INTO": lambda b, a: 0,
    "SCRAP": lambda b, a: int(b["wafer_count"]) - len(a.get("wafers") or []),
    "BONUS": lambda b, a: int(b["wafer_count"]) + len(a.get("wafers") or []),
}


async def check_wafers(session: AsyncSession, report: Report) -> list[Violation]:
    """Wafers are conserved: each lot's count is its active wafers; every change of a count is
    a split, merge, scrap or bonus of that many wafers; the wafers in the database are the
    wafers started plus the bonus wafers; scrapped wafers hold no slot."""
    found: list[Violation] = []
    active = dict(
        (
            await session.execute(
                select(Wafer.lot_id, func.count())
                .where(Wafer.state == WaferState.ACTIVE)
                .group_by(Wafer.lot_id)
            )
        ).all()
    )
    lots = (await session.execute(select(Lot.id, Lot.code, Lot.wafer_count))).all()
    report.counts["lot"] = len(lots)
    for lot in lots:
        if lot.wafer_count != active.get(lot.id, 0):
            found.append(
                Violation(
                    "wafers",
                    f"lot {lot.code} counts {lot.wafer_count} wafers but holds "
                    f"{active.get(lot.id, 0)} active ones",
                    [
                        {
                            "lot": lot.code,
                            "wafer_count": lot.wafer_count,
                            "active_wafers": active.get(lot.id, 0),
                        }
                    ],
                )
            )
    slotted = (
        await session.execute(
            select(Wafer.scribe_id, Wafer.slot).where(
                Wafer.state == WaferState.SCRAPPED, Wafer.slot.is_not(None)
            )
        )
    ).all()
    for w in slotted:
        found.append(
            Violation(
                "wafers", f"scrapped wafer {w.scribe_id} still holds slot {w.slot}", [row_dict(w)]
            )
        )
    created = 0
    events = await session.execute(
        select(
            LotEvent.id, LotEvent.lot_id, LotEvent.event_type, LotEvent.before, LotEvent.after
        ).where(
            LotEvent.event_type.in_(["START", "BONUS", *_WAFER_MOVES]) | LotEvent.before.is_(None)
        )
    )
    codes = {lot.id: lot.code for lot in lots}
    for event in events:
        after = event.after or {}
        if event.event_type == "START":
            created += int(after.get("wafer_count", 0))
        if event.event_type == "BONUS":
            created += len(after.get("wafers") or [])
        if event.before is None or event.event_type not in _WAFER_MOVES:
            continue
        expected = _WAFER_MOVES[event.event_type](event.before, after)
        if int(after.get("wafer_count", -1)) != expected:
            found.append(
                Violation(
                    "wafers",
                    f"{event.event_type} of lot {codes.get(event.lot_id)} took the count from "
                    f"{event.before['wafer_count']} to {after.get('wafer_count')}, "
                    f"not to {expected}",
                    [{"lot_event": event.id, "lot": codes.get(event.lot_id)}],
                )
            )
    total = int(await session.scalar(select(func.count()).select_from(Wafer)) or 0)
    report.counts["wafer"] = total
    if total != created:
        found.append(
            Violation(
                "wafers",
                f"{total} wafers exist but {created} were started or added as bonus",
                [{"wafers": total, "started_plus_bonus": created}],
            )
        )
    # Every split moved as many wafers as its child started with.
    child_start = {
        e.lot_id: int((e.after or {}).get("wafer_count", -1))
        for e in await session.execute(
            select(LotEvent.lot_id, LotEvent.after).where(LotEvent.event_type == "SPLIT_FROM")
        )
    }
    for g in await session.execute(
        select(Genealogy.id, Genealogy.child_lot_id, Genealogy.wafer_count).where(
            Genealogy.relation == "split"
        )
    ):
        if child_start.get(g.child_lot_id) != g.wafer_count:
            found.append(
                Violation(
                    "wafers",
                    f"split {g.id} moved {g.wafer_count} wafers but child lot "
                    f"{codes.get(g.child_lot_id)} started with {child_start.get(g.child_lot_id)}",
                    [{"genealogy": g.id, "child": codes.get(g.child_lot_id)}],
                )
            )
    return found


# --- lots, steps and tools -------------------------------------------------------------------


async def check_lots_and_tools(session: AsyncSession, report: Report) -> list[Violation]:
    """A lot in the line is at one step of its own route; a running lot is on one tool of its
    fab; a tool holds no more lots than it may, is productive only with a lot on it and idle
    (SBY) only without; every lot of a live job is on that job's tool at its step."""
    found: list[Violation] = []
    final = [s.value for s in FINAL_STATES]
    lots = (
        await session.execute(
            select(
                Lot.id,
                Lot.code,
                Lot.state,
                Lot.fab_id,
                Lot.route_version_id,
                Lot.current_step_id,
                Lot.equipment_id,
                Step.route_version_id.label("step_route_version_id"),
                Equipment.fab_id.label("tool_fab_id"),
            )
            .outerjoin(Step, Step.id == Lot.current_step_id)
            .outerjoin(Equipment, Equipment.id == Lot.equipment_id)
        )
    ).all()
    by_id: dict[int, Any] = {lot.id: lot for lot in lots}
    on_tool: Counter[int] = Counter()
    for lot in lots:
        state = plain(lot.state)
        if state not in final and lot.current_step_id is None:
            found.append(
                Violation("lot_step", f"lot {lot.code} is {state} at no step", [row_dict(lot)])
            )
        if lot.current_step_id is not None and lot.step_route_version_id != lot.route_version_id:
            found.append(
                Violation(
                    "lot_step",
                    f"lot {lot.code} is at step {lot.current_step_id} of another route version",
                    [row_dict(lot)],
                )
            )
        if (state == LotState.RUNNING.value) != (lot.equipment_id is not None):
            found.append(
                Violation(
                    "lot_tool",
                    f"lot {lot.code} is {state} on tool {lot.equipment_id}",
                    [row_dict(lot)],
                )
            )
        if lot.equipment_id is not None:
            on_tool[lot.equipment_id] += 1
            if lot.tool_fab_id != lot.fab_id:
                found.append(
                    Violation(
                        "lot_tool", f"lot {lot.code} runs on a tool of another fab", [row_dict(lot)]
                    )
                )
    tools = (
        await session.execute(
            select(Equipment.id, Equipment.code, Equipment.e10_state, Equipment.max_lots)
        )
    ).all()
    report.counts["equipment"] = len(tools)
    for tool in tools:
        n, state = on_tool.get(tool.id, 0), plain(tool.e10_state)
        running = sorted(lot.code for lot in lots if lot.equipment_id == tool.id)
        rows = [{"tool": tool.code, "e10_state": state, "max_lots": tool.max_lots, "lots": running}]
        if n > tool.max_lots:
            found.append(
                Violation("tool_wip", f"tool {tool.code} holds {n} lots of {tool.max_lots}", rows)
            )
        if state == E10State.PRD.value and n == 0:
            found.append(Violation("tool_wip", f"tool {tool.code} is PRD with no lot on it", rows))
        if state == E10State.SBY.value and n > 0:
            found.append(
                Violation("tool_wip", f"tool {tool.code} is SBY with {n} lots on it", rows)
            )
    live = (
        await session.execute(
            select(
                EquipmentJob.job_order_id,
                EquipmentJob.equipment_id,
                EquipmentJob.step_id,
                EquipmentJob.status,
                EquipmentJobLot.lot_id,
            )
            .join(EquipmentJobLot, EquipmentJobLot.job_id == EquipmentJob.id)
            .where(EquipmentJob.status.not_in(list(FINAL_JOB_STATES)))
        )
    ).all()
    for job in live:
        member = by_id.get(job.lot_id)
        if member is None or (member.equipment_id, member.current_step_id) != (
            job.equipment_id,
            job.step_id,
        ):
            found.append(
                Violation(
                    "tool_wip",
                    f"job {job.job_order_id} is {plain(job.status)} but its lot "
                    f"{member.code if member else job.lot_id} is not on its tool at its step",
                    [row_dict(job), row_dict(member) if member else {}],
                )
            )
    return found


# --- history ---------------------------------------------------------------------------------


async def check_history(session: AsyncSession, report: Report) -> list[Violation]:
    """Each lot's events chain (each starts where the last ended) and fold to the lot row."""
    found: list[Violation] = []
    holds = dict(
        (
            await session.execute(
                select(LotHold.lot_id, func.count())
                .where(LotHold.released_at.is_(None))
                .group_by(LotHold.lot_id)
            )
        ).all()
    )
    history: dict[int, list[tuple[Any, Any]]] = defaultdict(list)
    n = 0
    for lot_id, before, after in await session.execute(
        select(LotEvent.lot_id, LotEvent.before, LotEvent.after).order_by(
            LotEvent.occurred_at, LotEvent.id
        )
    ):
        history[lot_id].append((before, after))
        n += 1
    report.counts["lot_event"] = n
    lots = await session.execute(
        select(
            Lot.id,
            Lot.code,
            Lot.state,
            Lot.current_step_id,
            Lot.equipment_id,
            Lot.wafer_count,
            Lot.fab_id,
            Lot.priority_class,
        )
    )
    for r in lots:
        now = {
            "state": plain(r.state),
            "step_id": r.current_step_id,
            "equipment_id": r.equipment_id,
            "wafer_count": r.wafer_count,
            "fab_id": r.fab_id,
            "priority_class": plain(r.priority_class),
            "active_holds": holds.get(r.id, 0),
        }
        events = history.get(r.id, [])
        if not events:
            found.append(Violation("history", f"lot {r.code} has no history", [{"lot": r.code}]))
            continue
        try:
            folded = fold(events)
        except (ValueError, KeyError, TypeError) as exc:
            found.append(Violation("history", f"lot {r.code}: {exc}", [{"lot": r.code}]))
            continue
        if folded != now:
            diff = {k: (folded.get(k), now[k]) for k in SNAPSHOT_FIELDS if folded.get(k) != now[k]}
            found.append(
                Violation(
                    "history",
                    f"lot {r.code}: the history arrives at {diff} (history, row)",
                    [{"lot": r.code, "history": folded, "row": now}],
                )
            )
    return found
