"""Setup master data the ranking rules use: how long a tool takes to change from one setup to
another, and how many lots it should run after a change before changing again."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch.models import SetupChange, SetupMinRun


async def set_setup_change(
    session: AsyncSession, from_setup: str | None, to_setup: str, time_s: int
) -> SetupChange:
    """Time to change a tool over to ``to_setup`` (from ``from_setup``; None: from any)."""
    key = from_setup or "*"
    row = await session.scalar(
        select(SetupChange).where(SetupChange.from_setup == key, SetupChange.to_setup == to_setup)
    )
    if row is None:
        row = SetupChange(from_setup=key, to_setup=to_setup, time_s=time_s)
        session.add(row)
    else:
        row.time_s = time_s
    await session.flush()
    return row


async def set_min_run(session: AsyncSession, setup: str, min_run: int) -> SetupMinRun:
    row = await session.scalar(select(SetupMinRun).where(SetupMinRun.setup == setup))
    if row is None:
        row = SetupMinRun(setup=setup, min_run=min_run)
        session.add(row)
    else:
        row.min_run = min_run
    await session.flush()
    return row


async def setup_data(session: AsyncSession) -> tuple[list[SetupChange], list[SetupMinRun]]:
    changes = await session.scalars(
        select(SetupChange).order_by(SetupChange.to_setup, SetupChange.from_setup)
    )
    runs = await session.scalars(select(SetupMinRun).order_by(SetupMinRun.setup))
    return list(changes), list(runs)
