"""Checks that domains above the lots run inside every track-out, in its transaction.

Data collection and SPC (``mes.quality``) must see the values a lot brings off its tool before
the lot moves on, and must be able to refuse the track-out or hold the lot in the same
transaction; but the lots sit below quality in the layer order and cannot import it. So the
track-out calls the checks registered here: the composition roots (``create_app``, the CLI, the
tests) register quality's check once, as they install the audit recorder.

A check may write its own records and raise a ``MesError`` (the whole track-out is refused and
rolled back); the holds it returns keep the lot at its step, held, instead of moving on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mes.equipment.models import Equipment
from mes.lots.commands import TrackOut
from mes.lots.models import Lot
from mes.lots.rules import StepView


@dataclass(frozen=True)
class TrackOutFacts:
    lot: Lot
    step: StepView
    tool: Equipment
    data: TrackOut
    actor: str
    at: datetime


@dataclass(frozen=True)
class CheckHold:
    hold_code: str
    reason: str


TrackOutCheck = Callable[[AsyncSession, TrackOutFacts], Awaitable[Sequence[CheckHold]]]

_CHECKS: list[TrackOutCheck] = []


def register(check: TrackOutCheck) -> None:
    """Run ``check`` in every track-out from now on (registering twice is harmless)."""
    if check not in _CHECKS:
        _CHECKS.append(check)


def registered() -> bool:
    return bool(_CHECKS)


async def run(session: AsyncSession, facts: TrackOutFacts) -> list[CheckHold]:
    holds: list[CheckHold] = []
    for check in _CHECKS:
        holds.extend(await check(session, facts))
    return holds
