"""What a simulated tool keeps and reports: job orders (and their parsing from JSON), wafers,
chambers (stations), alarms, and the events the tool emits (drained by the server layer).

Job states follow ISA-95 job orders with the SEMI E40 outcome as a substate; wafer states follow
SEMI E90 substrate processing. Plain data: the behaviour is in ``tool``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mes.opcua.model import ChamberState, JobState, JobSubstate, SubstrateState

from .recipes import Step

FINAL_JOB_STATES = (JobState.ENDED, JobState.ABORTED)


T = TypeVar("T")


class Refused(Exception):
    """A command the tool refuses; ``reason`` is a key of ``model.REFUSAL_STATUS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def known(items: Mapping[str, T], key: str, message: str) -> T:
    """``items[key]``, refused as unknown (saying ``message``) when there is no such key."""
    if key not in items:
        raise Refused("unknown", message)
    return items[key]


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
    # The chambers the job may run in (the job order's ``Chambers``); empty: any.
    chambers: tuple[str, ...] = ()

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


def parse_job_order(
    text: str, *, slot_count: int, recipe_ids: Collection[str], selected_recipe: str, now: float
) -> Job:
    """A stored job order (state and substate from whether its recipe is on the tool)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refused("invalid", f"job order is not JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("JobOrderID"), str):
        raise Refused("invalid", "job order needs a JobOrderID")
    job_id = data["JobOrderID"]
    recipe_id = data.get("WorkMasterID") or selected_recipe
    if not isinstance(recipe_id, str) or not recipe_id:
        raise Refused("invalid", "job order names no recipe and none is selected")
    lots = data.get("Lots")
    if not isinstance(lots, list) or not lots:
        raise Refused("invalid", "job order needs at least one lot")
    wafers: list[Wafer] = []
    for lot in lots:
        if not isinstance(lot, dict) or not isinstance(lot.get("LotID"), str):
            raise Refused("invalid", "each lot needs a LotID")
        slots = lot.get("Slots", list(range(1, slot_count + 1)))
        ids = lot.get("SubstrateIDs") or [f"{lot['LotID']}.{s:02d}" for s in slots]
        if (
            not isinstance(slots, list)
            or not all(isinstance(s, int) and 1 <= s <= slot_count for s in slots)
            or len(set(slots)) != len(slots)
            or len(ids) != len(slots)
        ):
            raise Refused("invalid", f"bad slots for lot {lot['LotID']}")
        wafers += [Wafer(lot["LotID"], s, str(i)) for s, i in zip(slots, ids, strict=True)]
    chambers = data.get("Chambers", [])
    if not isinstance(chambers, list) or not all(isinstance(c, str) and c for c in chambers):
        raise Refused("invalid", "Chambers must be a list of chamber names")
    ready = recipe_id in recipe_ids
    return Job(
        job_order_id=job_id,
        recipe_id=recipe_id,
        lots=lots,
        wafers=wafers,
        state=JobState.ALLOWED_TO_START if ready else JobState.NOT_ALLOWED_TO_START,
        substate=JobSubstate.READY if ready else JobSubstate.WAITING,
        stored_at=now,
        chambers=tuple(dict.fromkeys(chambers)),
    )
