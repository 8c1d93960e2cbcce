"""The event engine: lots follow their routes over tool families, tools run jobs (a lot, a
batch, or cascading lots), and every time a tool is free with lots waiting for its family the
production policy decides what it runs next (``policy.decide``, which is ``choose_starts`` of
``rank_lots`` as the automatic dispatcher does each cycle: mes/simulation/dispatching.py).

Events sit in one heap ordered by (time, sequence number), so a run is a pure function of the
model, the rule set and the seed. Snapshots are incremental: a lot's ``LotSnapshot`` is made
when it arrives at a step (nothing in it changes while it waits, except an expired Q-time
deadline, which replaces it), a tool's ``ToolSnapshot`` when its setup or state changes.

Simplifications (docs/simulation.md): a ``Delay`` family is a pure delay (no queue); transport
applies between two ``Fab`` families; a lot released or leaving a delay travels nowhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import mes.dispatch.policy as policy
import mes.simulation.streams as streams
from mes.simulation.dispatching import Dispatching
from mes.simulation.gating import Commitments
from mes.simulation.maintenance import Maintenance
from mes.simulation.model import FAB_ID, FabModel, Step
from mes.simulation.rulesets import SimRules
from mes.simulation.state import (
    ARRIVE,
    BUSY,
    DELAY_END,
    END,
    FREE,
    IDLE,
    QTIME,
    RELEASE,
    SAMPLE,
    WARMUP,
    Completed,
    Counters,
    GroupLoads,
    InitialState,
    Job,
    SimLot,
    TimeSplit,
    Tool,
    join_queue,
)

DAY = 86400.0


@dataclass
class Simulation:
    """One run: a model, one rule set, one seed, ``days`` of simulated time."""

    model: FabModel
    rules: SimRules
    seed: int = 1
    days: float = 30.0
    warmup_days: float = 0.0
    sample_every_s: float = DAY / 4
    progress: Callable[[float], None] | None = None
    initial: InitialState | None = None
    # Q-time gating: a lot is not started at a window's opening step when the closing family
    # could not take it in time (mes.lots.qtime_gate_rules), as the production dispatcher does.
    qtime_gating: bool = False
    now: float = 0.0
    counters: Counters = field(default_factory=Counters)
    completed: list[Completed] = field(default_factory=list)
    wip_samples: list[tuple[float, int]] = field(default_factory=list)
    # (part, priority) -> lots released at or after the warm-up
    released_after_warmup: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = self.model
        self.now = m.t0
        self.end = m.t0 + self.days * DAY
        self.warmup_at = m.t0 + self.warmup_days * DAY
        self._heap: list[tuple[float, int, int, object, object]] = []
        self._seq = 0
        self._next_lot = 0
        self.lots: dict[int, SimLot] = {}
        self.tools: list[Tool] = []
        self.tools_of: dict[int, list[Tool]] = {}
        for fam in m.families:
            if fam.is_delay:
                continue
            group = [
                Tool(
                    len(self.tools) + n + 1,
                    f"{fam.name}-{n + 1:02d}",
                    fam,
                    m.t0,
                    self.seed,
                    m.min_run,
                )
                for n in range(fam.count)
            ]
            self.tools.extend(group)
            self.tools_of[fam.id] = group
        self.family = {f.id: f for f in m.families}
        self.queues: dict[int, dict[int, policy.LotSnapshot]] = {f.id: {} for f in m.families}
        self.queue_work: dict[int, float] = dict.fromkeys(self.queues, 0.0)
        self.queue_area: dict[int, float] = dict.fromkeys(self.queues, 0.0)
        self._queue_since: dict[int, float] = dict.fromkeys(self.queues, m.t0)
        self.up: dict[int, int] = {fid: len(ts) for fid, ts in self.tools_of.items()}
        # Each queue is kept in (queued_at, code) order (``join_queue``): a FIFO decision reads
        # it from the head. The queue per setup, for the families whose steps need one (the
        # setup rules count them; a tool in its minimum run reads its setup's lots alone).
        self.setup_queues: dict[int, dict[str, dict[int, policy.LotSnapshot]]] = {
            step.family: {}
            for route in m.routes.values()
            for step in route.steps
            if step.snapshot.setup is not None
        }
        self.loads = GroupLoads(
            self.queues, self.queue_work, self.up, set(self.up), self.setup_queues, self.tools_of
        )
        self._entered_at: float | None = None  # a what-if lot's own arrival at its step
        self.base: dict[int, tuple[list[float], float]] = {}  # tool -> buckets at the warm-up
        self.base_queue: dict[int, float] = {}
        self._transport = (m.testbed.transport_s or 0.0, m.testbed.transport_spread_s)
        self.time_split = TimeSplit()
        self._family_slots = max(self.family) + 1  # SimLot.waits is indexed by family id
        self.handlers: dict[int, Callable[[object, object], None]] = {
            RELEASE: self._on_release,
            ARRIVE: self._on_arrive,
            END: self._on_end,
            FREE: self._on_free,
            DELAY_END: self._on_delay_end,
            QTIME: self._on_qtime,
            SAMPLE: self._on_sample,
            WARMUP: self._on_warmup,
        }
        self.maintenance = Maintenance(self)
        self.dispatching = Dispatching(self)
        self.commitments = Commitments(m.routes, self.dispatching.rule_sets)

    # --- the event loop --------------------------------------------------------------------

    def schedule(self, t: float, kind: int, a: object = None, b: object = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b))

    def run(self) -> Simulation:
        self._start()
        heap, handlers, dispatching = self._heap, self.handlers, self.dispatching
        pop, end, progress = heapq.heappop, self.end, self.progress
        next_report = self.now + DAY if progress is not None else float("inf")
        events = 0
        while heap and heap[0][0] <= end:
            t, _seq, kind, a, b = pop(heap)
            self.now = t
            events += 1
            handlers[kind](a, b)
            if dispatching.dirty and (not heap or heap[0][0] > t):
                dispatching.cycle()
            if t >= next_report:
                next_report += DAY
                assert progress is not None
                progress((t - self.model.t0) / DAY)
        self.counters.events += events
        self.now = self.end
        for tool in self.tools:
            self.account(tool, tool.status)
        self._queue_accounts()
        return self

    def _start(self) -> None:
        m = self.model
        self.maintenance.start()
        initial = self.initial or InitialState()
        running: dict[tuple[str, int], list[tuple[SimLot, float]]] = {}
        index_of = {part: {s.seq: s.index for s in route.steps} for part, route in m.routes.items()}
        for lot in m.testbed.wip:
            by_seq = index_of[lot.part]
            index = by_seq.get(lot.step or 0, 0)
            sim = self._new_lot(lot.name, lot.part, lot.priority, lot.pieces)
            sim.due = lot.due.timestamp() if lot.due else None
            rel = m.relative_due_s.get((lot.part, lot.priority))
            sim.released = sim.due - rel if sim.due is not None and rel is not None else m.t0
            for seq, deadline in initial.windows.get(lot.name, {}).items():
                if seq in by_seq:
                    sim.windows[by_seq[seq]] = deadline
            if lot.name in initial.running:
                fam, n, until = initial.running[lot.name]
                sim.index = index
                running.setdefault((fam, n), []).append((sim, until))
            else:
                self._entered_at = initial.entered_at.get(lot.name)
                self._enter(sim, index)
        self._entered_at = None
        self._start_tools(initial, running)
        for n, order in enumerate(m.testbed.orders):
            self.schedule(max(m.t0, order.start.timestamp()), RELEASE, n, 0)
        self.schedule(m.t0, SAMPLE)
        if self.warmup_at > m.t0:
            self.schedule(self.warmup_at, WARMUP)

    def _start_tools(
        self, initial: InitialState, running: dict[tuple[str, int], list[tuple[SimLot, float]]]
    ) -> None:
        """Setups, downs and running jobs of a what-if start."""
        for tool in self.tools:
            key = (tool.family.name, int(tool.code.rsplit("-", 1)[1]))
            start = initial.tools.get(key)
            if start is not None:
                tool.setup, tool.since_setup = start.setup, start.lots_since_setup
            on_tool = running.pop(key, [])
            if on_tool:
                lots = [lot for lot, _ in on_tool]
                end = max(self.now, max(until for _, until in on_tool))
                job = Job(tool, lots, lots[0].route.steps[lots[0].index], end, end)
                for lot in lots:
                    lot.tools_at[lot.index] = tool.id
                tool.jobs.append(job)
                tool.blocker = job
                self.account(tool, BUSY)
                self.schedule(end, END, job, 0)
            if start is not None and (start.down_for_s > 0 or start.pm_for_s > 0):
                self.maintenance.stop(tool, start.down_for_s, start.pm_for_s)
        for left in running.values():  # on a tool the model does not know: they just finish
            for lot, until in left:
                self.schedule(max(self.now, until), DELAY_END, lot, lot.index)

    def _new_lot(self, name: str, part: str, prior: int, wafers: int) -> SimLot:
        self._next_lot += 1
        lot = SimLot(self._next_lot, name, part, prior, wafers)
        lot.route = self.model.routes[part]
        lot.rng = streams.stream(self.seed, "lot", name)
        lot.started = self.now
        self.lots[lot.id] = lot
        return lot

    # --- lots ------------------------------------------------------------------------------

    def _on_release(self, n: object, k: object) -> None:
        assert isinstance(n, int)
        assert isinstance(k, int)
        order = self.model.testbed.orders[n]
        lot = self._new_lot(f"{order.name}_{k + 1}", order.part, order.priority, order.pieces)
        lot.released = self.now
        if order.due is not None:
            lot.due = self.now + (order.due - order.start).total_seconds()
        self.counters.released += 1
        if self.now >= self.warmup_at:
            key = (lot.part, lot.prior)
            self.released_after_warmup[key] = self.released_after_warmup.get(key, 0) + 1
            lot.waits = [0.0] * self._family_slots
        if order.repeat_s and (order.repetitions is None or k + 1 < order.repetitions):
            self.schedule(self.now + order.repeat_s, RELEASE, n, k + 1)
        self._advance(lot, -1, travel=False)

    def _advance(self, lot: SimLot, after: int, *, travel: bool, to: int | None = None) -> None:
        """Move ``lot`` on from route index ``after`` (sampling may skip steps), or to ``to``."""
        steps = lot.route.steps
        i = after + 1 if to is None else to
        if to is None:
            while (
                i < len(steps) and steps[i].sample_p < 1.0 and lot.rng.random() >= steps[i].sample_p
            ):
                self.counters.skipped += 1
                i += 1
        if i >= len(steps):
            self._complete(lot)
            return
        step = steps[i]
        if travel and not step.is_delay and self._transport[0] > 0:
            lot.index = i
            t = streams.draw(lot.rng, "uniform", *self._transport)
            lot.move_s += t
            self.schedule(self.now + t, ARRIVE, lot, i)
        else:
            self._enter(lot, i)

    def _on_arrive(self, lot: object, i: object) -> None:
        assert isinstance(lot, SimLot)
        assert isinstance(i, int)
        self._enter(lot, i)

    def _enter(self, lot: SimLot, i: int) -> None:
        lot.index = i
        step = lot.route.steps[i]
        if step.is_delay:
            t = self._process_time(step, [lot])
            lot.delay_s += t
            self.schedule(self.now + t, DELAY_END, lot, i)
            return
        lot.arrivals += 1
        deadline = lot.windows.get(i)
        lot.snap = self._lot_snapshot(lot, step, deadline)
        self._queue_change(step.family, +1, step.snapshot.process_time_s)
        join_queue(self.queues[step.family], lot.snap)
        setup = step.snapshot.setup
        if setup is not None:
            join_queue(self.setup_queues[step.family].setdefault(setup, {}), lot.snap)
        if deadline is not None and deadline > self.now:
            self.schedule(deadline, QTIME, lot, lot.arrivals)
        self.dispatch(step.family)

    def _lot_snapshot(self, lot: SimLot, step: Step, deadline: float | None) -> policy.LotSnapshot:
        dedicated = None
        if step.dedicated_from is not None:
            dedicated = lot.tools_at.get(step.dedicated_from)
        return policy.LotSnapshot(
            id=lot.id,
            code=lot.name,
            fab_id=FAB_ID,
            state=policy.WAITING,
            holds=0,
            priority=lot.priority,
            wafer_count=lot.wafers,
            step=step.snapshot,
            queued_at=self.now if self._entered_at is None else self._entered_at,
            due_at=lot.due,
            remaining_process_s=step.remaining_s,
            next_tool_group_id=step.next_group,
            qtime_deadline=deadline if deadline is not None and deadline > self.now else None,
            dedicated_tool_id=dedicated,
        )

    def _on_qtime(self, lot: object, arrivals: object) -> None:
        # The window closed while the lot waited: production would hold it for disposition;
        # here it goes on (the violation is counted at its start) and is offered again.
        assert isinstance(lot, SimLot)
        snap = lot.snap
        if lot.arrivals != arrivals or snap is None or snap.qtime_deadline is None:
            return
        fid = lot.route.steps[lot.index].family
        queue = self.queues[fid]
        if lot.id in queue:
            lot.snap = queue[lot.id] = replace(snap, qtime_deadline=None)
            if snap.step.setup is not None:
                self.setup_queues[fid][snap.step.setup][lot.id] = lot.snap
            self.dispatch(fid)

    def _on_delay_end(self, lot: object, i: object) -> None:
        assert isinstance(lot, SimLot)
        assert isinstance(i, int)
        self._advance(lot, i, travel=False)

    def _complete(self, lot: SimLot) -> None:
        del self.lots[lot.id]
        if lot.waits is not None:  # released after the warm-up: the figures count it
            self.time_split.add(lot)
        if self.qtime_gating:
            self.commitments.done(lot)
        self.completed.append(
            Completed(
                lot.part,
                lot.prior,
                lot.released,
                self.now,
                lot.due,
                lot.route.raw_s,
                lot.name.startswith("Init_") or lot.released < self.model.t0,
            )
        )

    # --- dispatching (mes/simulation/dispatching.py) ----------------------------------------

    def situation(self, fid: int | None = None) -> policy.Situation:
        return self.dispatching.situation(fid)

    def dispatch(self, fid: int) -> None:
        """Decide for the family once every event of this instant is in (lots arriving
        together are ranked together, as in one cycle of the production dispatcher)."""
        self.dispatching.dirty.add(fid)

    # --- jobs ------------------------------------------------------------------------------

    def _process_time(self, step: Step, lots: list[SimLot]) -> float:
        t = streams.draw(lots[0].rng, "uniform", step.process_s, step.spread_s)
        if step.per == "per_piece":
            return t * sum(lot.wafers for lot in lots)
        if step.per == "per_lot":
            return t * len(lots)
        return t

    def start_job(self, tool: Tool, lots: list[SimLot]) -> None:
        step = lots[0].route.steps[lots[0].index]
        fam = tool.family
        queue = self.queues[fam.id]
        self._queue_change(fam.id, -len(lots), -step.snapshot.process_time_s * len(lots))
        by_setup = self.setup_queues.get(fam.id)
        now = self.now
        for lot in lots:
            wait = now - queue.pop(lot.id).queued_at
            lot.queue_s += wait
            if lot.waits is not None:
                lot.waits[fam.id] += wait
            lot.started = now
            if by_setup is not None and (setup := lot.route.steps[lot.index].snapshot.setup):
                del by_setup[setup][lot.id]
            lot.snap = None
            lot.tools_at[lot.index] = tool.id
            if self.qtime_gating:  # only the gate reads the commitments
                self.commitments.started(lot, lot.index)
            deadline = lot.windows.pop(lot.index, None)
            if deadline is not None:
                self.counters.qtime_checked += 1
                if self.now > deadline:
                    self.counters.qtime_violated += 1
        setup_s = 0.0
        if step.setup is not None and step.setup != tool.setup:
            setup_s = self.situation().setup_time(tool.setup, step.setup)
            tool.setup, tool.since_setup = step.setup, 0
            self.counters.setups += 1
            tool.setup_s += setup_s
        tool.since_setup += len(lots)
        self._wake_gated(fam.id)  # the lots it starts leave their windows
        process = self._process_time(step, lots)
        start = self.now
        if setup_s > 0 and tool.jobs:
            # A cascading tool changes its setup only once the lots in it are out (the gas
            # cannot change under a lot being implanted): the change waits for the last end.
            start = max(start, max(job.end for job in tool.jobs))
        begin = start + fam.load_s + setup_s
        end = begin + process + fam.unload_s
        free_at = end
        if step.cascade_s is not None:
            gap = step.cascade_s
            if step.cascade_per == "per_piece":
                gap *= sum(lot.wafers for lot in lots)
            # The interval spaces the starts of consecutive lots: the next lot is loaded while
            # this one runs, so its load ends ``gap`` after this one's began.
            free_at = min(end, max(self.now, begin + gap - fam.load_s))
        job = Job(tool, lots, step, end, free_at)
        tool.jobs.append(job)
        tool.blocker = job
        tool.snap = None
        self.counters.starts += 1
        if tool.status == IDLE:
            self.account(tool, BUSY)
        self.schedule(end, END, job, 0)
        if free_at < end:
            self.schedule(free_at, FREE, job, 0)

    def _on_free(self, job: object, epoch: object) -> None:
        assert isinstance(job, Job)
        if job.epoch != epoch:
            return
        tool = job.tool
        if tool.blocker is job:
            tool.blocker = None
            tool.snap = None
            self.after_job(tool)

    def _on_end(self, job: object, epoch: object) -> None:
        assert isinstance(job, Job)
        if job.epoch != epoch:
            return
        tool = job.tool
        tool.jobs.remove(job)
        if tool.blocker is job:
            tool.blocker = None
        tool.snap = None
        if not tool.jobs and tool.status == BUSY:
            self.account(tool, IDLE)
        self.job_done(tool, job)
        for lot in job.lots:
            lot.tool_s += self.now - lot.started
            # Each lot goes on along its own route: a batch may hold lots of several routes
            # whose step has the same name (the batch key) at different route indexes.
            step = lot.route.steps[lot.index]
            if step.qtime_to is not None and step.qtime_s is not None:
                lot.windows[step.qtime_to] = self.now + step.qtime_s
            if step.rework_p > 0 and lot.rng.random() < step.rework_p:
                self.counters.reworks += 1
                self._advance(lot, step.index, travel=True, to=step.rework_to)
            else:
                self._advance(lot, step.index, travel=True)
        self.after_job(tool)

    def job_done(self, tool: Tool, job: Job) -> None:
        self.maintenance.job_done(tool, job)

    def after_job(self, tool: Tool) -> None:
        """The tool may take work again (or start a PM that waited for it)."""
        self.maintenance.after_job(tool)
        self._wake_gated(tool.family.id)

    def _wake_gated(self, fid: int) -> None:
        """Family ``fid`` closes Q-time windows and has more room now: the lots the gate held
        back at the opening families are decided again."""
        if self.qtime_gating:
            for opening in self.commitments.opening_of.get(fid, ()):
                self.dispatch(opening)

    def tools_up(self, fid: int, delta: int) -> None:
        self.up[fid] = self.up.get(fid, 0) + delta
        self._queue_change(fid, 0, 0.0)
        if delta > 0:
            self._wake_gated(fid)

    # --- accounting ------------------------------------------------------------------------

    def account(self, tool: Tool, status: int) -> None:
        tool.buckets[tool.status] += self.now - tool.since
        tool.since = self.now
        tool.status = status

    def _queue_change(self, fid: int, lots: int, work: float) -> None:
        """Before ``lots`` join (or leave, negative) the family's queue: the time-weighted queue
        length and the group load the policy sees."""
        queue = self.queues[fid]
        self.queue_area[fid] += len(queue) * (self.now - self._queue_since[fid])
        self._queue_since[fid] = self.now
        self.queue_work[fid] += work
        self.loads.changed(fid)  # ``lots`` join or leave right after

    def _queue_accounts(self) -> None:
        for fid, queue in self.queues.items():
            self.queue_area[fid] += len(queue) * (self.now - self._queue_since[fid])
            self._queue_since[fid] = self.now

    def _on_sample(self, _a: object, _b: object) -> None:
        self.wip_samples.append((self.now, len(self.lots)))
        self.schedule(self.now + self.sample_every_s, SAMPLE)

    def _on_warmup(self, _a: object, _b: object) -> None:
        for tool in self.tools:
            self.account(tool, tool.status)
            self.base[tool.id] = (list(tool.buckets), tool.setup_s)
        self._queue_accounts()
        self.base_queue = dict(self.queue_area)
