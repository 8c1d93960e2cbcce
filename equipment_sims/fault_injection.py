"""The fault-injection API of a simulated tool, and the random faults drawn by ``faults``.

A mixin of ``SimServer``: ``InjectFault`` (the OPC UA method), the CLI and the tests call the
faults by name through ``inject``; the random faults call the same methods. The faults that
take the server itself down (``drop_connection``, ``restart``) live in ``server``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mes.opcua.model import ControlState, ProcessingKind

from .bad_events import BadEvents
from .clock import SimClock
from .faults import FaultSchedule
from .publishing import Publisher
from .records import Refused
from .spec import ToolSpec
from .tool import Tool

log = logging.getLogger(__name__)


class FaultInjection(BadEvents):
    """Faults by name; mixed into ``SimServer``, whose state it declares here."""

    spec: ToolSpec
    clock: SimClock
    tool: Tool
    publisher: Publisher
    faults: FaultSchedule
    fault_log: list[tuple[float, str]]  # random faults so far (sim time, kind)
    reply_delay: float  # real seconds every method reply waits (fault: slow_replies)
    lost_replies: int  # job commands carried out but answered BadTimeout (fault: lose_replies)
    _lock: asyncio.Lock
    _silent_until: float | None  # real monotonic time; inf = until told
    _restarting: bool
    _recoveries: list[tuple[float, str, Callable[[], Awaitable[None]]]]

    if TYPE_CHECKING:

        async def command(self, action: Callable[[], Any], *, slow: bool = True) -> Any: ...

        def spawn(self, coro: Awaitable[Any]) -> None: ...

        async def drop_connection(self, seconds: float = 5.0) -> None: ...

        async def restart(self, down_s: float = 1.0) -> None: ...

    FAULTS = (
        "drop_connection",
        "go_silent",
        "resume_updates",
        "raise_alarm",
        "clear_alarm",
        "chamber_down",
        "chamber_up",
        "duplicate_job_event",
        "replay_job_event",
        "corrupt_checksums",
        "abort_job",
        "set_control_state",
        "set_drift",
        "shift_mean",
        "breakdown",
        "reject_downloads",
        "slow_replies",
        "lose_replies",
        "restart",
        "place_carrier",
        "remove_carrier",
        # tool-side bad input (bad_events)
        "send_bad_event",
        "resend_job_event",
        "lose_events",
        "flood_alarms",
    )

    def check_fault(self, fault: str, **kwargs: Any) -> None:
        """Raise KeyError for an unknown fault, TypeError for arguments it does not take."""
        if fault not in self.FAULTS:
            raise KeyError(f"unknown fault {fault!r}")
        inspect.signature(getattr(self, fault)).bind(**kwargs)

    async def inject(self, fault: str, **kwargs: Any) -> None:
        """Trigger a fault by name (what ``InjectFault`` and the CLI call)."""
        self.check_fault(fault, **kwargs)
        await getattr(self, fault)(**kwargs)

    async def go_silent(self, seconds: float | None = None) -> None:
        """Stop updating values and sending events while staying connected.

        What happens meanwhile is held back and published when the silence ends (after
        ``seconds`` real seconds, or at ``resume_updates``).
        """
        loop = asyncio.get_running_loop()
        self._silent_until = float("inf") if seconds is None else loop.time() + seconds

    async def resume_updates(self) -> None:
        self._silent_until = None

    async def raise_alarm(
        self, alarm_id: str, text: str = "", severity: int = 500, breaking: bool = False
    ) -> None:
        await self._fault(
            lambda: self.tool.raise_alarm(
                alarm_id, text or alarm_id, severity=severity, breaking=breaking
            )
        )

    async def clear_alarm(self, alarm_id: str) -> None:
        await self._fault(lambda: self.tool.clear_alarm(alarm_id))

    async def chamber_down(self, chamber: str) -> None:
        await self._fault(lambda: self.tool.chamber_down(chamber))

    async def chamber_up(self, chamber: str) -> None:
        await self._fault(lambda: self.tool.chamber_up(chamber))

    async def duplicate_job_event(self) -> None:
        """Send the last job status event again, same Sequence (an at-least-once delivery)."""
        await self.replay_job_event(back=1)

    async def replay_job_event(self, back: int = 2) -> None:
        """Send an older job status event again (``back`` = 1 is the last one)."""
        async with self._lock:
            await self.publisher.replay_job_event(back)

    async def corrupt_checksums(self, on: bool = True) -> None:
        self.tool.corrupt_checksums = on
        await self._fault(lambda: None)

    async def abort_job(self, job_order_id: str = "") -> None:
        """The tool aborts a job by itself (as after an interlock), whatever the control state."""

        def abort() -> None:
            job = self.tool.jobs.get(job_order_id) if job_order_id else self.tool.current_job
            if job is None:
                raise Refused("unknown", "no such running job")
            self.tool.fault_abort(job)

        await self._fault(abort)

    async def set_control_state(self, state: str) -> None:
        await self._fault(lambda: self.tool.set_control_state(ControlState(state)))

    async def set_drift(self, per_wafer: float) -> None:
        """Metrology results drift by ``per_wafer`` for each wafer measured from now on (a
        trend); 0 stops the trend where it got to."""
        self.tool.measurement.start_drift(float(per_wafer))

    async def shift_mean(self, offset: float) -> None:
        """Metrology results shift by ``offset`` from the next wafer on (a step change, as
        after a bad calibration); 0 takes the shift back."""
        self.tool.measurement.offset = float(offset)

    async def breakdown(self, alarm_id: str = "BREAKDOWN", text: str = "") -> None:
        """The tool breaks down mid-job: the job is Aborted, the tool OutOfService with a
        breaking alarm. ``clear_alarm(alarm_id)`` is the repair."""
        await self._fault(lambda: self.tool.breakdown(alarm_id, text or "Tool breakdown"))

    async def reject_downloads(self, count: int = -1, reason: str = "checksum") -> None:
        """Refuse the next ``count`` recipe downloads (-1: every one; 0: stop refusing):
        ``reason`` "checksum" (BadInvalidArgument) or "range" (BadOutOfRange)."""
        if reason not in ("checksum", "range"):
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.tool.rejected_downloads = int(count)
        self.tool.rejection_reason = reason

    async def slow_replies(self, seconds: float = 2.0) -> None:
        """Every host method call waits ``seconds`` (real) before it is served; 0 ends it."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self.reply_delay = float(seconds)

    async def lose_replies(self, count: int = 1) -> None:
        """The next ``count`` job commands are carried out, but their answer is lost on the
        way: the caller gets BadTimeout and cannot know the job started (0 ends it)."""
        if count < 0:
            raise ValueError("count must not be negative")
        self.lost_replies = int(count)

    async def place_carrier(self, port: int, carrier_id: str, slots: list[int]) -> None:
        """A carrier arrives on load port ``port`` and the mapper finds wafers in ``slots``
        (the physical world: the host compares this with the slot map it holds)."""
        await self._fault(lambda: self.tool.place_carrier(int(port), str(carrier_id), list(slots)))

    async def remove_carrier(self, port: int) -> None:
        await self._fault(lambda: self.tool.remove_carrier(int(port)))

    async def _fault(self, action: Callable[[], Any]) -> Any:
        return await self.command(action, slow=False)

    # --- random faults ---------------------------------------------------------------------
    async def _fault_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self._restarting:
                continue
            now = self.clock.now()
            due = [r for r in self._recoveries if r[0] <= now]
            self._recoveries = [r for r in self._recoveries if r[0] > now]
            for _, what, recover in due:
                log.info("%s: random fault over: %s", self.spec.tool_id, what)
                self.spawn(recover())
            for occurrence in self.faults.due(now):
                self.fault_log.append((occurrence.at, occurrence.kind))
                log.info("%s: random fault %s", self.spec.tool_id, occurrence.kind)
                self.spawn(self._random_fault(occurrence.kind, occurrence.rng))

    def _recover_after(
        self, sim_s: float, what: str, recover: Callable[[], Awaitable[None]]
    ) -> None:
        self._recoveries.append((self.clock.now() + sim_s, what, recover))

    async def _random_fault(self, kind: str, rng: random.Random) -> None:
        n = len(self.fault_log)
        if kind == "alarm":
            alarm_id = f"RANDOM-{n}"
            await self.raise_alarm(alarm_id, "Random warning", severity=rng.randrange(200, 700))
            self._recover_after(rng.uniform(300, 1800), kind, lambda: self.clear_alarm(alarm_id))
        elif kind == "breakdown":
            alarm_id = f"BREAKDOWN-{n}"
            await self.breakdown(alarm_id, "Random breakdown")
            self._recover_after(rng.uniform(600, 3600), kind, lambda: self.clear_alarm(alarm_id))
        elif kind == "reject_download":
            await self.reject_downloads(1, rng.choice(("checksum", "range")))
        elif kind == "slow_replies":
            await self.slow_replies(rng.uniform(1.0, 4.0))
            self._recover_after(rng.uniform(300, 1800), kind, lambda: self.slow_replies(0))
        elif kind == "restart":
            await self.restart(rng.uniform(0.5, 2.0))
        elif kind in ("offline", "online_local"):
            state = ControlState.OFFLINE if kind == "offline" else ControlState.ONLINE_LOCAL
            await self.set_control_state(state.value)
            back = ControlState.ONLINE_REMOTE.value
            self._recover_after(rng.uniform(300, 1800), kind, lambda: self.set_control_state(back))
        elif kind == "drop_connection":
            await self.drop_connection(rng.uniform(1.0, 5.0))
        elif kind == "chamber_down" and self.spec.kind is ProcessingKind.CLUSTER:
            chamber = rng.choice(self.spec.chambers)
            await self.chamber_down(chamber)
            self._recover_after(rng.uniform(600, 3600), kind, lambda: self.chamber_up(chamber))
