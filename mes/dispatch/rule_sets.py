"""Dispatch rule sets as versioned data: one active version per scope (a fab, an area of it or a
tool group in it), an optional shadow set beside it, and the lookup of the set that applies to
a tool."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch import policy
from mes.dispatch.models import DispatchRuleSet
from mes.errors import InvalidInput
from mes.fabs import service as fabs_service
from mes.fabs.models import Fab


def scope_key(fab: str, *, area: str | None = None, tool_group: str | None = None) -> str:
    if area is not None and tool_group is not None:
        raise InvalidInput(
            "a rule set applies to a fab, an area or a tool group, not both",
            code="dispatch.invalid_scope",
        )
    if area is not None:
        return f"{fab}/area/{area}"
    if tool_group is not None:
        return f"{fab}/group/{tool_group}"
    return fab


SHADOW_SUFFIX = "#shadow"


def build_rule_set(row: DispatchRuleSet) -> policy.RuleSet:
    return policy.RuleSet.build(row.definition["rules"], name=row.scope_key, version=row.version)


async def publish_rule_set(
    session: AsyncSession,
    *,
    fab: str,
    area: str | None,
    tool_group: str | None,
    rules: Sequence[dict[str, Any]],
    note: str | None,
    actor: str,
    shadow: bool = False,
) -> DispatchRuleSet:
    """Store a new version of a scope's rule set and make it the scope's active one (or its
    active shadow set: ranked beside production in every dispatch cycle, logged, never run)."""
    try:
        policy.RuleSet.build(rules)
    except policy.RuleSetError as exc:
        raise InvalidInput(str(exc), code="dispatch.invalid_rule_set") from exc
    fab_row = await fabs_service.get_fab(session, fab)
    area_id = group_id = None
    if area is not None:
        area_id = (await fabs_service.get_area(session, fab_row, area)).id
    if tool_group is not None:
        group_id = (await fabs_service.get_tool_group(session, tool_group)).id
    key = scope_key(fab, area=area, tool_group=tool_group) + (SHADOW_SUFFIX if shadow else "")
    previous = list(
        await session.scalars(
            select(DispatchRuleSet)
            .where(DispatchRuleSet.scope_key == key, DispatchRuleSet.active.is_(True))
            .with_for_update()
        )
    )
    # Locking the active version serialises two engineers publishing for one scope; the
    # unique (scope, version) key refuses the loser if there was no active version to lock.
    latest = await session.scalar(
        select(func.max(DispatchRuleSet.version)).where(DispatchRuleSet.scope_key == key)
    )
    for row in previous:
        row.active = False
    await session.flush()  # the one-active index must see the old version retired first
    row = DispatchRuleSet(
        fab_id=fab_row.id,
        area_id=area_id,
        tool_group_id=group_id,
        scope_key=key,
        version=(latest or 0) + 1,
        definition={"rules": [dict(r) for r in rules]},
        active=True,
        shadow=shadow,
        created_by=actor,
        note=note,
    )
    session.add(row)
    await session.flush()
    return row


async def rule_sets(
    session: AsyncSession, *, fab: str | None, include_history: bool
) -> list[DispatchRuleSet]:
    stmt = select(DispatchRuleSet).order_by(DispatchRuleSet.scope_key, DispatchRuleSet.version)
    if fab is not None:
        stmt = stmt.join(Fab, Fab.id == DispatchRuleSet.fab_id).where(Fab.code == fab)
    if not include_history:
        stmt = stmt.where(DispatchRuleSet.active.is_(True))
    return list(await session.scalars(stmt))


@dataclass(frozen=True)
class RuleSets:
    """The active rule sets of some fabs, to pick the one that applies to a tool."""

    by_group: dict[tuple[int, int], policy.RuleSet]
    by_area: dict[int, policy.RuleSet]
    by_fab: dict[int, policy.RuleSet]

    def for_tool(self, tool: policy.ToolSnapshot) -> policy.RuleSet:
        """Tool group in the tool's fab, else its area, else the fab's default, else built-in."""
        return self.own(tool) or policy.DEFAULT_RULE_SET

    def for_group(self, fab_id: int, tool_group_id: int) -> policy.RuleSet:
        """The set a tool group's tools use in a fab, without area-level sets (the Q-time gate
        asks of groups whose tools it has not read)."""
        return (
            self.by_group.get((fab_id, tool_group_id))
            or self.by_fab.get(fab_id)
            or policy.DEFAULT_RULE_SET
        )

    def own(self, tool: policy.ToolSnapshot) -> policy.RuleSet | None:
        """The stored set that applies to the tool, without the built-in fallback."""
        found = self.by_group.get((tool.fab_id, tool.tool_group_id))
        if found is None and tool.area_id is not None:
            found = self.by_area.get(tool.area_id)
        if found is None:
            found = self.by_fab.get(tool.fab_id)
        return found


async def active_rule_sets(
    session: AsyncSession, fab_ids: Iterable[int], *, shadow: bool = False
) -> RuleSets:
    """The active production rule sets of the fabs (``shadow``: their active shadow sets)."""
    rows = await session.scalars(
        select(DispatchRuleSet).where(
            DispatchRuleSet.active.is_(True),
            DispatchRuleSet.shadow.is_(shadow),
            DispatchRuleSet.fab_id.in_(list(fab_ids)),
        )
    )
    sets = RuleSets({}, {}, {})
    for row in rows:
        built = build_rule_set(row)
        if row.tool_group_id is not None:
            sets.by_group[(row.fab_id, row.tool_group_id)] = built
        elif row.area_id is not None:
            sets.by_area[row.area_id] = built
        else:
            sets.by_fab[row.fab_id] = built
    return sets
