"""SEMI E94 control job / E40 process job life cycle, reduced to what the MES tracks.

The MES keeps one ``equipment_job`` per job order it sends to a tool. The row is also the
outbox: it is written (``requested``) in the transaction of the track-in and moved to ``sent``
in a transaction of its own, committed *before* the adapter calls StoreAndStart. A job in
``sent`` is therefore one that may or may not have reached the tool, and only the tool can say
which (reconciliation asks it by job order id); it is never sent a second time.

::

    requested -> sent -> running <-> paused -> completed | aborted
        |          |        \\-> aborted
        \\-> failed \\-> failed (refused by the tool, or not found on it later)

E94 names: queued/selected (requested, sent), executing (running), paused, completed; E40's
aborted; ``failed`` is a job that never ran on the tool.
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    REQUESTED = "requested"  # written with the track-in; the adapter has not picked it up
    SENT = "sent"  # the adapter committed its intent to send; the tool may or may not have it
    RUNNING = "running"  # the tool reported the job Running
    PAUSED = "paused"  # Interrupted on the tool (operator pause or breaking alarm)
    COMPLETED = "completed"  # Ended; the lot was tracked out
    ABORTED = "aborted"  # Aborted on the tool (or lost with it); the lot went back to its step
    FAILED = "failed"  # never ran: refused by the tool, checksum mismatch, not found after a send


FINAL = frozenset({JobStatus.COMPLETED, JobStatus.ABORTED, JobStatus.FAILED})
ON_TOOL = frozenset({JobStatus.SENT, JobStatus.RUNNING, JobStatus.PAUSED})

_NEXT: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.REQUESTED: frozenset({JobStatus.SENT, JobStatus.FAILED, JobStatus.ABORTED}),
    JobStatus.SENT: frozenset(
        {
            JobStatus.RUNNING,
            JobStatus.PAUSED,
            JobStatus.COMPLETED,
            JobStatus.ABORTED,
            JobStatus.FAILED,
        }
    ),
    JobStatus.RUNNING: frozenset({JobStatus.PAUSED, JobStatus.COMPLETED, JobStatus.ABORTED}),
    JobStatus.PAUSED: frozenset({JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.ABORTED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.ABORTED: frozenset(),
    JobStatus.FAILED: frozenset(),
}


def can_move(current: JobStatus, target: JobStatus) -> bool:
    """Whether a job may go from ``current`` to ``target`` (a repeat of the same state is not a
    move: callers treat it as already applied)."""
    return target in _NEXT[current]


class JobCommand(enum.StrEnum):
    """Operator requests for a job on a tool, carried out by the adapter that owns the tool."""

    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"


def command_allowed(status: JobStatus, command: JobCommand) -> bool:
    if command is JobCommand.ABORT:
        return status not in FINAL
    if command is JobCommand.PAUSE:
        return status is JobStatus.RUNNING
    return status is JobStatus.PAUSED


def job_order_id(lot_code: str, step_sequence: int, attempt: int) -> str:
    """Deterministic job order id: the same lot, step and attempt always give the same id, so a
    retried request can never become a second job on the tool."""
    return f"{lot_code}-{step_sequence}-{attempt}"
