"""What a simulated tool does by itself, as a plain state machine (no OPC UA, no asyncio).

The engine holds the tool's state (recipes, jobs, stations, alarms, counters) and plays it over
time: stations process wafers step by step, chambers go down and up, alarms interrupt the
running job. ``tool.Tool`` adds the host commands on top, with the checks that refuse them.

Time is passed in (simulated seconds): ``advance(now)`` plays every completion due up to ``now``
at its own time, so the outcome does not depend on how often the caller ticks. Every change is
appended to ``events`` (drained by the server layer).

Simplifications: one job runs at a time; a wafer in a chamber that goes down is aborted; Pause
and a breaking alarm let wafers already in process finish but start no new ones; Stop finishes
wafers in process and skips the rest.
"""

from __future__ import annotations

import json
import random

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
from .recipes import Recipe, Step, batch_steps, wafer_steps
from .records import (
    FINAL_JOB_STATES,
    Alarm,
    AlarmEvent,
    ChamberEvent,
    Event,
    Job,
    JobEvent,
    Refused,
    Station,
    SubstrateEvent,
    Wafer,
    known,
)
from .spec import ToolSpec


class ToolEngine:
    """A tool's state and what it does by itself; ``Tool`` is the class to use."""

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
        # The carriers on the load ports as the port's mapper reads them: port -> (carrier id,
        # occupied slots). The physical world's doing (fault API ``place_carrier``), not the
        # host's: the host only compares what the tool reports with what it believes.
        self.docked: dict[int, tuple[str, frozenset[int]]] = {}
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
    def breaking_alarm_active(self) -> bool:
        return any(a.active and a.breaking for a in self.alarms.values())

    @property
    def item_state(self) -> MachineryItemState:
        if self.breaking_alarm_active:
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

    def load_ports_report(self) -> str:
        """The load ports as JSON: per port its id, the carrier id read there ("" when empty)
        and its slot map ("Occupied" or "" per slot)."""
        ports = []
        for port in range(1, self.spec.load_ports + 1):
            carrier, slots = self.docked.get(port, ("", frozenset()))
            slot_map = ["Occupied" if n in slots else "" for n in range(1, self.spec.slots + 1)]
            ports.append(
                {"PortID": port, "CarrierID": carrier, "SlotMap": slot_map if carrier else []}
            )
        return json.dumps(ports)

    def place_carrier(self, port: int, carrier_id: str, slots: list[int]) -> None:
        if not 1 <= port <= self.spec.load_ports:
            raise Refused("invalid", f"no load port {port}")
        if port in self.docked:
            raise Refused("wrong_state", f"load port {port} holds {self.docked[port][0]}")
        if not carrier_id or not all(1 <= s <= self.spec.slots for s in slots):
            raise Refused("invalid", "a carrier id and slots 1..slots")
        self.docked[port] = (carrier_id, frozenset(slots))

    def remove_carrier(self, port: int) -> None:
        if self.docked.pop(port, None) is None:
            raise Refused("wrong_state", f"load port {port} is empty")

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

    def _recipe(self, recipe_id: str) -> Recipe:
        return known(self.recipes, recipe_id, f"no recipe {recipe_id!r} on {self.spec.tool_id}")

    # --- starting and ending jobs ---------------------------------------------------------------
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
        # Only the chambers the job order names (if it names any) run its wafers.
        idle = [
            s
            for s in self.stations.values()
            if s.state is ChamberState.IDLE and (not job.chambers or s.name in job.chambers)
        ]
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
        return known(self.stations, name, f"no chamber {name!r} on {self.spec.tool_id}")

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
        return known(self.alarms, alarm_id, f"no alarm {alarm_id!r}")

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
