"""Lot rules: what may happen to a lot, decided on plain snapshots (no I/O).

The lot model follows common fab practice (SEMI leaves lot states to the MES): track-in and
track-out are the only transactions that move a lot along its route; holds stack and a lot waits
until all are released; sampling skips a step deterministically per lot; rework returns to an
earlier step a limited number of times; a Q-time window opened on leaving one step must be met
by starting a later one. The dispatcher and the fab simulator use the same functions.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mes.equipment.states import E10State, allows_production
from mes.errors import RuleViolation, refuses
from mes.lots.states import FINAL_STATES, MAX_WAFERS_PER_LOT, LotState, LotType
from mes.lots.type_rules import check_eng_tool


@dataclass(frozen=True)
class StepView:
    id: int
    sequence: int
    tool_group_id: int
    operation: str
    # The logical recipe; context resolution turns it into the recipe to run.
    recipe_name: str | None
    sampling_rate: float = 1.0
    rework_to_sequence: int | None = None
    rework_limit: int = 2
    qtime_to_sequence: int | None = None
    qtime_max_s: int | None = None
    qtime_min_s: int | None = None
    batch_max: int | None = None
    setup: str | None = None
    same_tool_as_sequence: int | None = None
    process_time_s: float = 0.0


@dataclass(frozen=True)
class LotView:
    code: str
    state: LotState
    step_id: int | None
    equipment_id: int | None
    wafer_count: int
    active_holds: int
    fab_id: int
    lot_type: LotType = LotType.PRODUCTION


@dataclass(frozen=True)
class ToolView:
    id: int
    code: str
    tool_group_id: int
    fab_id: int
    e10_state: E10State
    max_lots: int
    chambers_up: int | None = None  # None: not a cluster tool


# --- lot ids -------------------------------------------------------------------------------


def lot_code(year: int, number: int) -> str:
    """Business id of a started lot: ``L26-0001``."""
    return f"L{year % 100:02d}-{number:04d}"


# Lot.code is VARCHAR(32) and every API path names a lot in at most 32 characters.
MAX_LOT_CODE_LENGTH = 32


def child_code(parent: str, ordinal: int) -> str:
    """Business id of a split child: ``L26-0001.01``.

    Each generation adds three characters, so a deep enough chain of splits runs out of room:
    refused as a rule, rather than failing in the database (or creating an unaddressable lot).
    """
    code = f"{parent}.{ordinal:02d}"
    if len(code) > MAX_LOT_CODE_LENGTH:
        raise RuleViolation(
            "lot.code_too_long",
            f"a split child of {parent} would be named {code}, longer than "
            f"{MAX_LOT_CODE_LENGTH} characters; split an ancestor lot instead",
        )
    return code


def scribe_id(code: str, slot: int) -> str:
    return f"{code}-W{slot:02d}"


# Wafer.scribe_id is VARCHAR(32); a started lot's wafers are scribed ``<code>-W01`` …
MAX_SCRIBE_ID_LENGTH = 32
MAX_STARTED_LOT_CODE_LENGTH = MAX_SCRIBE_ID_LENGTH - len(scribe_id("", 1))


def bonus_scribe_ids(code: str, slot: int) -> Iterator[str]:
    """Candidate scribe ids, best first, for a wafer added to lot ``code`` in ``slot``.

    The slot's usual id, then that id with a ``B<n>`` suffix: the id is taken when the slot's
    earlier wafer left with a split child, or an earlier bonus wafer did. The caller takes the
    first one no wafer has. Each fits a scribe id; a long (split child's) code gives up its
    leading characters, keeping the part that tells the candidates apart.
    """
    base = scribe_id(code, slot)
    for n in itertools.count():
        candidate = base if n == 0 else f"{base}B{n}"
        yield candidate[-MAX_SCRIBE_ID_LENGTH:]


# --- state ---------------------------------------------------------------------------------


def require_active(lot: LotView) -> None:
    if lot.state in FINAL_STATES:
        raise RuleViolation("lot.finished", f"lot {lot.code} is {lot.state.value}")


def require_waiting(lot: LotView) -> None:
    """The lot waits at its step: not on hold, not running, not travelling, not finished."""
    require_active(lot)
    if lot.state == LotState.ON_HOLD:
        raise RuleViolation("lot.on_hold", f"lot {lot.code} is on hold")
    if lot.state == LotState.RUNNING:
        raise RuleViolation("lot.running", f"lot {lot.code} is running on a tool")
    if lot.state == LotState.IN_TRANSIT:
        raise RuleViolation("lot.in_transit", f"lot {lot.code} is travelling to another fab")


def state_with_holds(state: LotState, active_holds: int) -> LotState:
    """A waiting lot with holds is OnHold; an OnHold lot without holds waits again.

    A running lot keeps running: its holds take effect at track-out.
    """
    if state == LotState.WAITING and active_holds > 0:
        return LotState.ON_HOLD
    if state == LotState.ON_HOLD and active_holds == 0:
        return LotState.WAITING
    return state


def can_release(release_role: str, actor_roles: Iterable[str]) -> bool:
    return release_role in set(actor_roles)


# --- track-in ------------------------------------------------------------------------------


def check_track_in(
    lot: LotView,
    step: StepView,
    tool: ToolView,
    *,
    lots_on_tool: Sequence[tuple[int, str | None]],
    expected_step_sequence: int | None = None,
) -> None:
    """Refuse a track-in that breaks a rule; ``lots_on_tool`` are (step id, recipe) running."""
    require_waiting(lot)
    if expected_step_sequence is not None and expected_step_sequence != step.sequence:
        raise RuleViolation(
            "lot.wrong_step",
            f"lot {lot.code} is at step {step.sequence}, not {expected_step_sequence}",
        )
    if tool.fab_id != lot.fab_id:
        raise RuleViolation("tool.other_fab", f"tool {tool.code} is in another fab than the lot")
    if tool.tool_group_id != step.tool_group_id:
        raise RuleViolation(
            "tool.wrong_group", f"tool {tool.code} is not in the tool group of the lot's step"
        )
    # Chambers first: a cluster tool with every chamber down is down itself (E10 roll-up).
    if tool.chambers_up == 0:
        raise RuleViolation(
            "tool.no_chamber_available", f"no chamber of tool {tool.code} is up (SBY or PRD)"
        )
    if tool.e10_state == E10State.ENG:
        # Engineering time: engineering lots only (their signed release is checked once the
        # recipe to run is known: type_rules.check_engineering_run).
        check_eng_tool(lot.code, lot.lot_type, tool.code)
    elif not allows_production(tool.e10_state):
        raise RuleViolation(
            "tool.not_available", f"tool {tool.code} is {tool.e10_state.value}, not SBY or PRD"
        )
    if lots_on_tool:
        if step.batch_max is None:
            if len(lots_on_tool) >= tool.max_lots:
                raise RuleViolation("tool.full", f"tool {tool.code} is busy")
        # A batch: whether the lot may join (same recipe version, batch steps, setup) is
        # decided once its recipe version is known (type_rules.check_batch_join).
        elif len(lots_on_tool) >= min(step.batch_max, tool.max_lots):
            raise RuleViolation("tool.full", f"the batch on tool {tool.code} is full")


def check_dedication(step: StepView, tool: ToolView, dedicated_tool_id: int | None) -> None:
    """A dedicated step (lens matching) runs on the tool that ran the step it names."""
    if dedicated_tool_id is not None and dedicated_tool_id != tool.id:
        raise RuleViolation(
            "lot.dedicated_tool",
            f"step {step.sequence} must run on the tool that ran step "
            f"{step.same_tool_as_sequence}, not {tool.code}",
        )


def next_setup_count(current: str | None, count: int, wanted: str | None) -> tuple[str | None, int]:
    """The tool's setup and lots run in it after a track-in of a step needing ``wanted``."""
    if wanted is None:
        return current, count
    if wanted == current:
        return current, count + 1
    return wanted, 1


def qtime_expired(deadline: datetime, now: datetime) -> bool:
    return now > deadline


def opens_qtime_window(step: StepView) -> bool:
    return step.qtime_to_sequence is not None and step.qtime_max_s is not None


def closes_qtime_window(steps: Sequence[StepView], step: StepView) -> bool:
    """Whether a Q-time window can end at ``step``: only a step of the lot's own route version
    that names it opens one (a split or merge copies windows between lots of one version)."""
    return any(opens_qtime_window(s) and s.qtime_to_sequence == step.sequence for s in steps)


def qtime_warning_due(deadline: datetime, now: datetime, warn_s: float) -> bool:
    """A window not yet expired with at most ``warn_s`` seconds left (0: never warn)."""
    return (
        warn_s > 0
        and not qtime_expired(deadline, now)
        and (deadline - now).total_seconds() <= warn_s
    )


def chambers_to_run(runnable: Sequence[tuple[str, int]], *, asked: bool) -> list[str]:
    """Which chambers of a cluster tool run the lot, from those that can run the step (chamber,
    the recipe version it would run), in the order tried.

    Chambers the caller named must all run one version (a lot runs one recipe). Otherwise the
    MES picks: the version the most chambers may run (ties: the one the first chamber runs)
    and every chamber that runs it — a chamber qualified for another version, or none, is
    left out rather than given a recipe it was not qualified for.
    """
    if not runnable:
        return []
    versions = {version for _, version in runnable}
    if asked and len(versions) > 1:
        raise RuleViolation(
            "recipe.chamber_mismatch",
            "the chambers named would run different recipe versions: "
            + ", ".join(f"{chamber}: {version}" for chamber, version in runnable),
        )
    count = {v: sum(1 for _, w in runnable if w == v) for v in versions}
    first_of = {v: next(i for i, (_, w) in enumerate(runnable) if w == v) for v in versions}
    chosen = max(versions, key=lambda v: (count[v], -first_of[v]))
    return [chamber for chamber, version in runnable if version == chosen]


def qtime_too_early(earliest: datetime | None, now: datetime) -> bool:
    """A minimum Q-time not yet served: the closing step may not start."""
    return earliest is not None and now < earliest


def windows_made_meaningless(
    target_sequence: int, windows: Sequence[tuple[int, int, int]]
) -> list[int]:
    """Which open Q-time windows (id, from-step sequence, to-step sequence) no longer apply
    when a lot is sent to ``target_sequence`` by rework or a jump.

    Back to or before a window's start step: the lot runs that step again and the window opens
    anew when it leaves it. Beyond the window's end step: the lot will not start that step.
    A window whose end step is still ahead of (or at) the target is kept: the deadline holds.
    """
    return [
        wid
        for wid, from_seq, to_seq in windows
        if target_sequence <= from_seq or target_sequence > to_seq
    ]


# --- track-out -----------------------------------------------------------------------------


def sampled_in(lot_code_: str, sequence: int, rate: float) -> bool:
    """Does this lot run this step? Deterministic per (lot, step), uniform over lots."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(f"{lot_code_}:{sequence}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def next_step(
    steps: Sequence[StepView], current_sequence: int, lot_code_: str
) -> tuple[StepView | None, list[StepView]]:
    """The step the lot goes to after ``current_sequence``, and the steps it skips on the way."""
    skipped: list[StepView] = []
    for step in sorted(steps, key=lambda s: s.sequence):
        if step.sequence <= current_sequence:
            continue
        if sampled_in(lot_code_, step.sequence, step.sampling_rate):
            return step, skipped
        skipped.append(step)
    return None, skipped


@dataclass(frozen=True)
class ReworkDecision:
    target_sequence: int | None  # None: over the limit, hold instead
    count: int


def rework(step: StepView, reworks_so_far: int) -> ReworkDecision:
    if step.rework_to_sequence is None:
        raise RuleViolation(
            "lot.no_rework_step", f"step {step.sequence} has no rework step to return to"
        )
    count = reworks_so_far + 1
    if count > step.rework_limit:
        return ReworkDecision(None, count)
    return ReworkDecision(step.rework_to_sequence, count)


def partial_run_reason(
    processed: int, wafer_count: int, not_processed: Sequence[tuple[str, str]]
) -> str | None:
    """Why a track-out is a partial run (the lot must not pass the step), or None.

    A step is done for a lot only when every wafer was processed: a stopped job, a chamber lost
    mid-job or a result nobody could read all leave wafers that did not see the step."""
    if processed >= wafer_count and not not_processed:
        return None
    listed = ", ".join(f"{scribe} {state}" for scribe, state in not_processed[:10])
    more = f" (+{len(not_processed) - 10} more)" if len(not_processed) > 10 else ""
    return (
        f"partial run: {processed} of {wafer_count} wafers processed"
        + (f"; not processed: {listed}{more}" if listed else "")
    )[:255]


def wafer_outcomes(
    processed: int, wafer_count: int, not_processed: Sequence[tuple[str, str]]
) -> dict[str, int]:
    """How a run's wafers ended, counted by state, adding up to the lot's wafers: Processed,
    the states the tool reported for the others (Aborted, Skipped, ...), and any left without
    a state (a manual track-out with fewer processed) as ``not reported``."""
    counts: dict[str, int] = {"Processed": processed}
    for _scribe, state in not_processed:
        counts[state] = counts.get(state, 0) + 1
    unaccounted = wafer_count - processed - len(not_processed)
    if unaccounted > 0:
        counts["not reported"] = counts.get("not reported", 0) + unaccounted
    return counts


def check_wafers_processed(processed: int, wafer_count: int) -> None:
    if not 0 <= processed <= wafer_count:
        raise RuleViolation(
            "lot.wafer_count_mismatch",
            f"{processed} wafers processed but the lot holds {wafer_count}",
            status=422,
        )


# --- split, merge, scrap, bonus ------------------------------------------------------------


def check_split(lot: LotView, chosen: int, available: int) -> None:
    require_active(lot)
    if lot.state in (LotState.RUNNING, LotState.IN_TRANSIT):
        raise RuleViolation("lot.not_splittable", f"lot {lot.code} is {lot.state.value}")
    if chosen < 1:
        raise RuleViolation("lot.split_empty", "a split child needs at least one wafer", status=422)
    if chosen >= available:
        raise RuleViolation(
            "lot.split_all", "a split must leave at least one wafer in the parent", status=422
        )


def check_bonus(lot: LotView) -> None:
    """Wafers join a lot only while it is at a step: a lot on a tool was counted, charged and
    given its job's slot map at track-in, which added wafers would contradict."""
    require_active(lot)
    if lot.state == LotState.RUNNING:
        raise RuleViolation("lot.running", f"lot {lot.code} is running on a tool")
    if lot.state == LotState.IN_TRANSIT:
        raise RuleViolation("lot.in_transit", f"lot {lot.code} is travelling to another fab")


@dataclass(frozen=True)
class MergeView:
    lot: LotView
    product_id: int
    route_version_id: int


def check_merge(target: MergeView, source: MergeView) -> None:
    if target.lot.code == source.lot.code:
        raise RuleViolation("lot.merge_self", "a lot cannot merge with itself", status=422)
    for view in (target, source):
        require_active(view.lot)
        if view.lot.state in (LotState.RUNNING, LotState.IN_TRANSIT):
            raise RuleViolation(
                "lot.not_mergeable", f"lot {view.lot.code} is {view.lot.state.value}"
            )
    same = (
        target.lot.lot_type == source.lot.lot_type
        and target.product_id == source.product_id
        and target.route_version_id == source.route_version_id
        and target.lot.step_id == source.lot.step_id
        and target.lot.state == source.lot.state
        and target.lot.fab_id == source.lot.fab_id
    )
    if not same:
        raise RuleViolation(
            "lot.merge_mismatch",
            "merged lots need the same lot type, product, route version, step, state and fab",
        )
    if target.lot.wafer_count + source.lot.wafer_count > MAX_WAFERS_PER_LOT:
        raise RuleViolation(
            "lot.too_many_wafers", f"a lot holds at most {MAX_WAFERS_PER_LOT} wafers"
        )


def free_slots(taken: Iterable[int], count: int) -> list[int]:
    """The lowest ``count`` free slots of a 25-slot carrier."""
    used = set(taken)
    free = [s for s in range(1, MAX_WAFERS_PER_LOT + 1) if s not in used]
    if len(free) < count:
        raise RuleViolation(
            "lot.too_many_wafers", f"a lot holds at most {MAX_WAFERS_PER_LOT} wafers"
        )
    return free[:count]


SCRAP_CODES: Mapping[str, str] = {
    "BROKEN": "wafer broken or chipped",
    "MISPROCESSED": "processed with the wrong recipe or parameters",
    "PARTICLES": "particle contamination beyond rework",
    "PARAMETRIC": "electrical or metrology values out of specification",
    "LOST": "wafer missing from the carrier",
    "OTHER": "other reason (see comment)",
}

BONUS_CODES: Mapping[str, str] = {
    "FOUND": "wafer found that was recorded as missing or scrapped",
    "RECOUNT": "physical count differs from the system",
    "ADD_MONITOR": "monitor wafer added to the lot",
}


@refuses("lot.unknown_scrap_code", "lot.unknown_bonus_code", status=422)
def check_reason(code: str, table: Mapping[str, str], what: str) -> None:
    if code not in table:
        raise RuleViolation(
            f"lot.unknown_{what}_code",
            f"unknown {what} code {code!r}; known: {sorted(table)}",
            status=422,
        )


# --- transfers -----------------------------------------------------------------------------


def check_ship(
    lot: LotView,
    to_fab_id: int,
    *,
    open_future_actions: int,
    open_qtime_deadlines: Sequence[datetime],
    now: datetime,
    transit_s: int,
) -> None:
    require_waiting(lot)
    if to_fab_id == lot.fab_id:
        raise RuleViolation("lot.same_fab", "the lot is already in that fab", status=422)
    if open_future_actions:
        raise RuleViolation(
            "lot.future_action_open", "cancel or fulfil the lot's future actions before shipping"
        )
    for deadline in open_qtime_deadlines:
        if deadline.timestamp() - now.timestamp() < transit_s:
            raise RuleViolation(
                "lot.qtime_at_risk", "an open Q-time window would expire during the transfer"
            )


# --- history -------------------------------------------------------------------------------

SNAPSHOT_FIELDS = (
    "state",
    "step_id",
    "equipment_id",
    "wafer_count",
    "fab_id",
    "priority_class",
    "active_holds",
)


def fold(events: Iterable[tuple[Mapping[str, Any] | None, Mapping[str, Any]]]) -> dict[str, Any]:
    """Replay (before, after) snapshots; each must start where the previous one ended.

    Returns the state the history arrives at, to compare with the lot row: a change made
    without its event (or an event that lies) shows up as a mismatch.
    """
    current: dict[str, Any] = {}
    for index, (before, after) in enumerate(events):
        if index and before is not None and dict(before) != current:
            raise ValueError(f"event {index} starts from {dict(before)}, history says {current}")
        current = {k: after[k] for k in SNAPSHOT_FIELDS}
    return current
