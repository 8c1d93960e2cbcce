"""OCAP: what a violation does, in the transaction of the data that caused it, and how an
engineer closes it.

- ``hold_lot``: the lot is held (``SPC``; out of spec: ``OUT_OF_SPEC``, always) at the step that
  measured it;
- ``inhibit_tool`` / ``inhibit_chamber``: the tool (or the chamber that processed the wafer) goes
  to ``UDT.SPC``, so track-in and the dispatcher stop using it;
- ``notify``: a notification row that other systems read (``GET /quality/notifications``).

Each violation is a record with the actions' results; the lot's TRACK_OUT event lists its holds,
the tool's state history the inhibit, and the audit trail every row. An engineer acknowledges a
violation with a comment (the OCAP closure) and may return the tool to production with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.equipment import service as equipment_service
from mes.equipment.models import Chamber, Equipment, StateChangeSource
from mes.equipment.states import UP_STATES, E10State
from mes.errors import Conflict, NotFound, RuleViolation
from mes.lots.checks import CheckHold
from mes.quality.models import QualityNotification, SpcToolWatch, SpcViolation

SPC_SUBSTATE = "UDT.SPC"
SPC_HOLD = "SPC"
OOS_HOLD = "OUT_OF_SPEC"
ACTOR = "quality"


def inhibit(
    session: AsyncSession,
    tool: Equipment,
    chamber: Chamber | None,
    why: str,
    at: datetime,
) -> tuple[str, bool]:
    """Take the tool (or one chamber) out of production: UDT.SPC, if it is up. Says what it
    did, and whether it took it down."""
    holder: Equipment | Chamber = tool if chamber is None else chamber
    name = tool.code if chamber is None else f"{tool.code}/{chamber.name}"
    if holder.e10_state not in UP_STATES:
        return f"{name} already {holder.e10_substate}", False
    equipment_service.record_state(
        session,
        tool,
        E10State.UDT,
        SPC_SUBSTATE,
        actor=ACTOR,
        at=at,
        recorded_at=at,
        source=StateChangeSource.SYSTEM,
        reason=why[:255],
        chamber=chamber,
    )
    return f"{name} to {SPC_SUBSTATE}", True


async def apply(
    session: AsyncSession,
    violation: SpcViolation,
    actions: Iterable[str],
    *,
    tool: Equipment,
    at: datetime,
    next_lots: int = 0,
) -> list[CheckHold]:
    """Carry out ``actions`` for a fresh (flushed) violation; the lot holds are returned for the
    track-out to place. Each action's result is recorded on the violation."""
    done: list[dict[str, Any]] = []
    holds: list[CheckHold] = []
    for action in dict.fromkeys(actions):  # each once, in the order configured
        entry: dict[str, Any] = {"action": action}
        why = f"SPC violation {violation.id}"
        if action == "hold_lot":
            code = OOS_HOLD if violation.rule == "out_of_spec" else SPC_HOLD
            holds.append(CheckHold(code, f"violation {violation.id}: {violation.detail}"[:2000]))
            entry["result"] = f"lot held {code}"
        elif action == "hold_next_lots" and next_lots > 0:
            session.add(
                SpcToolWatch(
                    equipment_id=tool.id,
                    violation_id=violation.id,
                    lots_left=next_lots,
                    created_at=at,
                )
            )
            entry["result"] = (
                f"the next {next_lots} lots out of {tool.code} will be held {SPC_HOLD}"
            )
        elif action in ("inhibit_tool", "inhibit_chamber"):
            chamber = None
            if action == "inhibit_chamber":
                chamber = await _chamber(session, tool, violation.chamber)
                await _load_chambers(session, tool)  # a chamber's state rolls up to the tool
            entry["result"], down = inhibit(session, tool, chamber, why, at)
            if action == "inhibit_chamber" and chamber is None:
                entry["result"] = f"no chamber reported, so the tool: {entry['result']}"
            if down:
                entry["inhibited"] = "tool" if chamber is None else "chamber"
        elif action == "notify":
            session.add(
                QualityNotification(
                    fab_id=violation.fab_id,
                    violation_id=violation.id,
                    message=f"{tool.code}: {violation.detail}"[:2000],
                    created_at=at,
                )
            )
            entry["result"] = "notification recorded"
        else:
            entry["result"] = "unknown action: ignored"
        done.append(entry)
    violation.actions = {"done": done}
    return holds


async def watched(session: AsyncSession, tool: Equipment) -> list[CheckHold]:
    """Holds for a lot tracked out of a tool under ``hold_next_lots``: each watch in force
    counts the lot and holds it."""
    holds = []
    for watch in await session.scalars(
        select(SpcToolWatch)
        .where(SpcToolWatch.equipment_id == tool.id, SpcToolWatch.lots_left > 0)
        .order_by(SpcToolWatch.id)
        .with_for_update()
    ):
        watch.lots_left -= 1
        holds.append(
            CheckHold(SPC_HOLD, f"ran on {tool.code} after SPC violation {watch.violation_id}")
        )
    return holds


async def _load_chambers(session: AsyncSession, tool: Equipment) -> None:
    if "chambers" not in tool.__dict__:
        await session.refresh(tool, ["chambers"])


async def _chamber(session: AsyncSession, tool: Equipment, name: str | None) -> Chamber | None:
    if name is None:
        return None
    return await session.scalar(
        select(Chamber).where(Chamber.equipment_id == tool.id, Chamber.name == name)
    )


async def acknowledge(
    session: AsyncSession,
    violation_id: int,
    *,
    comment: str,
    release_tool: bool,
    actor: str,
    clock: Clock,
) -> SpcViolation:
    """Close a violation (the OCAP closure). With ``release_tool``, the tool or chamber it put
    into UDT.SPC returns to standby, unless another open violation inhibited it too. The lot's
    hold is released on the lot, by the role its hold code names."""
    violation = await session.scalar(
        select(SpcViolation).where(SpcViolation.id == violation_id).with_for_update()
    )
    if violation is None:
        raise NotFound(f"violation {violation_id} does not exist", code="spc.violation_not_found")
    if violation.acknowledged_at is not None:
        raise Conflict(
            f"violation {violation_id} was acknowledged by {violation.acknowledged_by}",
            code="spc.already_acknowledged",
        )
    now = clock.now()
    violation.acknowledged_by, violation.acknowledged_at = actor, now
    violation.comment = comment
    # The closure ends the watch on the next lots too.
    for watch in await session.scalars(
        select(SpcToolWatch).where(
            SpcToolWatch.violation_id == violation.id, SpcToolWatch.lots_left > 0
        )
    ):
        watch.lots_left = 0
    await session.flush()
    if release_tool:
        result = await _release(session, violation, actor=actor, at=now)
        violation.actions = {**violation.actions, "release": result}
        await session.flush()
    return violation


def _inhibited(violation: SpcViolation) -> tuple[bool, bool]:
    """Whether the violation took its tool down, its chamber."""
    targets = {d.get("inhibited") for d in violation.actions.get("done", [])}
    return "tool" in targets, "chamber" in targets


async def _release(
    session: AsyncSession, violation: SpcViolation, *, actor: str, at: datetime
) -> str:
    tool = await session.get(Equipment, violation.equipment_id, with_for_update={"key_share": True})
    assert tool is not None  # the FK guarantees it
    on_tool, on_chamber = _inhibited(violation)
    others = list(
        await session.scalars(
            select(SpcViolation).where(
                SpcViolation.equipment_id == tool.id,
                SpcViolation.acknowledged_at.is_(None),
                SpcViolation.id != violation.id,
            )
        )
    )
    still = [o.id for o in others if any(_inhibited(o))]
    if still:
        return f"{tool.code} stays down: open violations {still} inhibited it too"
    chamber = await _chamber(session, tool, violation.chamber) if on_chamber else None
    if chamber is not None:
        await _load_chambers(session, tool)
    holder: Equipment | Chamber = chamber if chamber is not None else tool
    if not (on_tool or on_chamber) or holder.e10_substate != SPC_SUBSTATE:
        return f"nothing to release ({holder.e10_substate})"
    equipment_service.record_state(
        session,
        tool,
        E10State.SBY,
        "SBY.NO_PRODUCT",
        actor=actor,
        at=at,
        recorded_at=at,
        source=StateChangeSource.API,
        reason=f"SPC violation {violation.id} acknowledged",
        chamber=chamber,
    )
    name = tool.code if chamber is None else f"{tool.code}/{chamber.name}"
    return f"{name} back to SBY.NO_PRODUCT"


async def refuse_release_by_hand(
    session: AsyncSession, code: str, chamber_name: str | None, state: E10State
) -> None:
    """A tool (or chamber) that an open violation took down returns to production through the
    violation's acknowledgement, not a plain state change (which stays free for other states:
    repair, PM)."""
    if state not in UP_STATES:
        return
    tool = await session.scalar(select(Equipment).where(Equipment.code == code))
    if tool is None:
        return  # the equipment service answers tool.not_found
    holder: Equipment | Chamber | None = tool
    if chamber_name is not None:
        holder = await _chamber(session, tool, chamber_name)
    if holder is None or holder.e10_substate != SPC_SUBSTATE:
        return
    target = "tool" if chamber_name is None else "chamber"
    blocking = [
        v.id
        for v in await session.scalars(
            select(SpcViolation).where(
                SpcViolation.equipment_id == tool.id, SpcViolation.acknowledged_at.is_(None)
            )
        )
        if _inhibited(v)[target == "chamber"]
        and (chamber_name is None or v.chamber == chamber_name)
    ]
    if blocking:
        raise RuleViolation(
            "spc.tool_inhibited",
            f"{code} is out of production for SPC violations {blocking}: an engineer "
            "acknowledges them (release_tool) to return it",
            violations=blocking,
        )
