"""The adapter of one tool: connect, subscribe, resynchronise, apply events, send jobs.

Life of a session (repeated with backoff until the adapter is stopped):

1. connect and browse; subscribe to job, substrate and alarm events and to the watched
   variables *before* reading anything, so nothing that happens meanwhile is missed;
2. resynchronise before doing anything else: read the state variables (E10 from the item
   state), call ConditionRefresh (alarms come back as events), and reconcile every job the MES
   has on the tool by asking the tool for it by job order id;
3. then apply events in arrival order, one transaction each, and carry out the outbox (send
   requested jobs, operator commands) that the registry hands over.

A staleness watchdog probes the server when nothing has arrived for a while: no answer →
the session is dropped and rebuilt; an answer but still no notifications after
``stale_s`` → the connection is published as ``stale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asyncua import ua
from sqlalchemy.exc import DataError, IntegrityError

from mes.clock import Clock
from mes.db.engine import Database, outage_code
from mes.db.transaction import unit_of_work
from mes.errors import MesError
from mes.observability import instruments
from mes.opcua import mapping
from mes.opcua import service as opcua_service
from mes.opcua.client import Received, Security, ToolSession
from mes.opcua.models import ConnectionState
from mes.opcua.sending import JobSender
from mes.opcua.service import ToolRef

log = logging.getLogger(__name__)

# Errors that a message causes whenever it is applied (bad data, a refused rule), as opposed
# to transient ones (the database or the tool going away), which end the session and retry.
POISON = (MesError, ValueError, TypeError, ArithmeticError, DataError, IntegrityError)

CONNECTION_ERRORS = (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError, ua.UaError)


@dataclass(frozen=True)
class AdapterSettings:
    owner: str
    stale_s: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    timeout_s: float = 10.0
    publishing_ms: int = 200
    aborted_hold: bool = True
    alarm_rules: tuple[mapping.AlarmRule, ...] = mapping.DEFAULT_ALARM_RULES
    security: Security = field(default_factory=Security)
    process_values: tuple[str, ...] = ("*",)  # globs over ProcessData names; () none
    # Events waiting to be applied, at most: a flood beyond it drops the session, which is
    # rebuilt and re-reads the tool (memory stays bounded, nothing the tool did is lost).
    max_queued_events: int = 10_000


class ToolAdapter(JobSender):
    def __init__(
        self,
        db: Database,
        tool: ToolRef,
        settings: AdapterSettings,
        clock: Clock,
        setup_slots: asyncio.Semaphore | None = None,
        process_values: dict[str, mapping.ProcessValueBuffer] | None = None,
    ) -> None:
        self.db = db
        # Shared by a registry's adapters: how many sessions may be set up at once.
        self.setup_slots = setup_slots or asyncio.Semaphore(1)
        self.tool = tool
        self.settings = settings
        self.clock = clock
        self.state = ConnectionState.DISCONNECTED
        self.last_event_at: datetime | None = None
        self.last_error: str | None = None
        self.applied = 0
        self.sessions = 0  # sessions opened so far (a reconnect opens a new one)
        self.latencies: list[float] = []  # event receipt → commit, seconds (for the bench)
        self.work: asyncio.Queue[str] = asyncio.Queue()  # job order ids with outbox work
        self._events: asyncio.Queue[Received] = asyncio.Queue(settings.max_queued_events)
        self.events_lost = 0  # sessions dropped because events were lost (flood, gap)
        self.queue_high_water = 0  # most events ever waiting at once
        self._last_sequence: int | None = None  # of the job/substrate events this session
        self._loss_recorded = False  # this session's lost events are counted and alarmed
        self._bad_values: set[tuple[str, str]] = set()  # (variable, type) quarantined this session
        self._values: dict[str, Any] = {}
        # Process values per job, kept by the registry across adapters of the tool: an adapter
        # stopped when its lease ran out in a database outage leaves them to the next one.
        self._pv = process_values if process_values is not None else {}
        # Alarm codes the tool replays during a ConditionRefresh (None: no refresh under way).
        self._replayed: set[str] | None = None
        self._session: ToolSession | None = None
        self._pending_work: set[str] = set()

    # --- life cycle -----------------------------------------------------------------------
    async def run(self) -> None:
        backoff = self.settings.reconnect_min_s
        while True:
            try:
                await self._run_session()
                backoff = self.settings.reconnect_min_s
            except (asyncio.CancelledError, LeaseLost):
                await self._publish_quietly()
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                log.info("%s: session ended: %s", self.tool.code, self.last_error)
                await self._publish(ConnectionState.DISCONNECTED, self.last_error)
            _raise_if_cancelled()  # a library that turned our cancellation into an error
            await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    async def _publish_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(self._publish(ConnectionState.DISCONNECTED))

    def submit(self, job_order_id: str) -> None:
        """The registry found outbox work for this tool (a requested job or a command)."""
        if job_order_id not in self._pending_work:
            self._pending_work.add(job_order_id)
            self.work.put_nowait(job_order_id)

    async def _publish(self, state: ConnectionState, error: str | None = None) -> None:
        if state is self.state and error is None:
            return
        self.state = state
        try:
            async with unit_of_work(self.db) as session:
                await opcua_service.publish_connection(
                    session, self.tool.id, self.settings.owner, state, self.clock.now(), error
                )
        except Exception:
            log.exception("%s: could not publish connection state", self.tool.code)

    async def _run_session(self) -> None:
        # The last error stays visible while retrying: a refused certificate, say, would
        # otherwise flicker away at every attempt.
        await self._publish(ConnectionState.CONNECTING, self.last_error)
        self.sessions += 1
        self._events = asyncio.Queue(self.settings.max_queued_events)
        self._last_sequence = None
        self._bad_values = set()
        self._loss_recorded = False
        session = ToolSession(
            self.tool.endpoint,
            self.tool.code,
            self._events,
            timeout=self.settings.timeout_s,
            security=self.settings.security,
            publishing_ms=self.settings.publishing_ms,
            process_values=self.settings.process_values,
        )
        self._session = session
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that arrives as the connect finishes, and the adapter then never stops (seen: a
            # test run hung in teardown on an adapter "cancelling" in its backoff sleep).
            async with self.setup_slots:
                # The connect timeout starts once a slot is ours, not while queueing for one.
                async with asyncio.timeout(self.settings.timeout_s):
                    await session.connect()
                await session.subscribe()
                await self._resync(session)
            self.last_error = None
            await self._publish(ConnectionState.CONNECTED)
            await self._loop(session)
        finally:
            self._session = None
            await session.close()
            if session.dropped and not self._loss_recorded:
                # The session ended another way (a probe timed out in the flood, say) before
                # the loop saw the drops: they still count, and the next session resyncs.
                with contextlib.suppress(EventsLost):
                    await self._events_lost(f"{session.dropped} events dropped (an event flood)")

    # --- resynchronisation ----------------------------------------------------------------
    async def _resync(self, session: ToolSession) -> None:
        self._values = {}
        for name, value in (await session.snapshot()).items():
            problem = mapping.value_problem(name, value, session.process_value_names)
            if problem is None:
                self._values[name] = value
            else:  # kept out of the state the adapter works from, and quarantined
                await self._bad_value(mapping.ValueChange(name, value, self.clock.now()), problem)
        if "ItemState" in self._values:
            await self._apply(
                asyncio.get_running_loop().time(),
                mapping.ValueChange("ItemState", self._values["ItemState"], self.clock.now()),
            )
        if "ControlState" in self._values:
            await self._apply(
                asyncio.get_running_loop().time(),
                mapping.ValueChange("ControlState", self._values["ControlState"], self.clock.now()),
            )
        await session.condition_refresh()
        async with unit_of_work(self.db, write=False) as db_session:
            open_jobs = await opcua_service.open_job_ids(db_session, self.tool.id)
        for job_order_id, _status in open_jobs:
            try:
                found = await session.job_response(job_order_id)
            except (ValueError, TypeError) as exc:
                # An unreadable answer must not stop the resync (and with it the adapter): keep
                # it. With the job's state beside it, the job is settled as "nothing
                # processed" (an ended job's lot is held, as for an unreadable end event: its
                # end event may never come again); without, its own events settle it.
                await self._quarantine(
                    mapping.Unreadable(
                        "JobResponse", getattr(exc, "text", job_order_id), "", self.clock.now()
                    ),
                    exc,
                )
                state = getattr(exc, "state", None)
                if state is None:
                    continue
                found = mapping.JobResult(state, "", 0, ())
            async with unit_of_work(self.db) as db_session:
                opcua_service.bind_adapter(
                    db_session, self.tool, "opcua.reconcile", self.clock.now()
                )
                if not await opcua_service.owns(
                    db_session, self.tool.id, self.settings.owner, self.clock.now()
                ):
                    raise LeaseLost(self.tool.code)
                outcome = await opcua_service.reconcile_job(
                    db_session,
                    self.tool,
                    job_order_id,
                    found,
                    clock=self.clock,
                    aborted_hold=self.settings.aborted_hold,
                    pv=self._pv.get(job_order_id),
                )
            log.info("%s: reconciled %s: %s", self.tool.code, job_order_id, outcome)
            if not outcome.startswith(("confirm", "paused", "none")):
                self._pv.pop(job_order_id, None)  # settled: its values are written
        # Anything requested meanwhile (or before a restart) is outbox work again.
        async with unit_of_work(self.db, write=False) as db_session:
            for job in await opcua_service.work_for_tool(db_session, self.tool.id):
                self.submit(job.job_order_id)

    # --- main loop ------------------------------------------------------------------------
    async def _loop(self, session: ToolSession) -> None:
        loop = asyncio.get_running_loop()
        probe_every = max(min(self.settings.stale_s / 3, 2.0), 0.2)
        while True:
            await self._check(session)
            drained = 0
            while not self._events.empty() and drained < 500:
                await self._apply(*self._events.get_nowait())
                await self._check(session)
                drained += 1
            while not self.work.empty():
                job_order_id = self.work.get_nowait()
                self._pending_work.discard(job_order_id)
                await self._do_work(session, job_order_id)
            if drained:
                continue
            quiet = loop.time() - session.last_message_at
            if quiet > probe_every:
                await session.probe(self.settings.timeout_s)  # raises if the server is gone
                state = (
                    ConnectionState.STALE
                    if quiet > self.settings.stale_s
                    else ConnectionState.CONNECTED
                )
            else:
                state = ConnectionState.CONNECTED
            if self.state is ConnectionState.STALE and state is ConnectionState.CONNECTED:
                await self._publish(state)
                # The tool speaks again: its state now counts, as after a reconnect (this ends
                # a UDT.NO_SIGNAL the silence watchdog set meanwhile).
                await self._apply(
                    loop.time(),
                    mapping.ValueChange(
                        "ItemState", await session.read("ItemState"), self.clock.now()
                    ),
                )
            else:
                await self._publish(state)
            # Wait for the next event or piece of work, whichever comes first.
            getter = asyncio.ensure_future(self._events.get())
            worker = asyncio.ensure_future(self.work.get())
            done, pending = await asyncio.wait(
                {getter, worker}, timeout=probe_every, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if getter in done:
                await self._apply(*getter.result())
            if worker in done:
                job_order_id = worker.result()
                self._pending_work.discard(job_order_id)
                await self._do_work(session, job_order_id)

    async def _check(self, session: ToolSession) -> None:
        """End the session if it failed, or if events were dropped on the way in (a flood)."""
        self.queue_high_water = max(self.queue_high_water, session.high_water)
        if session.dropped:
            await self._events_lost(
                f"{session.dropped} events dropped: more than "
                f"{self.settings.max_queued_events} were waiting (an event flood)"
            )
        if session.failed is not None:
            raise session.failed

    async def _events_lost(self, why: str) -> None:
        """Events the tool sent were lost: raise the MES alarm, and end the session so that
        the next one re-reads everything (state, alarms, each open job by its order id)."""
        self.events_lost += 1
        self._loss_recorded = True
        log.warning("%s: %s; resynchronising", self.tool.code, why)
        try:
            async with unit_of_work(self.db) as session:
                now = self.clock.now()
                opcua_service.bind_adapter(session, self.tool, "opcua.events_lost", now)
                await opcua_service.raise_mes_alarm(
                    session,
                    self.tool,
                    opcua_service.EVENTS_LOST_ALARM,
                    f"events from the tool were lost ({why}); the adapter resynchronised",
                    clock=self.clock,
                )
        except Exception:  # the database may be what is away: the log says it, then resync
            log.exception("%s: could not record the lost events", self.tool.code)
        raise EventsLost(why)

    def _in_sequence(self, seq: int) -> bool:
        """Job and substrate events carry the tool's Sequence, one up per event. A jump means
        events were lost on the way (e.g. the server's queue overflowed in a flood): False.
        One at or below the last is a replay or out of order: the idempotency key and the job
        state machine decide what it may still change."""
        last = self._last_sequence
        if last is not None and seq > last + 1:
            return False
        if last is not None and seq <= last:
            log.info("%s: event %s arrived after %s (replayed or late)", self.tool.code, seq, last)
        self._last_sequence = seq if last is None else max(last, seq)
        return True

    async def _bad_value(self, change: mapping.ValueChange, problem: str) -> None:
        """A variable value that breaks the contract: quarantined once per variable and
        session and type of value (a bad sensor publishing at 10 Hz must not write 10 dead
        letters a second)."""
        key = (change.name, type(change.value).__name__)
        if key in self._bad_values:
            return
        self._bad_values.add(key)
        await self._quarantine(change, ValueError(problem))

    # --- applying events --------------------------------------------------------------------
    async def _apply(self, received: float, event: mapping.ToolEvent) -> None:
        if isinstance(event, mapping.ValueChange):
            names = self._session.process_value_names if self._session else frozenset()
            problem = mapping.value_problem(event.name, event.value, names)
            if problem is not None:
                await self._bad_value(event, problem)
                return
            if not self._on_value(event):
                return
        sequence = getattr(event, "sequence", None)
        if sequence is not None and not self._in_sequence(sequence):
            await self._events_lost(
                f"event Sequence jumped from {self._last_sequence} to {sequence}"
            )
        if isinstance(event, mapping.AlarmRefresh) and not event.end:
            self._replayed = set()  # collect what the tool replays until the end marker
            return
        if isinstance(event, mapping.AlarmEvent) and event.active and self._replayed is not None:
            self._replayed.add(event.code[:64])
        self.last_event_at = self.clock.now()
        kind = type(event).__name__
        try:
            applied = await self._apply_until_stored(event)
            done = "applied"
        except (asyncio.CancelledError, LeaseLost):
            raise
        except POISON as exc:
            # Deterministic: applying it again would fail again, and the adapter would stall
            # on it (reconnect, resync, same message...). Quarantine it and go on.
            applied = await self._quarantine(event, exc)
            done = "quarantined"
        if applied is None:
            return
        lag = asyncio.get_running_loop().time() - received
        instruments.tool_event(kind, done, lag)
        outcome = applied
        if isinstance(event, mapping.JobEvent) and event.state in ("Ended", "Aborted"):
            self._pv.pop(event.job_order_id, None)
        if isinstance(event, mapping.AlarmEvent) and "abort" in outcome:
            await self._queue_open_commands()
        self.applied += 1
        self.latencies.append(lag)
        if len(self.latencies) > 100_000:
            del self.latencies[:50_000]
        log.debug("%s: %s -> %s", self.tool.code, type(event).__name__, outcome)

    async def _apply_until_stored(self, event: mapping.ToolEvent) -> str | None:
        """Apply an event; while the database is unavailable, try the same event again (with
        backoff) instead of ending the tool session: what the tool sends meanwhile waits in
        order in the bounded queue (process values included), and a queue that overflows
        ends the session for a resynchronisation once the database is back."""
        delay = 0.2
        while True:
            try:
                return await self._apply_in_transaction(event)
            except Exception as exc:
                if outage_code(exc) is None or self._session is None:
                    raise
                self.last_error = f"database unavailable: {type(exc).__name__}"
                log.warning("%s: database unavailable, retrying in %.1f s", self.tool.code, delay)
            if self._session.dropped or self._session.failed is not None:
                await self._check(self._session)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _apply_in_transaction(self, event: mapping.ToolEvent) -> str | None:
        async with unit_of_work(self.db) as session:
            now = self.clock.now()
            opcua_service.bind_adapter(session, self.tool, "opcua.tool_event", now)
            if not await opcua_service.owns(session, self.tool.id, self.settings.owner, now):
                raise LeaseLost(self.tool.code)
            if isinstance(event, mapping.JobEvent):
                pv = self._pv.get(event.job_order_id)
                outcome = await opcua_service.apply_job_event(
                    session,
                    self.tool,
                    event,
                    clock=self.clock,
                    aborted_hold=self.settings.aborted_hold,
                    pv=pv,
                )
            elif isinstance(event, mapping.SubstrateEvent):
                outcome = await opcua_service.apply_substrate_event(
                    session, self.tool, event, clock=self.clock
                )
            elif isinstance(event, mapping.AlarmEvent):
                outcome = await opcua_service.apply_alarm(
                    session, self.tool, event, rules=self.settings.alarm_rules, clock=self.clock
                )
            elif isinstance(event, mapping.AlarmRefresh):
                if self._replayed is None:  # an end without a start: nothing to compare
                    return None
                closed = await opcua_service.close_unreported_alarms(
                    session, self.tool, self._replayed, clock=self.clock
                )
                self._replayed = None
                outcome = f"refresh done; closed {closed}" if closed else "refresh done"
            elif isinstance(event, mapping.Unreadable):
                outcome = await opcua_service.quarantine(
                    session,
                    self.tool,
                    kind=event.kind,
                    payload=event.payload,
                    error=event.error,
                    clock=self.clock,
                )
            elif event.name == "ControlState":
                outcome = await opcua_service.apply_control_state(
                    session, self.tool, str(event.value)
                )
            else:
                outcome = await opcua_service.apply_item_state(
                    session, self.tool, str(event.value), clock=self.clock
                )
        return outcome

    async def _quarantine(self, event: mapping.ToolEvent, exc: Exception) -> str:
        log.warning("%s: could not apply %s, quarantined: %s", self.tool.code, event, exc)
        # An unreadable message keeps what the tool sent under its own kind (a job response read
        # at resync must be filed as the end event's would be, not as "Unreadable").
        if isinstance(event, mapping.Unreadable):
            kind, payload = event.kind, event.payload
        else:
            kind, payload = type(event).__name__, repr(event)
        async with unit_of_work(self.db) as session:
            opcua_service.bind_adapter(session, self.tool, "opcua.quarantine", self.clock.now())
            return await opcua_service.quarantine(
                session,
                self.tool,
                kind=kind,
                payload=payload[:4000],
                error=f"{type(exc).__name__}: {exc}"[:2000],
                clock=self.clock,
            )

    def _on_value(self, change: mapping.ValueChange) -> bool:
        """Keep a value; True if it needs a transaction (only the item state does).

        Process values are summarised in memory per job and wafer and written when the job
        ends, in the transaction of its end event: one write per job, not one per sample.
        """
        self._values[change.name] = change.value
        if change.name in ("ItemState", "ControlState"):
            return True
        if self._session is not None and change.name in self._session.process_value_names:
            job = self._values.get("CurrentJobOrderId") or ""
            if job and isinstance(change.value, int | float):
                buffer = self._pv.setdefault(job, mapping.ProcessValueBuffer())
                buffer.add(
                    str(self._values.get("CurrentSubstrateId") or ""),
                    change.name,
                    float(change.value),
                    self.clock.now(),
                )
            self.applied += 1
        return False

    async def _queue_open_commands(self) -> None:
        async with unit_of_work(self.db, write=False) as session:
            for job in await opcua_service.work_for_tool(session, self.tool.id):
                self.submit(job.job_order_id)


def _raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class LeaseLost(Exception):
    """The adapter no longer holds the tool's lease: stop acting on the tool."""


class EventsLost(ConnectionError):
    """Events from the tool were lost (dropped in a flood, or a Sequence gap): the session
    ends and the next one resynchronises, as after a lost connection."""
