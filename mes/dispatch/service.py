"""Dispatching against the database: what-next for one tool or for every tool of a fab from one
consistent read (the dispatcher's cycle), where-next for a lot, and following it to another
fab. The package's face: the rule sets (``rule_sets``), the snapshots (``snapshots``) and the
master data (``setups``, ``transfer_times``) are re-exported here for callers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth.service import Principal
from mes.clock import Clock
from mes.dispatch import policy
from mes.dispatch.arrivals import arriving_snapshots, with_downstream
from mes.dispatch.rule_sets import (
    SHADOW_SUFFIX,
    RuleSets,
    active_rule_sets,
    build_rule_set,
    publish_rule_set,
    rule_sets,
    scope_key,
)
from mes.dispatch.setups import set_min_run, set_setup_change, setup_data
from mes.dispatch.snapshots import any_state_snapshot, lot_snapshots, situation, tool_snapshots
from mes.dispatch.transfer_times import set_transfer_time
from mes.equipment.models import Equipment
from mes.errors import NotFound, RuleViolation, refuses
from mes.fabs import service as fabs_service
from mes.fabs.models import Fab
from mes.kit.lookup import get_by_key
from mes.lots import service as lots_service
from mes.lots.commands import Ship
from mes.lots.models import Lot
from mes.routes.models import Step

__all__ = [
    "SHADOW_SUFFIX",
    "FabSnapshot",
    "RuleSets",
    "active_rule_sets",
    "build_rule_set",
    "dispatch_list",
    "fab_codes",
    "fab_snapshot",
    "lot_snapshots",
    "publish_rule_set",
    "refresh_fab",
    "rule_sets",
    "scope_key",
    "send_to_fab",
    "set_min_run",
    "set_setup_change",
    "set_transfer_time",
    "setup_data",
    "situation",
    "tool_snapshots",
    "where_next",
]

# --- what-next -----------------------------------------------------------------------------


async def dispatch_list(
    session: AsyncSession, tool_code: str, *, clock: Clock
) -> policy.DispatchList:
    """What-next for one tool: its lots ranked by its rule set, and the excluded ones."""
    now = clock.now()
    found = await tool_snapshots(session, [Equipment.code == tool_code], now)
    if not found:
        raise NotFound(f"tool {tool_code!r} does not exist", code="tool.not_found")
    (tool,) = found
    lots = await lot_snapshots(
        session,
        [Lot.fab_id == tool.fab_id, Step.tool_group_id == tool.tool_group_id],
        now,
        [tool],
    )
    sets = await active_rule_sets(session, [tool.fab_id])
    # Only the loads WIP balancing looks at: the tool groups of the lots' next steps.
    nexts = {lot.next_tool_group_id for lot in lots if lot.next_tool_group_id is not None}
    sit = await with_downstream(session, await situation(session, now, nexts), lots, now, sets)
    # Lots on their way here are listed (excluded until received), never started.
    lots += await arriving_snapshots(
        session, tool.fab_id, [Step.tool_group_id == tool.tool_group_id]
    )
    return policy.rank_lots(tool, lots, sit, sets.for_tool(tool))


@dataclass
class FabSnapshot:
    """One consistent read of a fab for a dispatch cycle: its tools, the lots waiting (and
    arriving) per tool group, the rule sets (production and shadow) and the situation, which
    the cycle updates as it starts lots (``policy.with_committed``: the Q-time gate counts them)."""

    fab_id: int
    tools: list[policy.ToolSnapshot]
    lots_by_group: dict[int, list[policy.LotSnapshot]]
    rule_sets: RuleSets
    shadow_sets: RuleSets
    situation: policy.Situation

    def rank(
        self,
        tool: policy.ToolSnapshot,
        *,
        explain: bool = False,
        shadow: bool = False,
        without: Collection[int] = (),
    ) -> policy.DispatchList | None:
        """What-next for the tool with its production set (``shadow``: its shadow set, or None
        when no shadow set applies to it), leaving out the lots ``without`` (ids: lots given to
        other tools earlier in the same cycle)."""
        rule_set = self.shadow_sets.own(tool) if shadow else self.rule_sets.for_tool(tool)
        if rule_set is None:
            return None
        lots = self.lots_by_group.get(tool.tool_group_id, [])
        if without:
            lots = [lot for lot in lots if lot.id not in without]
        return policy.rank_lots(
            tool,
            lots,
            self.situation,
            rule_set,
            explain_all=explain,
        )


async def fab_snapshot(session: AsyncSession, fab_code: str, now: datetime) -> FabSnapshot:
    fab = await fabs_service.get_fab(session, fab_code)
    tools = await tool_snapshots(session, [Equipment.fab_id == fab.id], now)
    lots = await lot_snapshots(session, [Lot.fab_id == fab.id], now, tools)
    sets = await active_rule_sets(session, [fab.id])
    sit = await with_downstream(session, await situation(session, now), lots, now, sets)
    by_group: dict[int, list[policy.LotSnapshot]] = defaultdict(list)
    for lot in [*lots, *await arriving_snapshots(session, fab.id)]:
        by_group[lot.step.tool_group_id].append(lot)
    return FabSnapshot(
        fab.id,
        tools,
        dict(by_group),
        sets,
        await active_rule_sets(session, [fab.id], shadow=True),
        sit,
    )


async def refresh_fab(
    session: AsyncSession, fab_code: str, *, clock: Clock, explain: bool = False
) -> list[policy.DispatchList]:
    """What-next for every tool of a fab, from one set of reads (the dispatcher's cycle)."""
    snap = await fab_snapshot(session, fab_code, clock.now())
    out = []
    for tool in snap.tools:
        listing = snap.rank(tool, explain=explain)
        assert listing is not None
        out.append(listing)
    return out


# --- where-next ----------------------------------------------------------------------------


async def where_next(session: AsyncSession, lot_code: str, *, clock: Clock) -> policy.WhereNext:
    """Where-next for one lot: the tools of its step's group in every fab, soonest start first."""
    now = clock.now()
    lot = await get_by_key(session, Lot, Lot.code, lot_code, code="lot.not_found", what="lot")
    if lot.current_step_id is None:
        raise RuleViolation("lot.finished", f"lot {lot_code} is {lot.state.value}")
    group_id = (
        await session.execute(select(Step.tool_group_id).where(Step.id == lot.current_step_id))
    ).scalar_one()
    tools = await tool_snapshots(session, [Equipment.tool_group_id == group_id], now)
    found = await lot_snapshots(session, [Lot.id == lot.id], now, tools)
    if not found:
        snapshot = await any_state_snapshot(session, lot, now)
    else:
        (snapshot,) = found
    return policy.rank_tools(snapshot, tools, await situation(session, now, {group_id}))


# The lot exclusion's codes (dispatch.constraint_rules.lot_exclusion), raised as found.
@refuses("lot.on_hold", "lot.running", "lot.in_transit", "lot.finished")
async def send_to_fab(
    session: AsyncSession,
    lot_code: str,
    to_fab: str,
    *,
    version: int | None,
    actor: Principal,
    clock: Clock,
) -> Lot:
    """Follow a where-next answer to another fab: ship the lot there (an inter-fab transfer).

    Refused unless a tool of that fab is among the lot's options, so the dispatcher never sends
    a lot where nothing can run its step.
    """
    answer = await where_next(session, lot_code, clock=clock)
    fab = await fabs_service.get_fab(session, to_fab)
    if answer.lot_exclusion is not None:
        raise RuleViolation(answer.lot_exclusion.code, answer.lot_exclusion.detail)
    if not any(o.tool.fab_id == fab.id for o in answer.options):
        raise RuleViolation(
            "dispatch.no_option",
            f"no tool in fab {to_fab} can run lot {lot_code}'s step "
            "(see where-next for the reasons)",
        )
    return await lots_service.ship(
        session, lot_code, Ship(to_fab=to_fab, version=version), actor=actor, clock=clock
    )


async def fab_codes(session: AsyncSession) -> dict[int, str]:
    return dict((await session.execute(select(Fab.id, Fab.code))).all())
