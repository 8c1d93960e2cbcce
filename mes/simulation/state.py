"""The mutable state of a simulation: lots, jobs and tools, with the snapshots the policy
decides on made from them (cached until the state they show changes)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import mes.dispatch.policy as policy
import mes.simulation.streams as streams
from mes.simulation.model import FAB_ID, Family, Route, Step, priority_class

IDLE, BUSY, BROKEN, MAINT = range(4)  # tool status, also the index of its time bucket
TIME_SPLIT = ("queue", "in_tool", "transport", "delay")  # where a lot's time goes (figures)
# Event kinds (the heap holds (time, seq, kind, a, b)).
RELEASE, ARRIVE, END, FREE, DELAY_END, WAKE, QTIME, SAMPLE, WARMUP = range(9)
DOWN, UP, PM_DUE, PM_END = range(9, 13)


class SimLot:
    __slots__ = (
        "arrivals",
        "delay_s",
        "due",
        "id",
        "index",
        "move_s",
        "name",
        "part",
        "prior",
        "priority",
        "queue_s",
        "released",
        "rng",
        "route",
        "snap",
        "started",
        "tool_s",
        "tools_at",
        "wafers",
        "waits",
        "windows",
    )

    def __init__(self, lot_id: int, name: str, part: str, prior: int, wafers: int) -> None:
        self.id = lot_id
        self.name = name
        self.part = part
        self.prior = prior
        self.priority = priority_class(prior)
        self.wafers = wafers
        self.route: Route
        self.index = 0
        self.released = 0.0
        self.due: float | None = None
        self.rng: random.Random
        self.snap: policy.LotSnapshot | None = None
        self.tools_at: dict[int, int] = {}  # route index -> tool id (dedication)
        self.windows: dict[int, float] = {}  # route index -> latest start (Q-time)
        self.arrivals = 0  # to tell a stale Q-time event from a current one
        # Where its cycle time went, in seconds (the four add up to done - released; plain
        # slots, not a list: they are added to at every start and end), and its queue time per
        # family (only for the lots the figures count: released after the warm-up).
        self.queue_s = self.tool_s = self.move_s = self.delay_s = 0.0
        self.started = 0.0  # when its running job started
        self.waits: list[float] | None = None


class TimeSplit:
    """Where the cycle time of the lots the figures count went, per lot type (part, priority):
    the sum of their queue, in-tool, transport and delay seconds (``TIME_SPLIT``) with the
    number of lots, and their queue time per family."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, int], list[float]] = {}  # [queue, tool, move, delay, lots]
        self.waits: dict[tuple[str, int], dict[int, float]] = {}  # family id -> queue seconds

    def add(self, lot: SimLot) -> None:
        key = (lot.part, lot.prior)
        totals = self.totals.setdefault(key, [0.0] * (len(TIME_SPLIT) + 1))
        for i, spent in enumerate((lot.queue_s, lot.tool_s, lot.move_s, lot.delay_s, 1)):
            totals[i] += spent
        waits = self.waits.setdefault(key, {})
        for fid, wait in enumerate(lot.waits or ()):
            if wait:
                waits[fid] = waits.get(fid, 0.0) + wait


class Job:
    __slots__ = ("end", "epoch", "free_at", "free_left", "left", "lots", "step", "tool")

    def __init__(self, tool: Tool, lots: list[SimLot], step: Step, end: float, free_at: float):
        self.tool = tool
        self.lots = lots
        self.step = step
        self.end = end
        self.free_at = free_at
        self.epoch = 0  # bumped when a breakdown suspends the job: its old events are void
        self.left = 0.0
        self.free_left = 0.0


class Tool:
    __slots__ = (
        "blocker",
        "buckets",
        "code",
        "downs_pending",
        "family",
        "id",
        "jobs",
        "min_run",
        "pm_due",
        "pm_pending",
        "rng_down",
        "rng_pm",
        "setup",
        "setup_s",
        "since",
        "since_setup",
        "snap",
        "snaps",
        "status",
        "wafers_left",
    )

    def __init__(
        self,
        tool_id: int,
        code: str,
        family: Family,
        t: float,
        seed: int,
        min_run: Mapping[str, int] | None = None,
    ) -> None:
        self.id = tool_id
        self.code = code
        self.family = family
        self.jobs: list[Job] = []
        self.blocker: Job | None = None  # the job the tool cannot take another lot beside
        self.setup: str | None = None
        self.since_setup = 0
        self.status = IDLE
        self.since = t
        self.buckets = [0.0, 0.0, 0.0, 0.0]  # seconds idle, busy, broken, in maintenance
        self.setup_s = 0.0
        self.pm_due = False
        self.pm_pending: list[int] = []  # PM calendars due (indexes into the family's)
        self.downs_pending: list[float] = []  # repair times of failures that hit a down tool
        self.wafers_left: dict[int, float] = {}  # wafer-count PM calendar -> wafers to go
        self.snap: policy.ToolSnapshot | None = None
        # A tool goes through few distinct states (E10 state, PM due, setup, lots of the setup
        # counted up to its minimum run), each snapshot is built once and taken again.
        self.snaps: dict[tuple[str, bool, str | None, int], policy.ToolSnapshot] = {}
        self.min_run = min_run or {}
        self.rng_down = streams.stream(seed, "down", code)
        self.rng_pm = streams.stream(seed, "pm", code)

    def snapshot(self) -> policy.ToolSnapshot:
        if self.snap is None:
            e10 = "UDT" if self.status in (BROKEN, MAINT) else ("PRD" if self.jobs else "SBY")
            # The lots since the setup change matter only below the setup's minimum run (the
            # setup rule's test), so the count stops there (and means nothing with no setup).
            setup = self.setup
            since = 0 if setup is None else min(self.since_setup, self.min_run.get(setup, 0))
            key = (e10, self.pm_due, setup, since)
            snap = self.snaps.get(key)
            if snap is None:
                snap = self.snaps[key] = policy.ToolSnapshot(
                    id=self.id,
                    code=self.code,
                    fab_id=FAB_ID,
                    tool_group_id=self.family.id,
                    e10_state=e10,
                    max_lots=self.family.max_lots,
                    pm_due=self.pm_due,
                    qualified=self.family.recipes,
                    current_setup=setup,
                    lots_since_setup=since,
                )
            self.snap = snap
        return self.snap


def join_queue(queue: dict[int, policy.LotSnapshot], snap: policy.LotSnapshot) -> None:
    """Add ``snap`` to a queue kept in (queued_at, code) order, as ``policy.InQueueOrder``
    promises. Lots mostly join at the tail (they arrive as time goes on); one that sorts before
    the tail (it came at the same instant with a lower code, or is a what-if lot with its own
    arrival time) takes its place and the lots after it are added again behind it."""
    behind: list[policy.LotSnapshot] = []
    while queue:
        last = next(reversed(queue.values()))
        if last.queued_at < snap.queued_at or (
            last.queued_at == snap.queued_at and last.code <= snap.code
        ):
            break
        behind.append(queue.popitem()[1])
    queue[snap.id] = snap
    for lot in reversed(behind):
        queue[lot.id] = lot


@dataclass(frozen=True)
class ToolStart:
    """A tool as it is when a what-if run starts."""

    setup: str | None = None
    lots_since_setup: int = 0
    down_for_s: float = 0.0  # broken: back up after this long
    pm_for_s: float = 0.0  # in (or due for) a PM of this length, started at once


@dataclass(frozen=True)
class InitialState:
    """Where a run starts from beyond the testbed's WIP table (what-if from the live fab):
    lots already running (on which tool, until when), when waiting lots reached their step,
    open Q-time windows, tool setups and downs. Keys are lot names and (family, tool number)."""

    running: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    entered_at: dict[str, float] = field(default_factory=dict)
    windows: dict[str, dict[int, float]] = field(default_factory=dict)  # step sequence -> latest
    tools: dict[tuple[str, int], ToolStart] = field(default_factory=dict)


class GroupLoads(Mapping[tuple[int, int], policy.GroupLoad]):
    """``Situation.loads`` of the simulator: a family's ``GroupLoad`` built when read, from its
    live queue, queued work, tools up and, where steps need setups, queued lots per setup and
    tools up per setup; kept until one of them changes (``changed``). A queue changes at every
    arrival and start; the policy reads a load far less often."""

    __slots__ = ("_built", "_queues", "_setup_queues", "_tools", "_up", "_work", "known")

    def __init__(
        self,
        queues: Mapping[int, Mapping[int, object]],
        work: Mapping[int, float],
        up: Mapping[int, int],
        known: set[int],
        setup_queues: Mapping[int, Mapping[str, Mapping[int, object]]] | None = None,
        tools: Mapping[int, list[Tool]] | None = None,
    ) -> None:
        self._queues, self._work, self._up = queues, work, up
        self.known = known  # the families with a load (tools, or lots queued once)
        # Only families whose steps need setups: the queue per setup (kept by the engine).
        self._setup_queues = setup_queues or {}
        self._tools = tools or {}
        self._built: dict[tuple[int, int], policy.GroupLoad] = {}

    def changed(self, fid: int) -> None:
        self.known.add(fid)
        self._built.pop((FAB_ID, fid), None)

    def get(self, key: tuple[int, int], default: object = None) -> policy.GroupLoad | None:  # type: ignore[override]
        found = self._built.get(key)
        if found is None:
            fab, fid = key
            if fab != FAB_ID or fid not in self.known:
                return default  # type: ignore[return-value]
            queued = len(self._queues[fid])
            work, up = max(0.0, self._work[fid]), self._up.get(fid, 0)
            setups = self._setup_queues.get(fid)
            if setups is None:
                found = policy.GroupLoad(queued, work, up)
            else:
                in_setup: dict[str, int] = {}
                for tool in self._tools.get(fid, ()):
                    if tool.setup is not None and tool.status not in (BROKEN, MAINT):
                        in_setup[tool.setup] = in_setup.get(tool.setup, 0) + 1
                waiting = {setup: len(lots) for setup, lots in setups.items() if lots}
                found = policy.GroupLoad(queued, work, up, 0, waiting, in_setup)
            self._built[key] = found
        return found

    def __getitem__(self, key: tuple[int, int]) -> policy.GroupLoad:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(FAB_ID, fid) for fid in sorted(self.known)])

    def __len__(self) -> int:
        return len(self.known)


@dataclass
class Completed:
    """A lot that finished its route (``kpi`` reads the figures from these)."""

    part: str
    prior: int
    released: float
    done: float
    due: float | None
    raw_s: float
    wip_lot: bool  # of the initial WIP (released before time zero, back-computed)


@dataclass
class Counters:
    """What a run counts (the report and the benchmarks print them)."""

    events: int = 0
    decisions: int = 0
    starts: int = 0
    setups: int = 0
    reworks: int = 0
    skipped: int = 0
    qtime_checked: int = 0
    qtime_violated: int = 0
    qtime_gated: int = 0  # decisions that left a lot out at the gate (gating on)
    breakdowns: int = 0
    pms: int = 0
    released: int = 0
