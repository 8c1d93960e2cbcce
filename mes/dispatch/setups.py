"""Setup master data the ranking rules use: how long a tool takes to change from one setup to
another, how many lots it should run after a change before changing again, and where the
setups stand (lots waiting per setup, tools in each)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch.models import SetupChange, SetupMinRun
from mes.equipment.models import Equipment
from mes.equipment.states import PRODUCTION_STATES
from mes.lots.models import Lot
from mes.lots.states import LotState
from mes.routes.models import Step


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


async def setups_per_group(
    session: AsyncSession, groups: Collection[int] | None
) -> dict[tuple[int, int], tuple[dict[str, int], dict[str, int]]]:
    """Per (fab, tool group): waiting lots per setup their step needs, and tools up per setup
    they are in (the ``setup_demand`` rule). Groups without setups are left out."""
    queued_stmt = (
        select(Lot.fab_id, Step.tool_group_id, Step.setup, func.count())
        .join(Step, Step.id == Lot.current_step_id)
        .where(Lot.state == LotState.WAITING, Step.setup.is_not(None))
        .group_by(Lot.fab_id, Step.tool_group_id, Step.setup)
    )
    tools_stmt = (
        select(Equipment.fab_id, Equipment.tool_group_id, Equipment.current_setup, func.count())
        .where(Equipment.e10_state.in_(PRODUCTION_STATES), Equipment.current_setup.is_not(None))
        .group_by(Equipment.fab_id, Equipment.tool_group_id, Equipment.current_setup)
    )
    if groups is not None:
        queued_stmt = queued_stmt.where(Step.tool_group_id.in_(sorted(groups)))
        tools_stmt = tools_stmt.where(Equipment.tool_group_id.in_(sorted(groups)))
    out: dict[tuple[int, int], tuple[dict[str, int], dict[str, int]]] = {}
    for column, stmt in ((0, queued_stmt), (1, tools_stmt)):
        for fab, group, setup, n in (await session.execute(stmt)).all():
            if setup is not None:
                out.setdefault((fab, group), ({}, {}))[column][setup] = n
    return out
