"""A simulated tool: its engine (``engine.ToolEngine``) and the commands a host sends it.

Models: ISA-95 job order states for the job (with the SEMI E40 outcome as a substate), SEMI E90
substrate processing states for the wafers, SEMI E30 control state for who may command the tool,
OPC UA Machinery item state and operation mode for the tool.

Host commands (control state, recipes, job control) raise ``Refused`` when the tool's state does
not allow them. A job names its recipe (else the selected one).
"""

from __future__ import annotations

from typing import Any

from mes.opcua.model import ControlState, JobState, JobSubstate, SubstrateState

from .engine import ToolEngine
from .recipes import Recipe, RecipeError
from .records import (
    FINAL_JOB_STATES,
    AlarmEvent,
    ChamberEvent,
    Event,
    Job,
    JobEvent,
    Refused,
    SubstrateEvent,
    known,
    parse_job_order,
)

# What a caller of ``Tool`` handles: its refusals and the events it drains (the rest of the
# records is in ``records``).
__all__ = ["AlarmEvent", "ChamberEvent", "Event", "JobEvent", "Refused", "SubstrateEvent", "Tool"]

MAX_JOB_ORDERS = 10


class Tool(ToolEngine):
    """A simulated tool as the host sees it: the engine, commanded."""

    # --- control state and recipes -----------------------------------------------------------
    def set_control_state(self, state: ControlState) -> None:
        self.control_state = state
        self.revision += 1

    def _require_online(self) -> None:
        if self.control_state is ControlState.OFFLINE:
            raise Refused("not_remote", f"{self.spec.tool_id} is Offline")

    def _require_remote(self) -> None:
        if self.control_state is not ControlState.ONLINE_REMOTE:
            raise Refused(
                "not_remote",
                f"{self.spec.tool_id} is {self.control_state.value}: "
                "host commands need OnlineRemote",
            )

    def download_recipe(self, recipe_id: str, body_json: str, checksum: str) -> Recipe:
        self._require_online()
        try:
            recipe = Recipe.from_json(recipe_id, body_json)
        except RecipeError as exc:
            raise Refused("invalid", str(exc)) from exc
        if self.rejected_downloads:
            self.rejected_downloads -= self.rejected_downloads > 0
            if self.rejection_reason == "range":
                raise Refused("out_of_range", f"recipe {recipe_id!r}: a parameter is out of range")
            raise Refused("invalid", f"checksum mismatch for recipe {recipe_id!r} (fault)")
        if checksum and checksum.lower() != recipe.checksum:
            raise Refused("invalid", f"checksum mismatch for recipe {recipe_id!r}")
        problem = recipe.out_of_range()
        if problem:
            raise Refused("out_of_range", f"recipe {recipe_id!r}: {problem}")
        self.recipes[recipe_id] = recipe
        self.revision += 1
        for job in self.jobs.values():
            if job.recipe_id == recipe_id and job.state is JobState.NOT_ALLOWED_TO_START:
                self._set_job_state(job, JobState.ALLOWED_TO_START, JobSubstate.READY)
        return recipe

    def select_recipe(self, recipe_id: str) -> None:
        self._require_online()
        self._recipe(recipe_id)
        self.selected_recipe = recipe_id
        self.revision += 1

    def delete_recipe(self, recipe_id: str) -> None:
        self._require_online()
        self._recipe(recipe_id)
        if any(job.active and job.recipe_id == recipe_id for job in self.jobs.values()):
            raise Refused("wrong_state", f"recipe {recipe_id!r} is in use")
        del self.recipes[recipe_id]
        if self.selected_recipe == recipe_id:
            self.selected_recipe = ""
        self.revision += 1

    # --- job control (ISA-95) ----------------------------------------------------------------
    def store(self, job_order_json: str, *, start: bool = False) -> Job:
        self._require_remote()
        job = parse_job_order(
            job_order_json,
            slot_count=self.spec.slots,
            recipe_ids=self.recipes,
            selected_recipe=self.selected_recipe,
            now=self.now,
        )
        if job.job_order_id in self.jobs:
            raise Refused("invalid", f"job order {job.job_order_id!r} exists")
        unknown = [c for c in job.chambers if c not in self.spec.chambers]
        if unknown:
            raise Refused("invalid", f"{self.spec.tool_id} has no chamber {unknown[0]!r}")
        if sum(j.state not in FINAL_JOB_STATES for j in self.jobs.values()) >= MAX_JOB_ORDERS:
            raise Refused("busy", "job order list is full")
        if start:
            self._check_startable(job)
        self.jobs[job.job_order_id] = job
        self._emit_job(job)
        if start:
            self._start(job)
        return job

    def start(self, job_order_id: str) -> Job:
        self._require_remote()
        job = self._job(job_order_id)
        self._check_startable(job)
        self._start(job)
        return job

    def stop(self, job_order_id: str) -> Job:
        self._require_remote()
        job = self._job(job_order_id)
        if not job.active:
            raise Refused("wrong_state", f"job {job_order_id} is {job.state.value}")
        job.stop_requested = True
        for w in job.wafers:
            if w.state is SubstrateState.NEEDS_PROCESSING:
                self._set_wafer(job, w, SubstrateState.SKIPPED)
        self._maybe_end(job)
        return job

    def abort(self, job_order_id: str) -> Job:
        self._require_remote()
        job = self._job(job_order_id)
        if job.state in FINAL_JOB_STATES:
            raise Refused("wrong_state", f"job {job_order_id} is {job.state.value}")
        self._abort(job)
        return job

    def pause(self, job_order_id: str) -> Job:
        self._require_remote()
        job = self._job(job_order_id)
        if job.state is not JobState.RUNNING:
            raise Refused("wrong_state", f"job {job_order_id} is {job.state.value}")
        self._set_job_state(job, JobState.INTERRUPTED, JobSubstate.PAUSED)
        return job

    def resume(self, job_order_id: str) -> Job:
        self._require_remote()
        job = self._job(job_order_id)
        if job.state is not JobState.INTERRUPTED:
            raise Refused("wrong_state", f"job {job_order_id} is {job.state.value}")
        if self.breaking_alarm_active:
            raise Refused("wrong_state", "a breaking alarm is active")
        self._set_job_state(job, JobState.RUNNING, JobSubstate.PROCESSING)
        self._dispatch(self.now)
        return job

    def cancel(self, job_order_id: str) -> Job:
        self._require_remote()
        job = self._job(job_order_id)
        if job.state not in (JobState.NOT_ALLOWED_TO_START, JobState.ALLOWED_TO_START):
            raise Refused("wrong_state", f"job {job_order_id} has started")
        for w in job.wafers:
            w.state = SubstrateState.SKIPPED
        job.ended_at = self.now
        self._set_job_state(job, JobState.ENDED, JobSubstate.CANCELLED)
        return job

    def clear(self, job_order_id: str) -> Job:
        self._require_remote()
        job = self._job(job_order_id)
        if job.state not in FINAL_JOB_STATES:
            raise Refused("wrong_state", f"job {job_order_id} has not ended")
        del self.jobs[job_order_id]
        self.revision += 1
        return job

    def job_response(self, job_order_id: str) -> dict[str, Any]:
        return self._job(job_order_id).response()

    def _job(self, job_order_id: str) -> Job:
        return known(self.jobs, job_order_id, f"no job order {job_order_id!r}")

    def _check_startable(self, job: Job) -> None:
        if job.state in FINAL_JOB_STATES or job.active:
            raise Refused("wrong_state", f"job {job.job_order_id} is {job.state.value}")
        if job.recipe_id not in self.recipes:
            raise Refused("wrong_state", f"recipe {job.recipe_id!r} is not on the tool")
        if self.current_job is not None:
            raise Refused("busy", f"job {self.current_job.job_order_id} is running")
        if self.breaking_alarm_active:
            raise Refused("wrong_state", "a breaking alarm is active")
        n = len(job.lots)
        if not self.spec.min_batch <= n <= self.spec.max_batch:
            raise Refused(
                "invalid",
                f"{n} lots: {self.spec.tool_id} runs {self.spec.min_batch} to "
                f"{self.spec.max_batch} lots per job",
            )
