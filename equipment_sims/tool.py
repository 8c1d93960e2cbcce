"""The behaviour of one simulated tool as a plain state machine (no OPC UA, no asyncio).

Models: ISA-95 job order states for the job (with the SEMI E40 outcome as a substate), SEMI E90
substrate processing states for the wafers, SEMI E30 control state for who may command the tool,
OPC UA Machinery item state and operation mode for the tool.

Time is passed in (simulated seconds): ``advance(now)`` plays every completion due up to ``now``
at its own time, so the outcome does not depend on how often the caller ticks. Every change is
appended to ``events`` (drained by the server layer). Host commands raise ``Refused``.

Simplifications: one job runs at a time; a job names its recipe (else the selected one);
a wafer in a chamber that goes down is aborted; Pause and a breaking alarm let wafers already
in process finish but start no new ones; Stop finishes wafers in process and skips the rest.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from mes.opcua.model import (
    ChamberState,
    ControlState,
    JobState,
    JobSubstate,
    MachineryItemState,
    MachineryOperationMode,
    ProcessingKind,
    SubstrateState,
)

from .process import MeasurementModel, noisy_values, seeded_rng
from .recipes import Recipe, RecipeError, Step, batch_steps, wafer_steps
from .spec import ToolSpec

MAX_JOB_ORDERS = 10
FINAL_JOB_STATES = (JobState.ENDED, JobState.ABORTED)


class Refused(Exception):
    """A command the tool refuses; ``reason`` is a key of ``model.REFUSAL_STATUS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Wafer:
    lot_id: str
    slot: int
    substrate_id: str
    state: SubstrateState = SubstrateState.NEEDS_PROCESSING
    chamber: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    measurements: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "LotID": self.lot_id,
            "Slot": self.slot,
            "SubstrateID": self.substrate_id,
            "State": self.state.value,
            "Chamber": self.chamber,
            "Measurements": self.measurements,
        }


@dataclass
class Job:
    job_order_id: str
    recipe_id: str
    lots: list[dict[str, Any]]
    wafers: list[Wafer]
    state: JobState
    substate: JobSubstate
    stored_at: float
    started_at: float | None = None
    ended_at: float | None = None
    stop_requested: bool = False

    @property
    def active(self) -> bool:
        return self.state in (JobState.RUNNING, JobState.INTERRUPTED)

    def response(self) -> dict[str, Any]:
        processed = sum(w.state is SubstrateState.PROCESSED for w in self.wafers)
        return {
            "JobOrderID": self.job_order_id,
            "WorkMasterID": self.recipe_id,
            "JobState": self.state.value,
            "JobSubstate": self.substate.value,
            "StartTime": self.started_at,
            "EndTime": self.ended_at,
            "Lots": [lot["LotID"] for lot in self.lots],
            "WafersProcessed": processed,
            "WafersTotal": len(self.wafers),
            "Wafers": [w.as_dict() for w in self.wafers],
        }


@dataclass
class Station:
    name: str
    state: ChamberState = ChamberState.IDLE
    job: Job | None = None
    wafers: list[Wafer] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    started_at: float = 0.0
    ends_at: float = 0.0

    def current_step(self, now: float) -> tuple[int, Step] | None:
        if self.state is not ChamberState.BUSY:
            return None
        t = self.started_at
        for number, step in enumerate(self.steps, start=1):
            t += step.duration
            if now < t:
                return number, step
        return (len(self.steps), self.steps[-1]) if self.steps else None


@dataclass
class Alarm:
    alarm_id: str
    text: str
    severity: int
    breaking: bool
    active: bool = True
    acked: bool = False
    raised_at: float = 0.0

    @property
    def retain(self) -> bool:
        return self.active or not self.acked


# --- events (drained by the server layer) ---------------------------------------------------
@dataclass(frozen=True)
class JobEvent:
    at: float
    job_order_id: str
    state: JobState
    substate: JobSubstate
    response: dict[str, Any]


@dataclass(frozen=True)
class SubstrateEvent:
    at: float
    job_order_id: str
    wafer: dict[str, Any]


@dataclass(frozen=True)
class ChamberEvent:
    at: float
    chamber: str
    state: ChamberState


@dataclass(frozen=True)
class AlarmEvent:
    at: float
    alarm: Alarm


Event = JobEvent | SubstrateEvent | ChamberEvent | AlarmEvent


class Tool:
    def __init__(
        self,
        spec: ToolSpec,
        *,
        seed: int = 0,
        control_state: ControlState = ControlState.ONLINE_REMOTE,
    ) -> None:
        self.spec = spec
        self.control_state = control_state
        self.recipes: dict[str, Recipe] = {}
        self.selected_recipe = ""
        self.jobs: dict[str, Job] = {}
        self.stations = {name: Station(name) for name in spec.stations}
        self.alarms: dict[str, Alarm] = {}
        self.wafers_processed_total = 0
        self.events: list[Event] = []
        self.now = 0.0
        self.corrupt_checksums = False  # fault: report a wrong checksum for every recipe
        # Fault: refuse this many downloads (-1: every one) as "checksum" or "range" errors.
        self.rejected_downloads = 0
        self.rejection_reason = "checksum"
        self.revision = 0  # bumped on every change worth persisting
        self.measurement = MeasurementModel(
            spec.tool_group,
            seeded_rng(seed, spec.tool_id, "measure"),
            sigma=spec.measurement_sigma,
            drift_per_wafer=spec.drift_per_wafer,
        )
        self._pv_rng: random.Random = seeded_rng(seed, spec.tool_id, "process")

    # --- derived state ------------------------------------------------------------------------
    @property
    def current_job(self) -> Job | None:
        return next((job for job in self.jobs.values() if job.active), None)

    @property
    def item_state(self) -> MachineryItemState:
        if any(a.active and a.breaking for a in self.alarms.values()):
            return MachineryItemState.OUT_OF_SERVICE
        job = self.current_job
        if job is not None and job.state is JobState.RUNNING:
            return MachineryItemState.EXECUTING
        return MachineryItemState.NOT_EXECUTING

    @property
    def operation_mode(self) -> MachineryOperationMode:
        if self.current_job is not None:
            return MachineryOperationMode.PROCESSING
        return MachineryOperationMode.NONE

    def reported_checksum(self, recipe_id: str) -> str:
        recipe = self._recipe(recipe_id)
        if self.corrupt_checksums:
            return recipe.checksum[::-1]
        return recipe.checksum

    def slot_map(self) -> list[str]:
        """Per slot of the lot in process: "" (empty) or the wafer's E90 processing state."""
        slots = [""] * self.spec.slots
        job = self.current_job
        if job is None:
            return slots
        wafer = self.current_wafer()
        lot_id = wafer.lot_id if wafer else job.wafers[0].lot_id
        for w in job.wafers:
            if w.lot_id == lot_id:
                slots[w.slot - 1] = w.state.value
        return slots

    def current_wafer(self) -> Wafer | None:
        for station in self.stations.values():
            if station.wafers:
                return station.wafers[0]
        return None

    def process_values(self) -> tuple[int, str, dict[str, float]]:
        """(step number, step name, noisy values) at ``now``, from the first busy station."""
        for station in self.stations.values():
            current = station.current_step(self.now)
            if current is not None:
                number, step = current
                return (
                    number,
                    step.name,
                    noisy_values(step.setpoints, self._pv_rng, self.spec.sensors),
                )
        return 0, "", noisy_values({}, self._pv_rng, self.spec.sensors)

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

    def _recipe(self, recipe_id: str) -> Recipe:
        try:
            return self.recipes[recipe_id]
        except KeyError:
            raise Refused("unknown", f"no recipe {recipe_id!r} on {self.spec.tool_id}") from None

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
        job = self._parse_job_order(job_order_json)
        if job.job_order_id in self.jobs:
            raise Refused("invalid", f"job order {job.job_order_id!r} exists")
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
        if any(a.active and a.breaking for a in self.alarms.values()):
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
        try:
            return self.jobs[job_order_id]
        except KeyError:
            raise Refused("unknown", f"no job order {job_order_id!r}") from None

    def _parse_job_order(self, text: str) -> Job:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Refused("invalid", f"job order is not JSON: {exc.msg}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("JobOrderID"), str):
            raise Refused("invalid", "job order needs a JobOrderID")
        job_id = data["JobOrderID"]
        recipe_id = data.get("WorkMasterID") or self.selected_recipe
        if not isinstance(recipe_id, str) or not recipe_id:
            raise Refused("invalid", "job order names no recipe and none is selected")
        lots = data.get("Lots")
        if not isinstance(lots, list) or not lots:
            raise Refused("invalid", "job order needs at least one lot")
        wafers: list[Wafer] = []
        for lot in lots:
            if not isinstance(lot, dict) or not isinstance(lot.get("LotID"), str):
                raise Refused("invalid", "each lot needs a LotID")
            slots = lot.get("Slots", list(range(1, self.spec.slots + 1)))
            ids = lot.get("SubstrateIDs") or [f"{lot['LotID']}.{s:02d}" for s in slots]
            if (
                not isinstance(slots, list)
                or not all(isinstance(s, int) and 1 <= s <= self.spec.slots for s in slots)
                or len(set(slots)) != len(slots)
                or len(ids) != len(slots)
            ):
                raise Refused("invalid", f"bad slots for lot {lot['LotID']}")
            wafers += [Wafer(lot["LotID"], s, str(i)) for s, i in zip(slots, ids, strict=True)]
        ready = recipe_id in self.recipes
        return Job(
            job_order_id=job_id,
            recipe_id=recipe_id,
            lots=lots,
            wafers=wafers,
            state=JobState.ALLOWED_TO_START if ready else JobState.NOT_ALLOWED_TO_START,
            substate=JobSubstate.READY if ready else JobSubstate.WAITING,
            stored_at=self.now,
        )

    def _check_startable(self, job: Job) -> None:
        if job.state in FINAL_JOB_STATES or job.active:
            raise Refused("wrong_state", f"job {job.job_order_id} is {job.state.value}")
        if job.recipe_id not in self.recipes:
            raise Refused("wrong_state", f"recipe {job.recipe_id!r} is not on the tool")
        if self.current_job is not None:
            raise Refused("busy", f"job {self.current_job.job_order_id} is running")
        if any(a.active and a.breaking for a in self.alarms.values()):
            raise Refused("wrong_state", "a breaking alarm is active")
        n = len(job.lots)
        if not self.spec.min_batch <= n <= self.spec.max_batch:
            raise Refused(
                "invalid",
                f"{n} lots: {self.spec.tool_id} runs {self.spec.min_batch} to "
                f"{self.spec.max_batch} lots per job",
            )

    def _start(self, job: Job) -> None:
        job.started_at = self.now
        self.selected_recipe = job.recipe_id
        self._set_job_state(job, JobState.RUNNING, JobSubstate.PROCESSING)
        self._dispatch(self.now)

    def _abort(self, job: Job) -> None:
        for station in self.stations.values():
            if station.job is job:
                self._free(station)
        for w in job.wafers:
            if w.state is SubstrateState.IN_PROCESS:
                w.ended_at = self.now
                self._set_wafer(job, w, SubstrateState.ABORTED)
            elif w.state is SubstrateState.NEEDS_PROCESSING:
                self._set_wafer(job, w, SubstrateState.SKIPPED)
        job.ended_at = self.now
        self._set_job_state(job, JobState.ABORTED, JobSubstate.ABORTED)

    def fault_abort(self, job: Job) -> None:
        """The tool aborts a job by itself (interlock), whatever the control state."""
        if job.state in FINAL_JOB_STATES:
            raise Refused("wrong_state", f"job {job.job_order_id} is {job.state.value}")
        self._abort(job)

    def breakdown(self, alarm_id: str, text: str, *, severity: int = 900) -> Alarm:
        """The tool breaks down: the running job is aborted and a breaking alarm raised (the
        item state is OutOfService while it is active; clearing it is the repair)."""
        job = self.current_job
        if job is not None:
            self._abort(job)
        return self.raise_alarm(alarm_id, text, severity=severity, breaking=True)

    # --- time ------------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Play every completion due up to ``now`` at its own time."""
        while True:
            busy = [s for s in self.stations.values() if s.state is ChamberState.BUSY]
            station = min(busy, key=lambda s: s.ends_at, default=None)
            if station is None or station.ends_at > now:
                break
            self.now = max(self.now, station.ends_at)
            self._finish(station)
            self._dispatch(self.now)
        self.now = max(self.now, now)

    def steps_of(self, job: Job) -> list[Step]:
        recipe = self.recipes[job.recipe_id]
        if self.spec.batch_processing:
            return batch_steps(recipe, self.spec.family, self.spec.transfer_s)
        return wafer_steps(recipe, self.spec.family, self.spec.transfer_s)

    def _dispatch(self, at: float) -> None:
        job = self.current_job
        if job is None or job.state is not JobState.RUNNING or job.stop_requested:
            return
        idle = [s for s in self.stations.values() if s.state is ChamberState.IDLE]
        waiting = [w for w in job.wafers if w.state is SubstrateState.NEEDS_PROCESSING]
        if self.spec.batch_processing:
            if idle and waiting:
                self._load(idle[0], job, waiting, at)
        else:
            for station, wafer in zip(idle, waiting, strict=False):
                self._load(station, job, [wafer], at)
        self._maybe_end(job)

    def _load(self, station: Station, job: Job, wafers: list[Wafer], at: float) -> None:
        station.state = ChamberState.BUSY
        station.job = job
        station.wafers = wafers
        station.steps = self.steps_of(job)
        station.started_at = at
        station.ends_at = at + sum(step.duration for step in station.steps)
        for w in wafers:
            w.chamber = station.name if self.spec.kind is ProcessingKind.CLUSTER else ""
            w.started_at = at
            self._set_wafer(job, w, SubstrateState.IN_PROCESS)

    def _finish(self, station: Station) -> None:
        job = station.job
        wafers = station.wafers
        self._free(station)
        if job is None:
            return
        recipe = self.recipes[job.recipe_id]
        for w in wafers:
            w.ended_at = self.now
            if self.spec.family == "metrology":
                w.measurements = self.measurement.measure(recipe)
            self.wafers_processed_total += 1
            self._set_wafer(job, w, SubstrateState.PROCESSED)
        self._maybe_end(job)

    def _free(self, station: Station) -> None:
        if station.state is ChamberState.BUSY:
            station.state = ChamberState.IDLE
        station.job = None
        station.wafers = []
        station.steps = []

    def _maybe_end(self, job: Job) -> None:
        if not job.active:
            return
        states = {w.state for w in job.wafers}
        if SubstrateState.IN_PROCESS in states or SubstrateState.NEEDS_PROCESSING in states:
            return
        job.ended_at = self.now
        substate = JobSubstate.STOPPED if job.stop_requested else JobSubstate.COMPLETED
        self._set_job_state(job, JobState.ENDED, substate)

    # --- chambers and alarms (operator, faults) ----------------------------------------------
    def chamber_down(self, name: str) -> None:
        station = self._station(name)
        if station.state is ChamberState.DOWN:
            return
        job = station.job
        wafers = station.wafers
        self._free(station)
        station.state = ChamberState.DOWN
        self._event(ChamberEvent(self.now, name, ChamberState.DOWN))
        if job is not None:
            for w in wafers:
                w.ended_at = self.now
                self._set_wafer(job, w, SubstrateState.ABORTED)
            self._maybe_end(job)

    def chamber_up(self, name: str) -> None:
        station = self._station(name)
        if station.state is not ChamberState.DOWN:
            return
        station.state = ChamberState.IDLE
        self._event(ChamberEvent(self.now, name, ChamberState.IDLE))
        self._dispatch(self.now)

    def _station(self, name: str) -> Station:
        try:
            return self.stations[name]
        except KeyError:
            raise Refused("unknown", f"no chamber {name!r} on {self.spec.tool_id}") from None

    def raise_alarm(
        self, alarm_id: str, text: str, *, severity: int = 500, breaking: bool
    ) -> Alarm:
        alarm = Alarm(alarm_id, text, max(1, min(1000, severity)), breaking, raised_at=self.now)
        self.alarms[alarm_id] = alarm
        self._event(AlarmEvent(self.now, alarm))
        job = self.current_job
        if breaking and job is not None and job.state is JobState.RUNNING:
            self._set_job_state(job, JobState.INTERRUPTED, JobSubstate.HELD)
        return alarm

    def clear_alarm(self, alarm_id: str) -> Alarm:
        alarm = self._alarm(alarm_id)
        alarm.active = False
        self._alarm_changed(alarm)
        return alarm

    def acknowledge(self, alarm_id: str) -> Alarm:
        alarm = self._alarm(alarm_id)
        if alarm.acked:
            raise Refused("wrong_state", f"alarm {alarm_id} is already acknowledged")
        alarm.acked = True
        self._alarm_changed(alarm)
        return alarm

    def _alarm(self, alarm_id: str) -> Alarm:
        try:
            return self.alarms[alarm_id]
        except KeyError:
            raise Refused("unknown", f"no alarm {alarm_id!r}") from None

    def _alarm_changed(self, alarm: Alarm) -> None:
        self._event(AlarmEvent(self.now, alarm))
        if not alarm.retain:
            del self.alarms[alarm.alarm_id]

    # --- event helpers -------------------------------------------------------------------------
    def _set_job_state(self, job: Job, state: JobState, substate: JobSubstate) -> None:
        job.state = state
        job.substate = substate
        self._emit_job(job)

    def _emit_job(self, job: Job) -> None:
        self._event(JobEvent(self.now, job.job_order_id, job.state, job.substate, job.response()))

    def _set_wafer(self, job: Job, wafer: Wafer, state: SubstrateState) -> None:
        wafer.state = state
        self._event(SubstrateEvent(self.now, job.job_order_id, wafer.as_dict()))

    def _event(self, event: Event) -> None:
        self.events.append(event)
        self.revision += 1

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events
