"""Breakdowns and preventive maintenance of the simulated tools, from the testbed's calendars.

* Breakdowns (``downcal.txt`` attached per area or family): every tool fails on its own, the
  time to failure counted in calendar time (``mttf_by_cal``) from the end of the last repair
  (so the broken share is MTTR / (MTTF + MTTR), as in the testbed's reference), first failure
  after the attachment's first occurrence; a failure suspends what the tool runs (its jobs
  resume where they stopped after the repair). A failure that comes while the tool is already
  down or in a PM starts when that ends.
* PMs (``pmcal.txt``): calendar PMs fall due every ``MTBPM`` from their first occurrence,
  the tools of a family spread evenly over one period (tool j of n at the first occurrence +
  j/n MTBPM): the tables give one first occurrence per family, and read literally every tool of
  the family stops at once — 33 litho steppers down together for 6.7 h every week — which a fab
  never plans and the testbed's reference figures do not show (docs/simulation.md); wafer-count
  PMs after ``MTBPM`` wafers processed since the last one. A due PM makes the tool
  ``pm_due`` (the policy's ``tool.pm_due`` exclusion: no new work) and starts as soon as what
  runs on it has finished; PMs due together are done in one stop.

Draws come from the tool's own streams, failure by failure, so every rule set compared with
one seed meets the same breakdowns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mes.simulation.streams as streams
from mes.simulation.state import (
    BROKEN,
    BUSY,
    DOWN,
    END,
    FREE,
    IDLE,
    MAINT,
    PM_DUE,
    PM_END,
    UP,
    Job,
    Tool,
)

if TYPE_CHECKING:
    from mes.simulation.engine import Simulation


class Maintenance:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.downs = sim.model.downs
        self.pms = sim.model.pms
        self._pm_for: dict[int, float] = {}  # tool id -> length of a what-if PM (calendar -1)
        sim.handlers.update(
            {
                DOWN: self._on_down,
                UP: self._on_up,
                PM_DUE: self._on_pm_due,
                PM_END: self._on_up,
            }
        )

    def start(self) -> None:
        sim, t0 = self.sim, self.sim.model.t0
        for tool in sim.tools:
            fid = tool.family.id
            group = sim.tools_of[fid]
            spread = group.index(tool) / len(group)
            for k, (_cal, attach) in enumerate(self.downs.get(fid, ())):
                first = streams.draw(tool.rng_down, attach.first_dist, attach.first)
                sim.schedule(t0 + first, DOWN, tool, k)
            for k, (pm, attach) in enumerate(self.pms.get(fid, ())):
                if pm.by_wafers:
                    tool.wafers_left[k] = attach.first if attach.first_in_wafers else pm.every
                else:
                    first = pm.every if attach.first_in_wafers else attach.first
                    sim.schedule(t0 + first + spread * pm.every, PM_DUE, tool, k)

    def stop(self, tool: Tool, down_for_s: float, pm_for_s: float) -> None:
        """A tool down (or in a PM) when the run starts, for this long (what-if)."""
        if down_for_s > 0:
            self._go_down(tool, BROKEN, down_for_s, UP)
            if pm_for_s > 0:
                tool.pm_due = True
                tool.pm_pending.append(-1)
                self._pm_for[tool.id] = pm_for_s
        elif pm_for_s > 0:
            self._go_down(tool, MAINT, pm_for_s, PM_END)

    # --- breakdowns ------------------------------------------------------------------------

    def _on_down(self, tool: object, k: object) -> None:
        assert isinstance(tool, Tool)
        assert isinstance(k, int)
        sim = self.sim
        cal = self.downs[tool.family.id][k][0]
        repair = streams.draw(tool.rng_down, cal.mttr_dist, cal.mttr_s)
        # The time to the next failure counts from the end of this repair (up time between
        # failures): the testbed reference's broken shares are MTTR / (MTTF + MTTR).
        up = streams.draw(tool.rng_down, cal.mttf_dist, cal.mttf_s)
        sim.schedule(sim.now + repair + up, DOWN, tool, k)
        sim.counters.breakdowns += 1
        if tool.status in (BROKEN, MAINT):
            tool.downs_pending.append(repair)
        else:
            self._go_down(tool, BROKEN, repair, UP)

    def _go_down(self, tool: Tool, status: int, duration: float, until: int) -> None:
        sim = self.sim
        for job in tool.jobs:
            job.epoch += 1  # its END / FREE events are void; resumed on the way up
            job.left = job.end - sim.now
            job.free_left = job.free_at - sim.now
        sim.account(tool, status)
        sim.tools_up(tool.family.id, -1)
        tool.snap = None
        sim.schedule(sim.now + duration, until, tool)

    def _on_up(self, tool: object, _b: object) -> None:
        """A repair or a PM ends: the next pending failure, or back to work."""
        assert isinstance(tool, Tool)
        sim = self.sim
        if tool.downs_pending:
            sim.account(tool, BROKEN)
            sim.schedule(sim.now + tool.downs_pending.pop(0), UP, tool)
            return
        for job in tool.jobs:
            job.epoch += 1
            job.end = sim.now + job.left
            sim.schedule(job.end, END, job, job.epoch)
            if tool.blocker is job and job.free_left > 0 and job.free_at < job.end:
                job.free_at = sim.now + job.free_left
                sim.schedule(job.free_at, FREE, job, job.epoch)
            elif tool.blocker is job:
                job.free_at = job.end
        sim.account(tool, BUSY if tool.jobs else IDLE)
        sim.tools_up(tool.family.id, +1)
        tool.snap = None
        self.after_job(tool)

    # --- preventive maintenance ------------------------------------------------------------

    def _on_pm_due(self, tool: object, k: object) -> None:
        assert isinstance(tool, Tool)
        assert isinstance(k, int)
        pm = self.pms[tool.family.id][k][0]
        self.sim.schedule(self.sim.now + pm.every, PM_DUE, tool, k)
        self._due(tool, k)

    def _due(self, tool: Tool, k: int) -> None:
        if k not in tool.pm_pending:
            tool.pm_pending.append(k)
        tool.pm_due = True
        tool.snap = None
        if tool.status not in (BROKEN, MAINT) and not tool.jobs:
            self._start_pm(tool)

    def _start_pm(self, tool: Tool) -> None:
        calendars = self.pms[tool.family.id]
        duration = 0.0
        for k in sorted(tool.pm_pending):
            if k < 0:
                duration += self._pm_for.pop(tool.id, 0.0)
                continue
            pm = calendars[k][0]
            duration += streams.draw(
                tool.rng_pm, pm.duration_dist, pm.duration_s, pm.duration_spread_s
            )
            if pm.by_wafers:
                tool.wafers_left[k] = pm.every
        self.sim.counters.pms += len(tool.pm_pending)
        tool.pm_pending.clear()
        tool.pm_due = False
        self._go_down(tool, MAINT, duration, PM_END)

    def job_done(self, tool: Tool, job: Job) -> None:
        """Wafer-count PMs count the wafers of every finished job."""
        if not tool.wafers_left:
            return
        wafers = sum(lot.wafers for lot in job.lots)
        for k in tool.wafers_left:
            tool.wafers_left[k] -= wafers
            if tool.wafers_left[k] <= 0 and k not in tool.pm_pending:
                tool.pm_pending.append(k)
                tool.pm_due = True
                tool.snap = None

    def after_job(self, tool: Tool) -> None:
        if tool.pm_due and not tool.jobs and tool.status not in (BROKEN, MAINT):
            self._start_pm(tool)
        else:
            self.sim.dispatch(tool.family.id)
