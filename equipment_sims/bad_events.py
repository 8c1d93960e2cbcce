"""Faults that make a simulated tool break its own contract: events and values of the wrong
type or out of range, events out of order or lost on the way, and floods of alarms.

What a host must survive from a tool with a firmware bug or a bad network: the MES adapter is
tested against these (tests/opcua/test_tool_bad_input.py). A mixin of ``SimServer`` (through
``FaultInjection``); each fault is called by name like the others.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from asyncua import ua
from asyncua.server.event_generator import EventGenerator

from mes.opcua import model as m

from .address_space import S
from .clock import SimClock
from .publishing import Publisher
from .records import Alarm
from .tool import Tool

# send_bad_event kinds: (which event or variable, what is wrong with it)
BAD_EVENTS = (
    "job_sequence_text",  # a job event whose Sequence is a String
    "job_unknown_state",  # JobState "Exploded"
    "job_unknown_job",  # a well-formed Ended event for a job order nobody sent
    "job_wafers_out_of_range",  # the next job end reports WafersProcessed 9999
    "substrate_slot_text",  # a substrate event whose Slot is a String
    "substrate_slot_out_of_range",  # Slot 9999
    "substrate_unknown_wafer",  # a wafer that is not in the job
    "alarm_severity_text",  # an alarm whose Severity is a String
    "alarm_severity_out_of_range",  # Severity 5000 (OPC UA allows 1..1000)
    "item_state_number",  # MachineryItemState published as the Int32 42
    "control_state_unknown",  # control state "Sideways"
    "process_value_text",  # a process value published as a String
    "process_value_nan",  # a process value published as NaN
)


class BadEvents:
    """Bad-input faults; state declared here, owned by ``SimServer``."""

    tool: Tool
    clock: SimClock
    publisher: Publisher
    _lock: asyncio.Lock

    if TYPE_CHECKING:

        async def command(self, action: Any, *, slow: bool = True) -> Any: ...

    async def send_bad_event(self, kind: str, job_order_id: str = "") -> None:
        """Send one message that breaks the tool contract (``BAD_EVENTS``). ``job_order_id``:
        the job it names (default: the current or last job)."""
        if kind not in BAD_EVENTS:
            raise ValueError(f"unknown bad event {kind!r}; one of {', '.join(BAD_EVENTS)}")
        async with self._lock:
            await self._send_bad(kind, job_order_id or self._some_job())

    def _some_job(self) -> str:
        job = self.tool.current_job
        if job is not None:
            return job.job_order_id
        return next(reversed(self.tool.jobs), "") if self.tool.jobs else ""

    async def _send_bad(self, kind: str, job: str) -> None:
        pub, space = self.publisher, self.publisher.target.space
        at = self.clock.datetime()
        seq = pub.seq + 1  # a well-formed event would carry the next Sequence
        job_fields: dict[str, Any] = {
            "JobOrderID": job,
            "JobState": m.JobState.RUNNING.value,
            "JobSubstate": m.JobSubstate.PROCESSING.value,
            "JobResponse": "{}",
            m.EVENT_SEQUENCE: seq,
        }
        wafer = {
            "JobOrderID": job,
            "LotID": "",
            "SubstrateID": "",
            "Slot": 1,
            "Chamber": "",
            "SubstrateState": m.SubstrateState.PROCESSED.value,
            "Measurements": [],
            m.EVENT_SEQUENCE: seq,
        }
        the_job = self.tool.jobs.get(job)
        if the_job is not None and the_job.wafers:
            w = the_job.wafers[0]
            wafer |= {"LotID": w.lot_id, "SubstrateID": w.substrate_id, "Slot": w.slot}
        if kind == "job_sequence_text":
            await _trigger(space.job_events, job_fields, {m.EVENT_SEQUENCE: "seven"}, at)
        elif kind == "job_unknown_state":
            # Refused where it is read, so it never counts in the Sequence (nor do the others
            # refused there): only events a host can read use a Sequence number up.
            await _trigger(space.job_events, job_fields | {"JobState": "Exploded"}, {}, at)
        elif kind == "job_unknown_job":
            ended = {
                "JobOrderID": "NO-SUCH-JOB",
                "JobState": m.JobState.ENDED.value,
                "JobSubstate": m.JobSubstate.COMPLETED.value,
            }
            await _trigger(space.job_events, job_fields | ended, {}, at)
            pub.seq = seq
        elif kind == "job_wafers_out_of_range":
            pub.misreport_wafers = 9999  # the job's own end event will say so
        elif kind == "substrate_slot_text":
            await _trigger(space.substrate_events, wafer, {"Slot": "seven"}, at)
        elif kind == "substrate_slot_out_of_range":
            await _trigger(space.substrate_events, wafer | {"Slot": 9999}, {}, at)
        elif kind == "substrate_unknown_wafer":
            await _trigger(space.substrate_events, wafer | {"SubstrateID": "GHOST-01"}, {}, at)
            pub.seq = seq
        elif kind in ("alarm_severity_text", "alarm_severity_out_of_range"):
            alarm = Alarm("BAD-SEVERITY", "an alarm with a bad severity", 500, False, raised_at=0)
            await pub.publish_alarm_with(
                alarm, at, {"Severity": ("high", S) if kind == "alarm_severity_text" else 5000}
            )
        elif kind == "item_state_number":
            await pub.notify_wrong_type("ItemState/CurrentState", 42, ua.VariantType.Int32, at)
        elif kind == "control_state_unknown":
            await pub.write("Control/State", "Sideways", S, at)
        else:  # process values
            _step, _name, values = self.tool.process_values()
            name = sorted(values)[0]
            path = f"ProcessData/{name}"
            if kind == "process_value_text":
                await pub.notify_wrong_type(path, "hot", S, at)
            else:
                await pub.write(path, float("nan"), ua.VariantType.Double, at, force=True)

    async def resend_job_event(self, back: int = 2) -> None:
        """Send an older job status event again under a new Sequence (out of order: the tool
        reports a state the job has left, as a well-formed new event)."""
        async with self._lock:
            pub = self.publisher
            if not 1 <= back <= len(pub.job_history):
                raise ValueError(f"no job event {back} back")
            old = pub.job_history[-back]
            fields = dict(old["fields"]) | {m.EVENT_SEQUENCE: pub.seq + 1}
            pub.seq += 1
            await _trigger(pub.target.space.job_events, fields, {}, self.clock.datetime())

    async def lose_events(self, count: int = 1) -> None:
        """The next ``count`` job/substrate events are lost on the way (their Sequence numbers
        are used up, so a host can see the gap); the tool itself goes on as usual."""
        if count < 0:
            raise ValueError("count must not be negative")
        self.publisher.lose_next = int(count)

    async def flood_alarms(self, count: int = 1000, codes: int = 10) -> None:
        """Raise and clear ``count`` alarm events as fast as the server takes them, cycling
        through ``codes`` alarm ids (a chattering sensor); every alarm is clear at the end."""
        if count < 0 or codes < 1:
            raise ValueError("count must not be negative and codes at least 1")

        def chatter() -> None:
            for i in range(count):
                alarm_id = f"FLOOD-{i % codes}"
                if alarm_id in self.tool.alarms:
                    self.tool.clear_alarm(alarm_id)
                else:
                    self.tool.raise_alarm(alarm_id, "flooding alarm", severity=300, breaking=False)
            for alarm_id in [a for a in self.tool.alarms if a.startswith("FLOOD-")]:
                self.tool.clear_alarm(alarm_id)

        await self.command(chatter, slow=False)


async def _trigger(
    gen: EventGenerator,
    fields: dict[str, Any],
    wrong: dict[str, Any],
    at: Any,
) -> None:
    """Trigger an event whose ``wrong`` fields go out as Strings, whatever their declared
    type (then put back: the generator's event is reused by the good events)."""
    types = dict(gen.event.data_types)
    try:
        for name, value in fields.items():
            setattr(gen.event, name, value)
        for name, value in wrong.items():
            setattr(gen.event, name, value)
            gen.event.data_types[name] = S
        await gen.trigger(time_attr=at, message="bad event")
    finally:
        gen.event.data_types.clear()
        gen.event.data_types.update(types)
