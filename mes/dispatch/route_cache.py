"""The structure of the route versions lots run, as the policy needs it (steps as snapshots,
the process time left from each step, the next step's tool group), cached per process."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch import policy
from mes.lots import qtime_gate_rules as gate_rules
from mes.routes.models import RouteVersion, Step


@dataclass(frozen=True)
class RouteInfo:
    steps: dict[int, policy.StepSnapshot]  # by step id
    remaining_s: dict[int, float]  # by step id: this and later steps
    next_group: dict[int, int | None]  # by step id
    by_sequence: dict[int, dict[int, int]]  # route version → sequence → step id


# Steps of a route version that lots run never change (only drafts are edited), so their
# structure is cached per process, keyed by id and creation time (ids of rolled-back rows can
# come back). Reticles are not cached: they follow recipe approvals.
_ROUTE_CACHE: dict[tuple[int, str], RouteInfo] = {}
_ROUTE_CACHE_SIZE = 256


async def route_info(session: AsyncSession, route_version_ids: set[int]) -> RouteInfo:
    """The structure of these route versions (one ``RouteInfo`` merged over them)."""
    keys = {
        rv_id: (rv_id, created.isoformat())
        for rv_id, created in (
            await session.execute(
                select(RouteVersion.id, RouteVersion.created_at).where(
                    RouteVersion.id.in_(list(route_version_ids))
                )
            )
        ).all()
    }
    missing = {rv for rv, key in keys.items() if key not in _ROUTE_CACHE}
    if missing:
        if len(_ROUTE_CACHE) + len(missing) > _ROUTE_CACHE_SIZE:
            _ROUTE_CACHE.clear()
        loaded = await _load_routes(session, missing)
        for rv in missing:
            _ROUTE_CACHE[keys[rv]] = loaded[rv]
    parts = [_ROUTE_CACHE[key] for key in keys.values()]
    if len(parts) == 1:
        return parts[0]
    merged = RouteInfo({}, {}, {}, {})
    for part in parts:
        merged.steps.update(part.steps)
        merged.remaining_s.update(part.remaining_s)
        merged.next_group.update(part.next_group)
        merged.by_sequence.update(part.by_sequence)
    return merged


async def _load_routes(session: AsyncSession, route_version_ids: set[int]) -> dict[int, RouteInfo]:
    rows = (
        await session.execute(
            select(
                Step.id,
                Step.route_version_id,
                Step.sequence,
                Step.tool_group_id,
                Step.operation,
                Step.recipe_name,
                Step.process_time_s,
                Step.batch_min,
                Step.batch_max,
                Step.setup,
                Step.same_tool_as_sequence,
                Step.qtime_to_sequence,
                Step.qtime_max_s,
                Step.qtime_min_s,
            )
            .where(Step.route_version_id.in_(list(route_version_ids)))
            .order_by(Step.route_version_id, Step.sequence.desc())
        )
    ).all()
    out = {rv: RouteInfo({}, {}, {}, {rv: {}}) for rv in route_version_ids}
    current_rv, acc, following = None, 0.0, None
    for r in rows:  # last step first, per route version
        info = out[r.route_version_id]
        if r.route_version_id != current_rv:
            current_rv, acc, following = r.route_version_id, 0.0, None
        acc += r.process_time_s
        info.steps[r.id] = policy.StepSnapshot(
            id=r.id,
            sequence=r.sequence,
            tool_group_id=r.tool_group_id,
            operation=r.operation,
            recipe=r.recipe_name,
            process_time_s=float(r.process_time_s),
            batch_min=r.batch_min,
            batch_max=r.batch_max,
            setup=r.setup,
            same_tool_as_sequence=r.same_tool_as_sequence,
        )
        info.remaining_s[r.id] = acc
        info.next_group[r.id] = following
        following = r.tool_group_id
        info.by_sequence[r.route_version_id][r.sequence] = r.id
    # The Q-time chains starting at each step that opens a window (the gate's input).
    by_route: dict[int, list[Any]] = {}
    for r in rows:
        by_route.setdefault(r.route_version_id, []).append(r)
    for rv, route_rows in by_route.items():
        route_rows.sort(key=lambda r: r.sequence)
        plain = [
            gate_rules.RouteStep(
                sequence=r.sequence,
                group_id=r.tool_group_id,
                process_s=float(r.process_time_s),
                batch=r.batch_max or 1,
                qtime_to_sequence=r.qtime_to_sequence,
                qtime_max_s=None if r.qtime_max_s is None else float(r.qtime_max_s),
                qtime_min_s=None if r.qtime_min_s is None else float(r.qtime_min_s),
            )
            for r in route_rows
        ]
        for i, r in enumerate(route_rows):
            if r.qtime_to_sequence is not None:
                chain = gate_rules.chain_from(plain, i)
                if chain:
                    info = out[rv]
                    info.steps[r.id] = replace(info.steps[r.id], qtime_chain=chain)
    return out
