"""What the dispatching policy decides on: plain frozen snapshots of a lot, its step, a tool,
and the situation around them (loads per tool group, setup and transfer times, the time).

Pure (standard library only): the database read (``mes.dispatch.snapshots``) and the fab
simulator fill them in alike. Times are float seconds since the epoch (UTC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from mes.lots.qtime_gate_rules import Chain, Downstream

WAITING = "Waiting"
UP_FOR_PRODUCTION = frozenset({"SBY", "PRD"})
ONLINE_REMOTE = "OnlineRemote"
PRIORITY_CLASSES = ("normal", "hot", "super_hot")
# mes.lots.states.LotType values (the simulator's lots are production lots).
LOT_TYPES = ("production", "engineering", "monitor", "dummy", "rework")


@dataclass(frozen=True, slots=True)
class StepSnapshot:
    """The step a lot waits at (and what the rules need to know of the route ahead)."""

    id: int
    sequence: int
    tool_group_id: int
    operation: str
    recipe: str | None  # logical recipe; ``LotSnapshot.recipe_by_tool`` holds context overrides
    process_time_s: float = 0.0
    batch_min: int | None = None  # lots; None: not a batch step
    batch_max: int | None = None
    setup: str | None = None  # the setup the tool must be in to run the step
    reticle: str | None = None  # design of the reticle the recipe needs
    # Lens / tool dedication: the step must run on the tool that ran this earlier sequence.
    same_tool_as_sequence: int | None = None
    # The Q-time windows a start here commits the lot to (this step opens the first; its closing
    # step may open the next, a chain): the gate's input. Empty: the step opens no window.
    qtime_chain: tuple[Chain, ...] = ()


@dataclass(frozen=True, slots=True)
class LotSnapshot:
    id: int
    code: str
    fab_id: int
    state: str  # LotState value
    holds: int
    priority: str  # PriorityClass value
    wafer_count: int
    step: StepSnapshot
    queued_at: float  # arrival at the current step
    due_at: float | None = None
    # Raw process time of this and every later step (SRPT, critical ratio, slack).
    remaining_process_s: float = 0.0
    next_tool_group_id: int | None = None
    # The earliest open Q-time deadline the current step must meet (start before it).
    qtime_deadline: float | None = None
    # The latest minimum Q-time of those windows (the step may not start before it).
    qtime_earliest: float | None = None
    # The tool the dedication names (from the lot's history), if the step is dedicated.
    dedicated_tool_id: int | None = None
    # Context rules that send the logical recipe to another recipe on some tools.
    recipe_by_tool: Mapping[int, str] | None = None
    lot_type: str = "production"  # LotType value
    # A lot travelling to this fab (state InTransit): when it is expected to arrive.
    arrives_at: float | None = None

    def recipe_on(self, tool_id: int) -> str | None:
        if self.recipe_by_tool is not None:
            found = self.recipe_by_tool.get(tool_id)
            if found is not None:
                return found
        return self.step.recipe


@dataclass(frozen=True, slots=True)
class ToolSnapshot:
    id: int
    code: str
    fab_id: int
    tool_group_id: int
    e10_state: str
    control_state: str = ONLINE_REMOTE
    area_id: int | None = None
    chambers_up: int | None = None  # None: not a cluster tool
    max_lots: int = 1
    # (step id, recipe) of each lot on the tool now. A batch takes lots of any step whose
    # recipe is the same (one recipe version on one tool: the newest approved and qualified).
    running: tuple[tuple[int, str | None], ...] = ()
    # Seconds until the tool is free again (remaining time of what runs on it).
    busy_for_s: float = 0.0
    # A job order is out for the tool (requested, sent, running or paused): a batch that has
    # started takes no more lots; offering one only earns a "busy" refusal from the tool.
    job_started: bool = False
    # A batch tool (wet bench, furnace) runs one job at a time, and this one has a job order
    # out (requested, sent, running or paused): it takes no other job until that one ends.
    batch_busy: bool = False
    pm_due: bool = False
    # Recipes with an approved version standing-qualified on the tool (or a chamber of it).
    qualified: frozenset[str] = frozenset()
    # Reticle design → uses left (None: no limit) of available copies at the tool.
    reticles: Mapping[str, int | None] = field(default_factory=dict)
    current_setup: str | None = None
    lots_since_setup: int = 0


@dataclass(frozen=True, slots=True)
class GroupLoad:
    """Work waiting for a tool group in one fab, and the tools up to do it."""

    queued_lots: int = 0
    queued_work_s: float = 0.0
    tools_up: int = 0
    # Of the queued lots, those still on their way from another fab (not received yet).
    arriving_lots: int = 0
    # Queued lots per setup their step needs, and tools up per setup they are in: which
    # setup a change should open a run of (``setup_demand``). Empty where nothing needs one.
    queued_by_setup: Mapping[str, int] = field(default_factory=dict)
    tools_by_setup: Mapping[str, int] = field(default_factory=dict)

    @property
    def workload_s(self) -> float:
        """Hours-of-work proxy: queued work per tool up (infinite with no tool up)."""
        if self.tools_up <= 0:
            return math.inf if self.queued_lots else 0.0
        return self.queued_work_s / self.tools_up


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything beside one lot and one tool that a decision looks at."""

    now: float
    # (fab id, tool group id) → load; WIP balancing looks at the next step's group.
    loads: Mapping[tuple[int, int], GroupLoad] = field(default_factory=dict)
    # (from setup or None for "any", to setup) → seconds.
    setup_times: Mapping[tuple[str | None, str], float] = field(default_factory=dict)
    # setup → lots to run after changing over to it before changing again.
    min_run: Mapping[str, int] = field(default_factory=dict)
    # (from fab, to fab) → seconds of transfer.
    transfer_s: Mapping[tuple[int, int], float] = field(default_factory=dict)
    default_transfer_s: float = 4 * 3600.0
    # (fab id, tool group id) → the closing group of Q-time windows as the gate sees it. A lot
    # whose window closes at a group missing here is not gated (gating off, or no data).
    downstream: Mapping[tuple[int, int], Downstream] = field(default_factory=dict)

    def setup_time(self, current: str | None, wanted: str | None) -> float:
        if wanted is None or current == wanted:
            return 0.0
        found = self.setup_times.get((current, wanted))
        if found is None:
            found = self.setup_times.get((None, wanted), 0.0)
        return found

    def transfer(self, from_fab: int, to_fab: int) -> float:
        if from_fab == to_fab:
            return 0.0
        return self.transfer_s.get((from_fab, to_fab), self.default_transfer_s)
