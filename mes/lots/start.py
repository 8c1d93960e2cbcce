"""Starting lots: release new lots of a product onto its route version in force."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth.service import Principal
from mes.clock import Clock
from mes.durables.models import Carrier, CarrierState
from mes.errors import Conflict, InvalidInput
from mes.fabs import service as fabs_service
from mes.kit.lookup import get_by_key
from mes.lots import rules
from mes.lots._core import Change, arrive, route_steps
from mes.lots.models import Lot, LotCounter, Wafer
from mes.lots.states import LotState, LotType, PriorityClass
from mes.products.models import Product
from mes.routes import rules as route_rules
from mes.routes import service as routes_service
from mes.routes.models import Route, RouteVersion, RouteVersionStatus


async def _active_route_version(
    session: AsyncSession, product: Product, route_code: str | None, now: datetime
) -> RouteVersion:
    """The route version in force now for new lots of the product (see routes.rules)."""
    stmt = (
        select(
            RouteVersion.id,
            Route.code,
            RouteVersion.version,
            RouteVersion.status,
            RouteVersion.effective_at,
        )
        .join(Route, Route.id == RouteVersion.route_id)
        .where(
            Route.product_id == product.id,
            RouteVersion.status.in_((RouteVersionStatus.ACTIVE, RouteVersionStatus.PENDING)),
        )
    )
    if route_code is not None:
        stmt = stmt.where(Route.code == route_code)
    by_route: dict[str, list[route_rules.VersionView]] = {}
    ids: dict[tuple[str, int], int] = {}
    for version_id, code, number, status, effective_at in (await session.execute(stmt)).all():
        by_route.setdefault(code, []).append(
            route_rules.VersionView(number, route_rules.VersionStatus(status.value), effective_at)
        )
        ids[(code, number)] = version_id
    in_force = {
        code: chosen
        for code, versions in by_route.items()
        if (chosen := route_rules.version_in_force(versions, now)) is not None
    }
    if not in_force:
        raise Conflict(
            f"product {product.code} has no active route version"
            + (f" on route {route_code}" if route_code else ""),
            code="lot.no_active_route",
        )
    if len(in_force) > 1:
        raise InvalidInput(
            f"product {product.code} has several routes; name one", code="lot.route_ambiguous"
        )
    [(code, chosen)] = in_force.items()
    if chosen.status == route_rules.VersionStatus.PENDING:
        # Its effective time has come: record it (rare; takes the route's row lock).
        await routes_service.promote_due(
            session, await routes_service.get_route(session, code, for_update=True), now
        )
    found = await session.get(RouteVersion, ids[(code, chosen.version)])
    assert found is not None
    return found


async def route_version_for_start(
    session: AsyncSession, product_code: str, route_code: str | None, now: datetime
) -> RouteVersion:
    """The route version a lot of the product started now would travel (what ``start_lots``
    uses), for callers that derive something from it first (a start plan's due date)."""
    product = await get_by_key(
        session, Product, Product.code, product_code, code="product.not_found", what="product"
    )
    return await _active_route_version(session, product, route_code, now)


async def _next_codes(session: AsyncSession, year: int, count: int) -> list[str]:
    # The year's first starts race to create its counter: the row is created with ON CONFLICT
    # DO NOTHING (the loser waits for the winner's commit) and then locked, instead of two
    # INSERTs of which one fails on the primary key (found by the crash test's concurrent
    # starts: a 409 db.constraint_violated for a valid request).
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(LotCounter).values(year=year, next_number=1).on_conflict_do_nothing()
    )
    counter = await session.get(LotCounter, year, with_for_update=True, populate_existing=True)
    assert counter is not None  # created above or by the transaction we waited for
    first = counter.next_number
    counter.next_number = first + count
    await session.flush()
    return [rules.lot_code(year, n) for n in range(first, first + count)]


async def start_lots(
    session: AsyncSession,
    *,
    product_code: str,
    fab_code: str,
    route_code: str | None,
    count: int,
    wafer_count: int,
    priority_class: PriorityClass,
    due_at: datetime | None,
    code: str | None,
    carrier_code: str | None,
    actor: Principal,
    clock: Clock,
    lot_type: LotType = LotType.PRODUCTION,
) -> list[Lot]:
    """Release ``count`` lots of a product onto its active route version (``lot_type``: what
    they are for; production unless said otherwise)."""
    now = clock.now()
    product = await get_by_key(
        session, Product, Product.code, product_code, code="product.not_found", what="product"
    )
    fab = await fabs_service.get_fab(session, fab_code)
    version = await _active_route_version(session, product, route_code, now)
    steps = await route_steps(session, version.id)
    first, _skipped = rules.next_step(steps, 0, code or "")
    if first is None:
        raise Conflict("the route has no step to start at", code="lot.empty_route")
    if code is not None:
        if await session.scalar(select(Lot.id).where(Lot.code == code)) is not None:
            raise Conflict(f"lot {code} already exists", code="lot.duplicate")
        codes = [code]
    else:
        codes = await _next_codes(session, now.year, count)
    carrier: Carrier | None = None
    if carrier_code is not None:
        carrier = await get_by_key(
            session,
            Carrier,
            Carrier.code,
            carrier_code,
            code="carrier.not_found",
            what="carrier",
            for_update=True,
        )
        if carrier.fab_id != fab.id or carrier.state != CarrierState.AVAILABLE:
            raise Conflict(
                f"carrier {carrier_code} is not available in fab {fab_code}",
                code="carrier.not_available",
            )
        if carrier.capacity < wafer_count:
            raise Conflict("the carrier is too small for the lot", code="carrier.too_small")
        carrier.state = CarrierState.IN_USE
    started = []
    for lot_code_ in codes:
        first_step, _ = rules.next_step(steps, 0, lot_code_)
        assert first_step is not None  # the route has steps (checked above)
        lot = Lot(
            code=lot_code_,
            fab_id=fab.id,
            product_id=product.id,
            route_version_id=version.id,
            current_step_id=first_step.id,
            state=LotState.WAITING,
            lot_type=lot_type,
            priority_class=priority_class,
            due_at=due_at,
            wafer_count=wafer_count,
            carrier=carrier,
            started_at=now,
            step_entered_at=now,
            wafers=[
                Wafer(scribe_id=rules.scribe_id(lot_code_, slot), fab_id=fab.id, slot=slot)
                for slot in range(1, wafer_count + 1)
            ],
        )
        session.add(lot)
        await session.flush()
        change = Change(session, lot, 0)
        change.before = None  # type: ignore[assignment]
        await change.record(
            "START",
            actor=actor.username,
            at=now,
            details={"route_version": version.version, "lot_type": lot_type.value},
        )
        await arrive(session, lot, first_step, at=now)
        started.append(lot)
    return started
