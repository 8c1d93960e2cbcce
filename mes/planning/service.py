"""Start plans: define, change, list; and release the lots a plan has due (the releaser's one
transaction per plan, through the same lot start service as ``POST /lots``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from mes.auth.models import AccountKind
from mes.auth.service import Principal
from mes.clock import Clock
from mes.errors import Conflict, InvalidInput, NotFound, StaleVersion
from mes.fabs import service as fabs_service
from mes.fabs.models import Fab
from mes.kit.idempotency import claim_key
from mes.lots import service as lots_service
from mes.lots.models import Lot
from mes.lots.states import FINAL_STATES, PriorityClass
from mes.planning import rules
from mes.planning.models import StartPlan, StartPlanRelease
from mes.planning.schemas import StartPlanCreate, StartPlanRead, StartPlanUpdate
from mes.products import service as products_service
from mes.products.models import Product
from mes.routes.models import Route, Step

RELEASER_ACTOR = "releaser"
PRINCIPAL = Principal(
    user_id=0, username=RELEASER_ACTOR, kind=AccountKind.SERVICE, roles=frozenset(), auth_time=None
)
# Fields whose change moves the release grid (a new rate applies from the next release on).
_GRID_FIELDS = frozenset({"rate", "rate_per", "starts_at"})


def plan_query(fab: str | None = None, active: bool | None = None) -> Select[StartPlan]:
    stmt = select(StartPlan).options(joinedload(StartPlan.fab), joinedload(StartPlan.product))
    if fab is not None:
        stmt = stmt.join(Fab, Fab.id == StartPlan.fab_id).where(Fab.code == fab)
    if active is not None:
        stmt = stmt.where(StartPlan.active == active)
    return stmt.order_by(StartPlan.code)


async def get_plan(
    session: AsyncSession,
    code: str | None = None,
    *,
    plan_id: int | None = None,
    for_update: bool = False,
) -> StartPlan:
    """The start plan ``code`` (or id ``plan_id``), or start_plan.not_found. ``for_update``
    locks the plan's row only (not its fab's or product's)."""
    stmt = select(StartPlan).options(
        joinedload(StartPlan.fab, innerjoin=True), joinedload(StartPlan.product, innerjoin=True)
    )
    stmt = stmt.where(StartPlan.code == code if plan_id is None else StartPlan.id == plan_id)
    if for_update:
        stmt = stmt.with_for_update(key_share=True, of=StartPlan).execution_options(
            populate_existing=True
        )
    found = (await session.scalars(stmt)).one_or_none()
    if found is None:
        raise NotFound(
            f"start plan {code or plan_id!r} does not exist", code="start_plan.not_found"
        )
    return found


async def _check_route(session: AsyncSession, product: Product, route: str | None) -> None:
    if route is None:
        return
    owner = await session.scalar(select(Route.product_id).where(Route.code == route))
    if owner is None:
        raise InvalidInput(f"route {route!r} does not exist", code="start_plan.route_unknown")
    if owner != product.id:
        raise InvalidInput(
            f"route {route!r} is not a route of product {product.code}",
            code="start_plan.route_unknown",
        )


def schedule_of(plan: StartPlan) -> rules.Schedule:
    return rules.Schedule(
        anchor_at=plan.anchor_at,
        anchor_sequence=plan.anchor_sequence,
        interval_s=rules.interval_s(plan.rate, plan.rate_per),
        catch_up_max=plan.catch_up_max,
        max_wip=plan.max_wip,
    )


async def create_plan(
    session: AsyncSession, data: StartPlanCreate, *, actor: str, clock: Clock
) -> StartPlan:
    """Define a start plan (checked: fab, product, route, rate, weights, due rule)."""
    if await session.scalar(select(StartPlan.id).where(StartPlan.code == data.code)) is not None:
        raise Conflict(f"start plan {data.code!r} already exists", code="start_plan.duplicate")
    fab = await fabs_service.get_fab(session, data.fab)
    product = await products_service.get_product(session, data.product)
    await _check_route(session, product, data.route)
    rules.interval_s(data.rate, data.rate_per)
    rules.check_due_rule(data.due_rule, data.due_value)
    starts_at = data.starts_at or clock.now()
    plan = StartPlan(
        code=data.code,
        fab=fab,
        product=product,
        route_code=data.route,
        rate=data.rate,
        rate_per=data.rate_per,
        wafer_count=data.wafer_count,
        due_rule=data.due_rule,
        due_value=data.due_value,
        priority_mix=rules.check_priority_mix(data.priority_mix),
        max_wip=data.max_wip,
        catch_up_max=data.catch_up_max,
        seed=data.seed,
        lot_type=data.lot_type,
        starts_at=starts_at,
        anchor_at=starts_at,
        anchor_sequence=1,
        active=data.active,
        note=data.note,
        created_by=actor,
    )
    session.add(plan)
    await session.flush()
    return plan


async def update_plan(
    session: AsyncSession, code: str, data: StartPlanUpdate, *, clock: Clock
) -> StartPlan:
    """Change a plan; send the version you read."""
    plan = await get_plan(session, code, for_update=True)
    if plan.version != data.version:
        raise StaleVersion(
            f"start plan {code!r} is at version {plan.version}, not {data.version}",
            code="start_plan.stale_version",
            current_version=plan.version,
        )
    changes = data.model_dump(exclude_unset=True, exclude={"version"})
    # null means "no change" for the fields a plan cannot be without.
    nullable = {"route", "max_wip", "note"}
    changes = {k: v for k, v in changes.items() if v is not None or k in nullable}
    if "route" in changes:
        await _check_route(session, plan.product, changes["route"])
        plan.route_code = changes.pop("route")
    if "priority_mix" in changes:
        changes["priority_mix"] = rules.check_priority_mix(changes["priority_mix"])
    for field, value in changes.items():
        setattr(plan, field, value)
    interval = rules.interval_s(plan.rate, plan.rate_per)
    rules.check_due_rule(plan.due_rule, plan.due_value)
    if _GRID_FIELDS & changes.keys():
        last = await _last_release(session, plan.id)
        plan.anchor_at, plan.anchor_sequence = rules.reanchor(
            clock.now(),
            interval,
            starts_at=plan.starts_at,
            last_sequence=last[0] if last else None,
            last_slot_at=last[1] if last else None,
        )
    await session.flush()
    return plan


async def delete_plan(session: AsyncSession, code: str) -> None:
    """Remove a plan that never released a lot (one that did is deactivated instead: its
    releases are the history of its lots)."""
    plan = await get_plan(session, code, for_update=True)
    if await _last_release(session, plan.id) is not None:
        raise Conflict(
            f"start plan {code!r} has released lots; deactivate it instead",
            code="start_plan.has_releases",
        )
    await session.delete(plan)
    await session.flush()


async def _last_release(session: AsyncSession, plan_id: int) -> tuple[int, datetime] | None:
    row = (
        await session.execute(
            select(StartPlanRelease.sequence, StartPlanRelease.slot_at)
            .where(StartPlanRelease.start_plan_id == plan_id)
            .order_by(StartPlanRelease.sequence.desc())
            .limit(1)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def plan_wip(session: AsyncSession, plan_id: int) -> int:
    """The plan's lots still in the line (not completed, scrapped or terminated)."""
    count = await session.scalar(
        select(func.count())
        .select_from(StartPlanRelease)
        .join(Lot, Lot.id == StartPlanRelease.lot_id)
        .where(StartPlanRelease.start_plan_id == plan_id, Lot.state.not_in(FINAL_STATES))
    )
    return int(count or 0)


async def release_stats(
    session: AsyncSession, plan_ids: list[int]
) -> dict[int, tuple[int, int | None]]:
    """(lots released, last sequence) of each plan, in one query."""
    rows = await session.execute(
        select(StartPlanRelease.start_plan_id, func.count(), func.max(StartPlanRelease.sequence))
        .where(StartPlanRelease.start_plan_id.in_(plan_ids))
        .group_by(StartPlanRelease.start_plan_id)
    )
    found = {r[0]: (int(r[1]), r[2]) for r in rows.all()}
    return {plan_id: found.get(plan_id, (0, None)) for plan_id in plan_ids}


async def plan_reads(
    session: AsyncSession, plans: list[StartPlan], now: datetime
) -> list[StartPlanRead]:
    stats = await release_stats(session, [p.id for p in plans])
    return [_plan_read(plan, *stats[plan.id], now) for plan in plans]


async def plan_read(session: AsyncSession, plan: StartPlan, now: datetime) -> StartPlanRead:
    return (await plan_reads(session, [plan], now))[0]


def _plan_read(
    plan: StartPlan, released: int, last_sequence: int | None, now: datetime
) -> StartPlanRead:
    schedule = schedule_of(plan)
    next_sequence = max(schedule.anchor_sequence, (last_sequence or 0) + 1)
    return StartPlanRead(
        code=plan.code,
        fab=plan.fab.code,
        product=plan.product.code,
        route=plan.route_code,
        rate=plan.rate,
        rate_per=plan.rate_per,
        interval_s=schedule.interval_s,
        wafer_count=plan.wafer_count,
        due_rule=plan.due_rule,
        due_value=plan.due_value,
        priority_mix=plan.priority_mix,
        max_wip=plan.max_wip,
        catch_up_max=plan.catch_up_max,
        seed=plan.seed,
        lot_type=plan.lot_type,
        starts_at=plan.starts_at,
        active=plan.active,
        note=plan.note,
        created_by=plan.created_by,
        version=plan.version,
        released=released,
        last_sequence=last_sequence,
        next_release_at=max(schedule.slot_at(next_sequence), now) if plan.active else None,
    )


def release_query(plan_id: int) -> Select[StartPlanRelease, str]:
    return (
        select(StartPlanRelease, Lot.code)
        .join(Lot, Lot.id == StartPlanRelease.lot_id)
        .where(StartPlanRelease.start_plan_id == plan_id)
        .order_by(StartPlanRelease.sequence.desc())
    )


async def _raw_process_s(session: AsyncSession, route_version_id: int) -> float:
    rows = (
        await session.execute(
            select(Step.process_time_s, Step.sampling_rate).where(
                Step.route_version_id == route_version_id
            )
        )
    ).all()
    return rules.raw_process_s([r[0] for r in rows], [r[1] for r in rows])


async def slots_due(session: AsyncSession, plan_id: int, now: datetime) -> rules.ReleaseSlots:
    """What plan ``plan_id`` has due at ``now`` (nothing for an inactive or unknown plan)."""
    plan = await session.get(StartPlan, plan_id)
    if plan is None or not plan.active:
        return rules.ReleaseSlots((), 0, 0)
    last = await _last_release(session, plan.id)
    wip = await plan_wip(session, plan.id) if plan.max_wip is not None else 0
    return rules.slots_to_release(schedule_of(plan), last[0] if last else None, now, wip)


async def release_due(
    session: AsyncSession, plan_id: int, *, owner: str, clock: Clock
) -> list[StartPlanRelease]:
    """Release the lots plan ``plan_id`` has due now, in the caller's transaction (which the
    releaser guards with its lease). The plan row is locked first, so two releasers of one
    plan queue up; each slot is also claimed as an idempotency key, and (plan, sequence) is
    unique: a slot is never released twice."""
    now = clock.now()
    plan = await get_plan(session, plan_id=plan_id, for_update=True)
    slots = await slots_due(session, plan.id, now)
    if not slots.sequences:
        return []
    version = await lots_service.route_version_for_start(
        session, plan.product.code, plan.route_code, now
    )
    raw_s = await _raw_process_s(session, version.id)
    released: list[StartPlanRelease] = []
    skipped = slots.skipped
    for sequence in slots.sequences:
        if not await claim_key(session, RELEASER_ACTOR, f"start-plan:{plan.id}:{sequence}", now):
            continue  # released before (only reachable if the grid was moved back)
        priority = rules.priority_for(
            plan.priority_mix, seed=plan.seed, plan=plan.code, sequence=sequence
        )
        due = rules.due_at(now, plan.due_rule, plan.due_value, raw_s)
        (lot,) = await lots_service.start_lots(
            session,
            product_code=plan.product.code,
            fab_code=plan.fab.code,
            route_code=plan.route_code,
            count=1,
            wafer_count=plan.wafer_count,
            priority_class=PriorityClass(priority),
            due_at=due,
            code=None,
            carrier_code=None,
            actor=PRINCIPAL,
            clock=clock,
            lot_type=plan.lot_type,
        )
        release = StartPlanRelease(
            start_plan_id=plan.id,
            sequence=sequence,
            slot_at=schedule_of(plan).slot_at(sequence),
            released_at=now,
            lot=lot,
            priority_class=priority,
            due_at=due,
            skipped_before=skipped,
            owner=owner,
        )
        skipped = 0
        session.add(release)
        released.append(release)
    await session.flush()
    return released


async def active_plans(session: AsyncSession) -> list[tuple[int, int, str]]:
    """(plan id, fab id, code) of every active plan."""
    rows = await session.execute(
        select(StartPlan.id, StartPlan.fab_id, StartPlan.code)
        .where(StartPlan.active.is_(True))
        .order_by(StartPlan.fab_id, StartPlan.code)
    )
    return [(r[0], r[1], r[2]) for r in rows.all()]
