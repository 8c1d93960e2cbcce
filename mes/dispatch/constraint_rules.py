"""Hard constraints of dispatching: a lot is never offered to a tool that cannot legally run
it. Each failed constraint gives an ``Exclusion`` with a stable code (``lot.on_hold``,
``tool.not_qualified``, ``tool.pm_due`` …), the same codes track-in answers with. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from mes.dispatch.policy_inputs import (
    ONLINE_REMOTE,
    UP_FOR_PRODUCTION,
    WAITING,
    LotSnapshot,
    Situation,
    ToolSnapshot,
)
from mes.lots.qtime_gate_rules import gate_chain


@dataclass(frozen=True, slots=True)
class Exclusion:
    code: str
    detail: str


def lot_exclusion(lot: LotSnapshot) -> Exclusion | None:
    """Why the lot cannot be dispatched anywhere now (None: it waits for a tool)."""
    if lot.holds > 0 or lot.state == "OnHold":
        return Exclusion("lot.on_hold", f"lot {lot.code} is on hold")
    if lot.state != WAITING:
        code = {"Running": "lot.running", "InTransit": "lot.in_transit"}.get(
            lot.state, "lot.finished"
        )
        if lot.arrives_at is not None:
            eta = datetime.fromtimestamp(lot.arrives_at, UTC).isoformat(timespec="minutes")
            return Exclusion(
                code, f"lot {lot.code} arrives about {eta}; it starts only once received"
            )
        return Exclusion(code, f"lot {lot.code} is {lot.state}")
    return None


def gate_exclusion(lot: LotSnapshot, situation: Situation) -> Exclusion | None:
    """Q-time gating (``mes.lots.qtime_gate_rules``): a lot at the first step of a Q-time chain
    is not started when a closing tool group of the chain could not take it in time."""
    if not lot.step.qtime_chain or lot.qtime_deadline is not None:
        # Not the first step of a chain: the lot is inside a window closing here, committed
        # since the chain's first step; held back here it could only miss that window.
        return None
    downstream = {
        group: found for (fab, group), found in situation.downstream.items() if fab == lot.fab_id
    }
    verdict = gate_chain(lot.step.qtime_chain, downstream)
    if verdict is None or verdict.ok:
        return None
    return Exclusion("lot.qtime_gated", verdict.why)


def tool_exclusion(tool: ToolSnapshot, *, capacity: bool = True) -> Exclusion | None:
    """Why the tool can take no lot now. ``capacity=False`` ignores that it is busy or not in
    remote control (where-next: the lot can wait for it), not that it is down."""
    if tool.chambers_up == 0:
        return Exclusion("tool.no_chamber_available", f"no chamber of {tool.code} is up")
    if tool.e10_state not in UP_FOR_PRODUCTION:
        return Exclusion("tool.not_available", f"{tool.code} is {tool.e10_state}, not SBY/PRD")
    if tool.pm_due:
        return Exclusion("tool.pm_due", f"{tool.code} is due for preventive maintenance")
    if capacity and tool.control_state != ONLINE_REMOTE:
        return Exclusion("tool.not_remote", f"{tool.code} is {tool.control_state}")
    return None


def pair_exclusion(
    lot: LotSnapshot,
    tool: ToolSnapshot,
    situation: Situation,
    *,
    capacity: bool = True,
    same_fab: bool = True,
    start_in_s: float = 0.0,
) -> Exclusion | None:
    """Why this tool may not run this lot (None: it may). ``start_in_s``: how long before the
    lot could start there (transfer, queue), checked against its Q-time deadline."""
    step = lot.step
    if same_fab and tool.fab_id != lot.fab_id:
        return Exclusion("tool.other_fab", f"{tool.code} is in another fab than lot {lot.code}")
    if tool.tool_group_id != step.tool_group_id:
        return Exclusion("tool.wrong_group", f"{tool.code} is not in the step's tool group")
    recipe = lot.recipe_on(tool.id)
    if recipe is None or recipe not in tool.qualified:
        return Exclusion(
            "tool.not_qualified", f"{tool.code} is not qualified for recipe {recipe or '(none)'}"
        )
    if lot.dedicated_tool_id is not None and lot.dedicated_tool_id != tool.id:
        return Exclusion(
            "lot.dedicated_tool",
            f"step {step.sequence} must run on the tool that ran step {step.same_tool_as_sequence}",
        )
    if step.reticle is not None:
        if step.reticle not in tool.reticles:
            return Exclusion(
                "reticle.not_at_tool", f"no available copy of {step.reticle} at {tool.code}"
            )
        left = tool.reticles[step.reticle]
        if left is not None and left < lot.wafer_count:
            return Exclusion(
                "reticle.over_limit",
                f"{step.reticle} at {tool.code} has {left} uses left, lot needs {lot.wafer_count}",
            )
    if capacity and tool.running:
        if step.batch_max is None:
            if len(tool.running) >= tool.max_lots:
                return Exclusion("tool.full", f"{tool.code} is busy")
            if tool.batch_busy:
                # Room for lots, but not for a second job: the tool would refuse it as busy.
                return Exclusion("tool.full", f"{tool.code} runs a job; it takes the next after")
        else:
            if tool.job_started:
                return Exclusion(
                    "tool.batch_started", f"the batch on {tool.code} has started; it takes no more"
                )
            # Lots of other products, routes or steps join when they run the same recipe (and
            # need no setup change under the running batch); track-in checks the version.
            if any(r != recipe for _s, r in tool.running) or (
                step.setup is not None and step.setup != tool.current_setup
            ):
                return Exclusion(
                    "tool.batch_mismatch", f"{tool.code} runs a batch of another recipe or setup"
                )
            if len(tool.running) >= min(step.batch_max, tool.max_lots):
                return Exclusion("tool.full", f"the batch on {tool.code} is full")
    if lot.qtime_earliest is not None:
        start = situation.now + start_in_s
        if start < lot.qtime_earliest:
            return Exclusion(
                "lot.qtime_min_not_reached",
                f"its minimum Q-time ends {lot.qtime_earliest - situation.now:.0f} s from now",
            )
    if lot.qtime_deadline is not None:
        start = situation.now + start_in_s + situation.setup_time(tool.current_setup, step.setup)
        if start > lot.qtime_deadline:
            return Exclusion(
                "lot.qtime_at_risk",
                f"its Q-time window closes {lot.qtime_deadline - situation.now:.0f} s from now, "
                f"before it could start on {tool.code} ({start - situation.now:.0f} s)",
            )
    return None


def with_committed(situation: Situation, lots: Iterable[LotSnapshot]) -> Situation:
    """The situation after these lots started: those at a window's opening step are now
    committed to it, so the gate counts them for the lots decided after them (same cycle)."""
    added: dict[tuple[int, int], int] = {}
    for lot in lots:
        # Committed to the window the step opens (the later ones of the chain count when the
        # lot reaches them: the database counts open windows and lots running at their step).
        if lot.step.qtime_chain:
            key = (lot.fab_id, lot.step.qtime_chain[0].to_group_id)
            if key in situation.downstream:
                added[key] = added.get(key, 0) + 1
    if not added:
        return situation
    downstream = dict(situation.downstream)
    for key, n in added.items():
        downstream[key] = replace(downstream[key], committed=downstream[key].committed + n)
    return replace(situation, downstream=downstream)
