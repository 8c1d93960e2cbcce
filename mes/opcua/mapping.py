"""Pure mapping between what a tool says over OPC UA and what the MES does about it.

Models: OPC 40001-1 MachineryItemState and SEMI E30 control state onto SEMI E10 equipment
states; ISA-95 job order states (OPC 10031-4) with their E40 outcome onto the MES's job life
cycle (``mes.jobs.states``); tool alarms onto actions by a configurable table. No I/O here (a
test forbids sqlalchemy, fastapi and asyncua imports), so every rule is unit-tested alone.
"""

from __future__ import annotations

import enum
import fnmatch
import json
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mes.carriers.rules import SlotMapMismatch, compare_slot_maps, occupied_slots
from mes.equipment.states import DEFAULT_SUBSTATE, E10State

# The job result types live with the jobs (the layer below); re-exported here, where the
# adapter and the tests have always found them.
from mes.jobs.results import JobResult as JobResult
from mes.jobs.results import ProcessValueBuffer as ProcessValueBuffer
from mes.jobs.results import WaferReport as WaferReport
from mes.opcua.model import ControlState, JobState, JobSubstate, MachineryItemState

# --- E10 -------------------------------------------------------------------------------------

ALARM_SUBSTATE = "UDT.ALARM"
# Down states the tool itself caused (or the MES put on it for the tool's silence): the tool's
# own report that it is fine again ends them. Everything else people set (PM, engineering,
# non-scheduled time, repairs) stays until people change it.
TOOL_CAUSED = frozenset({ALARM_SUBSTATE, "UDT.NO_SIGNAL"})


@dataclass(frozen=True)
class E10Target:
    state: E10State
    substate: str
    reason: str


def e10_transition(
    item_state: str, current_state: E10State, current_substate: str
) -> E10Target | None:
    """The E10 change the tool's MachineryItemState calls for, or None.

    OutOfService → UDT.ALARM (from any up state). Executing and NotExecuting end a down state
    the tool caused (UDT.ALARM, UDT.NO_SIGNAL): Executing → PRD, NotExecuting → SBY. SBY↔PRD
    otherwise follows track-in and track-out, not the tool: a tool is PRD from the track-in on,
    before it starts executing, and between wafers it may briefly report NotExecuting.
    NotAvailable (no information) changes nothing.
    """
    try:
        state = MachineryItemState(item_state)
    except ValueError:
        return None
    if state is MachineryItemState.OUT_OF_SERVICE:
        if current_state in (E10State.PRD, E10State.SBY, E10State.ENG) or (
            current_substate == "UDT.NO_SIGNAL"
        ):
            return E10Target(E10State.UDT, ALARM_SUBSTATE, "tool reports OutOfService")
        return None
    if current_substate not in TOOL_CAUSED:
        return None
    if state is MachineryItemState.EXECUTING:
        return E10Target(E10State.PRD, DEFAULT_SUBSTATE[E10State.PRD], "tool executing again")
    if state is MachineryItemState.NOT_EXECUTING:
        return E10Target(E10State.SBY, DEFAULT_SUBSTATE[E10State.SBY], "tool available again")
    return None


# --- jobs ------------------------------------------------------------------------------------


class JobAction(enum.StrEnum):
    NONE = "none"  # stored, waiting: nothing for the MES to do
    CONFIRM = "confirm"  # Running: the track-in is confirmed
    PAUSED = "paused"  # Interrupted (Pause or a breaking alarm)
    COMPLETE = "complete"  # Ended Completed/Stopped: track the lot out with the wafers done
    CANCELLED = "cancelled"  # Ended Cancelled before it started: the lot goes back, untouched
    ABORT = "abort"  # Aborted: wafers in process were aborted; lot back to its step (hold)


def job_action(state: str, substate: str) -> JobAction:
    """What a job status event (ISA-95 JobState + E40 outcome) asks of the MES."""
    if state == JobState.RUNNING:
        return JobAction.CONFIRM
    if state == JobState.INTERRUPTED:
        return JobAction.PAUSED
    if state == JobState.ABORTED:
        return JobAction.ABORT
    if state == JobState.ENDED:
        if substate == JobSubstate.CANCELLED:
            return JobAction.CANCELLED
        return JobAction.COMPLETE
    return JobAction.NONE


def event_key(tool: str, job_order_id: str, state: str, sequence: int | str) -> str:
    """Idempotency key of a tool event, from the tool's own ids: a duplicated or replayed event
    carries the same job, state and Sequence, so it maps to the same key and is applied once."""
    return f"{tool}:{job_order_id}:{state}:{sequence}"[:128]


def parse_job_response(text: str) -> JobResult:
    """A JobResponse JSON (as the tool sends it in events and RequestJobResponseByJobOrderID).

    Strict: a field of the wrong type or out of range raises (TypeError, ValueError) instead
    of being coerced, so the caller quarantines the response rather than apply a guess."""
    data: Any = json.loads(text or "{}")
    if not isinstance(data, dict):
        raise ValueError("job response is not a JSON object")
    wafers_in = data.get("Wafers") or []
    if not isinstance(wafers_in, list) or len(wafers_in) > MAX_JOB_WAFERS:
        raise ValueError(f"job response Wafers must be a list of at most {MAX_JOB_WAFERS}")
    wafers = tuple(
        WaferReport(
            substrate_id=text_field(w.get("SubstrateID", ""), "SubstrateID", MAX_ID),
            slot=whole(w.get("Slot", 0), "Slot", 0, MAX_SLOT),
            state=text_field(w.get("State", ""), "State", MAX_ID),
            chamber=text_field(w.get("Chamber", ""), "Chamber", MAX_ID),
            measurements=finite(w.get("Measurements") or ()),
        )
        for w in wafers_in
        if isinstance(w, dict)
    )
    return JobResult(
        state=text_field(data.get("JobState", ""), "JobState", MAX_ID),
        substate=text_field(data.get("JobSubstate", ""), "JobSubstate", MAX_ID),
        wafers_processed=whole(
            data.get("WafersProcessed", 0), "WafersProcessed", 0, MAX_JOB_WAFERS
        ),
        wafers=wafers,
    )


# --- what a tool may send: the bounds the adapter holds its messages to ----------------------

MAX_SLOT = 50  # carrier slots (a FOUP has 25; 0 = no slot)
MAX_JOB_WAFERS = 1000  # wafers in one job order (batches of a few carriers)
MAX_ID = 128  # job order, substrate, lot ids, states
MAX_SEQUENCE = 2**53  # event Sequence (an integer a JSON reader keeps exact)
MAX_MEASUREMENTS = 10_000  # sites of one wafer
MAX_ALARM_TEXT = 1000  # longer alarm texts are cut (the alarm itself counts)


def whole(value: Any, what: str, low: int, high: int) -> int:
    """An integer field as the tool contract types it: no bool, no float, no numeric text."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__} {value!r:.60}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is out of range {low}..{high}")
    return value


def text_field(value: Any, what: str, max_len: int, *, cut: bool = False) -> str:
    """A string field (missing = ""): another type is refused; too long is refused or cut."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__} {value!r:.60}")
    if len(value) > max_len:
        if cut:
            return value[:max_len]
        raise ValueError(f"{what} is {len(value)} characters long, at most {max_len}")
    return value


def known_value(value: Any, what: str, allowed: type[enum.StrEnum]) -> str:
    """A state the contract enumerates: anything else is refused, not read as 'no change'."""
    text = text_field(value, what, MAX_ID)
    if text not in {v.value for v in allowed}:
        raise ValueError(f"{what} {text!r:.60} is not one of {sorted(v.value for v in allowed)}")
    return text


def value_problem(name: str, value: Any, process_values: frozenset[str]) -> str | None:
    """Why a variable's new value breaks the tool contract (None: it is fine). Only the values
    the MES acts on are checked: the item and control states, the current job and substrate
    (process values are filed under them) and the process values (finite numbers)."""
    try:
        if name == "ItemState":
            known_value(value, name, MachineryItemState)
        elif name == "ControlState":
            known_value(value, name, ControlState)
        elif name in ("CurrentJobOrderId", "CurrentSubstrateId"):
            text_field(value, name, MAX_ID)
        elif name in process_values and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return f"process value {name} must be a finite number, got {value!r:.60}"
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def tool_recipe_id(recipe_name: str, version: int) -> str:
    """The recipe id a version is downloaded under: name and version, so a tool can hold
    several versions and the MES can tell which one it selects."""
    return f"{recipe_name}@{version}"


@dataclass(frozen=True)
class JobOrderLot:
    """One lot of a job order: its code, carrier and (slot, scribe id) of each wafer."""

    lot: str
    carrier: str | None
    wafers: Sequence[tuple[int, str]]


def job_order_document(
    job_order_id: str,
    recipe_id: str,
    lots: Sequence[JobOrderLot],
    chambers: Sequence[str] = (),
) -> str:
    """The JobOrder JSON of StoreAndStart (``model`` documents the shape): per lot, in batch
    order, the slots and scribe ids of its wafers; ``chambers``: the only chambers the tool may
    run them in (those checked at track-in), left out when there are none."""
    return json.dumps(
        {
            "JobOrderID": job_order_id,
            "WorkMasterID": recipe_id,
            "Lots": [
                {
                    "LotID": lot.lot,
                    "CarrierID": lot.carrier or "",
                    "Slots": [slot for slot, _ in lot.wafers],
                    "SubstrateIDs": [scribe for _, scribe in lot.wafers],
                }
                for lot in lots
            ],
            **({"Chambers": list(chambers)} if chambers else {}),
        },
        separators=(",", ":"),
    )


def job_chambers(per_lot: Sequence[Sequence[str]]) -> tuple[str, ...] | None:
    """The chambers a job order may run in: those every lot was checked for at track-in (a
    lot with none recorded does not narrow them; ``()``: no lot named any, so any chamber).
    ``None`` when the lots share none: the job cannot run as one order."""
    named = [lot for lot in per_lot if lot]
    if not named:
        return ()
    shared = [c for c in named[0] if all(c in lot for lot in named[1:])]
    return tuple(shared) or None


def carriers_on_ports(report: str) -> dict[str, frozenset[int]]:
    """The carriers a tool reports on its load ports (``model.LOAD_PORTS``) and the slots its
    mapper found occupied. ValueError: the report cannot be read."""
    try:
        ports = json.loads(report)
        found: dict[str, frozenset[int]] = {}
        for port in ports:
            carrier = str(port["CarrierID"])
            if carrier:
                found[carrier] = occupied_slots([str(s) for s in port["SlotMap"]])
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"unreadable load-port report: {exc}") from exc
    return found


def slot_map_mismatches(
    expected: dict[str, frozenset[int]], reported: dict[str, frozenset[int]]
) -> list[SlotMapMismatch]:
    """Each carrier of the job that the tool has on a port and maps differently from the MES
    (``expected``: carrier -> the slots the MES holds wafers in). A carrier not on a port is
    not checked: the tool has not read it (the load-port operations are optional)."""
    found = []
    for carrier in sorted(expected):
        if carrier in reported:
            mismatch = compare_slot_maps(carrier, expected[carrier], reported[carrier])
            if mismatch is not None:
                found.append(mismatch)
    return found


# --- alarms ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmRule:
    """What to do when an alarm whose code matches ``pattern`` (fnmatch) is raised.

    ``breaking`` restricts the rule to breaking (True) or non-breaking (False) alarms; None
    matches both. ``min_severity`` likewise. The first matching rule wins.
    """

    pattern: str = "*"
    breaking: bool | None = None
    min_severity: int = 0
    udt: bool = False  # put the tool into UDT.ALARM
    abort_job: bool = False  # abort the running job on the tool (its lot goes back to its step)
    hold_lot: bool = False  # hold the lot on the tool (code EQUIPMENT)


# Default: a breaking alarm takes the tool down and aborts the job, whose lot goes back to its
# step on hold (the wafers in process were aborted); other alarms are only recorded.
DEFAULT_ALARM_RULES: tuple[AlarmRule, ...] = (
    AlarmRule(pattern="*", breaking=True, udt=True, abort_job=True, hold_lot=True),
)


def parse_alarm_rules(text: str | None) -> tuple[AlarmRule, ...]:
    """Rules from a JSON list of objects with AlarmRule's fields (``MES_ALARM_RULES``)."""
    if not text:
        return DEFAULT_ALARM_RULES
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("alarm rules must be a JSON list")
    fields = set(AlarmRule.__dataclass_fields__)
    rules = []
    for item in data:
        if not isinstance(item, dict) or not set(item) <= fields:
            raise ValueError(f"bad alarm rule {item!r}: fields are {sorted(fields)}")
        rules.append(AlarmRule(**item))
    return tuple(rules)


def alarm_rule(
    code: str, *, breaking: bool, severity: int, rules: Sequence[AlarmRule]
) -> AlarmRule | None:
    for rule in rules:
        if rule.breaking is not None and rule.breaking != breaking:
            continue
        if severity < rule.min_severity or not fnmatch.fnmatchcase(code, rule.pattern):
            continue
        return rule
    return None


# --- process values --------------------------------------------------------------------------


def parse_patterns(text: str) -> tuple[str, ...]:
    """``"Chamber*, RfForwardPower"`` → the glob patterns (empty text: none)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def selected_process_values(names: Iterable[str], patterns: Sequence[str]) -> frozenset[str]:
    """The tool's ProcessData variables the adapter keeps: those matching a pattern
    (case-sensitive globs, as OPC UA browse names are)."""
    return frozenset(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))


# --- sharding --------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"0/2"`` → (0, 2): this adapter takes the tools whose shard is 0 of 2."""
    index, _, count = text.partition("/")
    i, n = int(index), int(count or "1")
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {text!r} is not i/n with 0 <= i < n")
    return i, n


def shard_of(tool_code: str, shards: int) -> int:
    """A stable shard for a tool (CRC-32 of its code: the same in every process and release)."""
    return zlib.crc32(tool_code.encode()) % shards


# --- what a tool sends (plain data, filled in by the client) ---------------------------------


@dataclass(frozen=True)
class JobEvent:
    job_order_id: str
    state: str
    substate: str
    response: str
    sequence: int
    at: datetime


@dataclass(frozen=True)
class SubstrateEvent:
    job_order_id: str
    lot_id: str
    substrate_id: str
    slot: int
    chamber: str
    state: str
    measurements: tuple[float, ...]
    sequence: int
    at: datetime


@dataclass(frozen=True)
class AlarmEvent:
    code: str
    text: str
    severity: int
    breaking: bool
    active: bool
    acked: bool
    at: datetime


@dataclass(frozen=True)
class ValueChange:
    name: str  # browse name of the variable (CurrentState of the item state is "ItemState")
    value: Any
    at: datetime


def finite(values: Any) -> tuple[float, ...]:
    """Measured values as floats, refusing NaN and infinities: a tool that sends them is
    broken, and neither JSON nor a control chart can hold them. Numbers only (no text that
    looks like one, no booleans), and at most ``MAX_MEASUREMENTS`` of them."""
    items = values if isinstance(values, list | tuple) else [values]
    if len(items) > MAX_MEASUREMENTS:
        raise ValueError(f"{len(items)} measurements, at most {MAX_MEASUREMENTS}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in items):
        raise TypeError(f"measurements must be numbers, got {list(items)[:5]!r:.120}")
    floats = tuple(float(v) for v in items)
    if not all(math.isfinite(v) for v in floats):
        raise ValueError(f"measurements must be finite numbers, got {list(floats)[:10]}")
    return floats


@dataclass(frozen=True)
class Unreadable:
    """A message from the tool the MES refused at the edge: kept in quarantine, not applied."""

    kind: str
    payload: str
    error: str
    at: datetime
    sequence: int | None = None  # its Sequence, if that much could be read (counts as seen)


@dataclass(frozen=True)
class AlarmRefresh:
    """The start or end of a ConditionRefresh: between them the tool replays every alarm it
    still retains, so an alarm the MES has open and the tool did not replay is gone."""

    end: bool
    at: datetime


ToolEvent = JobEvent | SubstrateEvent | AlarmEvent | AlarmRefresh | Unreadable | ValueChange
