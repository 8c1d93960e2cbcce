"""The decision log of automatic dispatch (one row per tool and cycle, with the list it came
from) and the reports read from it: decisions, operator compliance, shadow agreement. The
cycle that writes it is ``mes.dispatch.scheduler``."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.dispatch import policy
from mes.dispatch.models import DispatchDecision
from mes.equipment.models import Equipment
from mes.fabs import service as fabs_service
from mes.kit.lookup import get_by_key
from mes.lots.models import Lot, LotEvent

# The actor of the dispatcher's track-ins and job requests (what compliance leaves out).
DISPATCH_ACTOR = "dispatcher"

REQUESTED = "requested"
REFUSED = "refused"
WAITING = "waiting"
NONE = "none"
ADVISORY = "advisory"
SHADOW = "shadow"
BACKOFF = "backoff"  # the tool refused lately: not offered lots until its pause ends
PRODUCTION_OUTCOMES = (REQUESTED, REFUSED, WAITING, NONE, ADVISORY, BACKOFF)


def ranked_json(listing: policy.DispatchList, top_n: int) -> dict[str, Any]:
    return {
        "ranked": [
            {
                "rank": r.rank,
                "lot": r.lot.code,
                "score": r.score,
                "contributions": [
                    {"rule": c.rule, "contribution": c.contribution, "why": c.why}
                    for c in r.contributions
                ],
            }
            for r in listing.ranked[:top_n]
        ]
    }


def excluded_counts(listing: policy.DispatchList) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for e in listing.excluded:
        for reason in e.reasons:
            counts[reason.code] += 1
    return dict(sorted(counts.items()))


def decision_row(
    listing: policy.DispatchList,
    *,
    fab_id: int,
    at: datetime,
    owner: str,
    outcome: str,
    chosen: policy.Ranked | None,
    top_n: int,
    refusal_code: str | None = None,
    job_order_id: str | None = None,
) -> DispatchDecision:
    return DispatchDecision(
        fab_id=fab_id,
        equipment_id=listing.tool.id,
        cycle_at=at,
        rule_set=listing.rule_set,
        rule_set_version=listing.rule_set_version,
        chosen_lot=None if chosen is None else chosen.lot.code,
        chosen_score=None if chosen is None else chosen.score,
        top=ranked_json(listing, top_n),
        excluded=excluded_counts(listing),
        outcome=outcome,
        refusal_code=refusal_code,
        job_order_id=job_order_id,
        owner=owner,
    )


async def decisions(
    session: AsyncSession,
    *,
    fab: str,
    tool: str | None,
    since: datetime | None,
    limit: int,
) -> list[tuple[DispatchDecision, str]]:
    """Logged decisions of a fab (one tool's if given), newest first, with the tool code."""
    fab_row = await fabs_service.get_fab(session, fab)
    stmt = (
        select(DispatchDecision, Equipment.code)
        .join(Equipment, Equipment.id == DispatchDecision.equipment_id)
        .where(DispatchDecision.fab_id == fab_row.id)
        .order_by(DispatchDecision.cycle_at.desc(), DispatchDecision.id.desc())
        .limit(limit)
    )
    if tool is not None:
        tool_row = await get_by_key(
            session, Equipment, Equipment.code, tool, code="tool.not_found", what="tool"
        )
        stmt = stmt.where(DispatchDecision.equipment_id == tool_row.id)
    if since is not None:
        stmt = stmt.where(DispatchDecision.cycle_at >= since)
    return [(d, code) for d, code in (await session.execute(stmt)).all()]


def _top_lot(d: DispatchDecision) -> tuple[str | None, float | None]:
    ranked = d.top.get("ranked") or []
    if not ranked:
        return None, None
    return ranked[0]["lot"], ranked[0]["score"]


async def compliance(
    session: AsyncSession,
    *,
    fab: str,
    since: datetime,
    until: datetime,
    max_age: timedelta,
) -> dict[str, Any]:
    """Manual track-ins (every TRACK_IN not by the dispatcher, job requests included) against
    the top lot of the tool's last logged list at most ``max_age`` before them."""
    fab_row = await fabs_service.get_fab(session, fab)
    events = (
        await session.execute(
            select(LotEvent.occurred_at, LotEvent.actor, LotEvent.equipment_id, Lot.code)
            .join(Lot, Lot.id == LotEvent.lot_id)
            .where(
                LotEvent.fab_id == fab_row.id,
                LotEvent.event_type == "TRACK_IN",
                LotEvent.actor != DISPATCH_ACTOR,
                LotEvent.occurred_at >= since,
                LotEvent.occurred_at <= until,
                LotEvent.equipment_id.is_not(None),
            )
            .order_by(LotEvent.occurred_at, LotEvent.id)
        )
    ).all()
    logged = await session.scalars(
        select(DispatchDecision)
        .where(
            DispatchDecision.fab_id == fab_row.id,
            DispatchDecision.outcome.in_(PRODUCTION_OUTCOMES),
            DispatchDecision.cycle_at >= since - max_age,
            DispatchDecision.cycle_at <= until,
        )
        .order_by(DispatchDecision.cycle_at, DispatchDecision.id)
    )
    per_tool: dict[int, list[DispatchDecision]] = defaultdict(list)
    for d in logged:
        per_tool[d.equipment_id].append(d)
    tools = dict(
        (
            await session.execute(
                select(Equipment.id, Equipment.code).where(Equipment.fab_id == fab_row.id)
            )
        ).all()
    )
    followed = without = 0
    deviations: list[dict[str, Any]] = []
    for at, actor, equipment_id, lot in events:
        assert equipment_id is not None
        listed = per_tool.get(equipment_id, [])
        i = bisect.bisect_right([d.cycle_at for d in listed], at) - 1
        decision = listed[i] if i >= 0 and at - listed[i].cycle_at <= max_age else None
        top_lot, top_score = _top_lot(decision) if decision is not None else (None, None)
        if decision is None or top_lot is None:
            without += 1
            continue
        if top_lot == lot:
            followed += 1
            continue
        ranks = {r["lot"]: r["rank"] for r in decision.top.get("ranked", [])}
        deviations.append(
            {
                "tool": tools.get(equipment_id, str(equipment_id)),
                "at": at,
                "actor": actor,
                "lot": lot,
                "rank_of_lot": ranks.get(lot),
                "top_lot": top_lot,
                "top_score": top_score,
                "list_at": decision.cycle_at,
                "rule_set": decision.rule_set,
                "rule_set_version": decision.rule_set_version,
            }
        )
    with_list = followed + len(deviations)
    return {
        "fab": fab,
        "since": since,
        "until": until,
        "method": (
            "each manual track-in is compared with the top lot of the tool's last logged "
            f"decision at most {int(max_age.total_seconds())} s before it"
        ),
        "track_ins": len(events),
        "with_list": with_list,
        "without_list": without,
        "followed": followed,
        "compliance_rate": None if with_list == 0 else followed / with_list,
        "deviations": deviations,
    }


async def shadow_report(
    session: AsyncSession, *, fab: str, since: datetime | None, limit: int
) -> dict[str, Any]:
    """Each shadow decision against the production decision of the same tool and cycle."""
    fab_row = await fabs_service.get_fab(session, fab)
    stmt = select(DispatchDecision).where(DispatchDecision.fab_id == fab_row.id)
    if since is not None:
        stmt = stmt.where(DispatchDecision.cycle_at >= since)
    rows = list(
        await session.scalars(stmt.order_by(DispatchDecision.cycle_at, DispatchDecision.id))
    )
    production = {(d.equipment_id, d.cycle_at): d for d in rows if d.outcome != SHADOW}
    tools = dict(
        (
            await session.execute(
                select(Equipment.id, Equipment.code).where(Equipment.fab_id == fab_row.id)
            )
        ).all()
    )
    compared = agreed = 0
    differences: list[dict[str, Any]] = []
    for d in rows:
        if d.outcome != SHADOW:
            continue
        prod = production.get((d.equipment_id, d.cycle_at))
        if prod is None:
            continue
        compared += 1
        if prod.chosen_lot == d.chosen_lot:
            agreed += 1
            continue
        if len(differences) < limit:
            differences.append(
                {
                    "tool": tools.get(d.equipment_id, str(d.equipment_id)),
                    "at": d.cycle_at,
                    "production": _choice(prod),
                    "shadow": _choice(d),
                }
            )
    return {
        "fab": fab,
        "since": since,
        "compared": compared,
        "agreed": agreed,
        "agreement_rate": None if compared == 0 else agreed / compared,
        "differences": differences,
    }


def _choice(d: DispatchDecision) -> dict[str, Any]:
    top = (d.top.get("ranked") or [None])[0]
    return {
        "rule_set": d.rule_set,
        "rule_set_version": d.rule_set_version,
        "lot": d.chosen_lot,
        "score": d.chosen_score,
        "outcome": d.outcome,
        "contributions": None if top is None else top["contributions"],
    }
