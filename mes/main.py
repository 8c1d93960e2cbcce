"""The ASGI application: ``create_app(settings)`` wires settings, database, routers, errors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Depends, FastAPI

from mes import __version__
from mes.audit import recorder
from mes.audit.router import router as audit_router
from mes.audit.sealer import seal_audit_forever
from mes.auth import principals
from mes.auth.dependencies import authenticated
from mes.auth.principals import PrincipalCache
from mes.auth.router import login_router
from mes.auth.router import router as auth_router
from mes.carriers.router import router as carrier_moves_router
from mes.clock import Clock, SystemClock
from mes.config import Settings
from mes.console import mount as console
from mes.console.feed import ChangeFeed
from mes.contract import install_contract
from mes.db.engine import Database
from mes.dispatch.router import router as dispatch_router
from mes.durables.router import durables_router
from mes.durables.router import router as carriers_router
from mes.equipment import wip
from mes.equipment.router import metrics_router, pm_router, substates_router
from mes.equipment.router import router as equipment_router
from mes.equipment.signals import watch_signals_forever
from mes.exchange.router import router as exchange_router
from mes.fabs.router import router as fabs_router
from mes.health import router as health_router
from mes.jobs.router import lot_jobs_router
from mes.jobs.router import router as jobs_router
from mes.kit.request_id import RequestIdMiddleware
from mes.links import CreatedLocation
from mes.lots.control_router import router as lot_control_router
from mes.lots.explain_router import router as recipe_explain_router
from mes.lots.holds_router import router as lot_holds_router
from mes.lots.moves_router import router as lot_moves_router
from mes.lots.qtime import watch_qtime_forever
from mes.lots.router import hold_codes_router
from mes.lots.router import router as lots_router
from mes.lots.service import lots_running_on
from mes.lots.wafers_router import router as lot_wafers_router
from mes.observability import instruments, tracing
from mes.observability.exposition import Observe, metrics_endpoint
from mes.opcua.router import router as connection_router
from mes.planning.router import router as start_plans_router
from mes.problems import RequestLimits, install_error_handlers
from mes.products.router import router as products_router
from mes.quality import collection as quality_collection
from mes.quality.charts_router import router as quality_charts_router
from mes.quality.plans_router import router as quality_plans_router
from mes.recipes.router import router as recipes_router
from mes.reports.router import router as reports_router
from mes.routes.router import router as routes_router
from mes.simulation.jobs import WhatIfJobs
from mes.simulation.router import router as whatif_router

API_PREFIX = "/api/v1"


def settle_heap() -> None:
    """Move what start-up made (modules, mappers, templates, caches) out of the collector's
    sight: a full collection then walks only what requests make, not the whole heap again (long
    pauses on a large heap: a thousand-tile board's p95 was mostly collector pauses). Only when
    the service owns its process and database, not in tests that build many apps."""
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    clock: Clock | None = None,
    background: bool | None = None,
) -> FastAPI:
    """Build the service.

    Tests pass their own database (bound to a rolled-back transaction); background work (the
    audit sealer) then stays off unless asked for.
    """
    settings = settings or Settings()
    # Every session of the service writes its audit records in the same flush.
    recorder.install()
    wip.install(lots_running_on)
    quality_collection.install()  # data collection and SPC in every track-out
    principals.install()
    tracing.start("api")  # before the engine is made, so that its statements are traced
    instruments.role("api")
    owns_database = database is None
    db = database or Database.from_settings(settings)
    clock = clock or SystemClock()
    run_background = owns_database if background is None else background
    feed = ChangeFeed(db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        registry = None
        if run_background and settings.adapters_enabled:
            from mes.opcua.runtime import build_registry

            # First: unusable OPC UA security settings stop the start before any task runs.
            registry = build_registry(db, clock, settings)
        sealer = (
            asyncio.create_task(seal_audit_forever(db, clock, settings.audit_seal_interval_s))
            if run_background
            else None
        )
        watchdog = (
            asyncio.create_task(watch_signals_forever(db, clock, settings.signal_timeout_s))
            if run_background and settings.signal_timeout_s > 0
            else None
        )
        qtime_watch = (
            asyncio.create_task(
                watch_qtime_forever(
                    db, clock, settings.qtime_check_interval_s, settings.qtime_warn_s
                )
            )
            if run_background and settings.qtime_check_interval_s > 0
            else None
        )
        pruner = None
        if run_background and settings.retention_interval_s > 0:
            from mes.retention.service import prune_forever

            pruner = asyncio.create_task(prune_forever(db, clock, settings), name="retention")
        adapters = None
        if registry is not None:
            adapters = asyncio.create_task(registry.run(), name="opcua-adapters")
        dispatcher = None
        wake_dispatcher = None
        if run_background and settings.dispatch_interval_s > 0 and settings.dispatch_fabs:
            from mes.dispatch.scheduler import Dispatcher, parse_fabs
            from mes.opcua.registry import default_owner

            app_dispatcher = Dispatcher(
                db,
                clock,
                parse_fabs(settings.dispatch_fabs),
                owner=default_owner(),
                interval_s=settings.dispatch_interval_s,
                lease_ttl_s=settings.dispatch_lease_ttl_s,
                top_n=settings.dispatch_top_n,
                min_gap_s=settings.dispatch_min_gap_s,
            )
            _app.state.dispatcher = app_dispatcher
            dispatcher = asyncio.create_task(app_dispatcher.run(), name="dispatcher")
            wake_dispatcher = app_dispatcher.wake
        releaser = None
        if run_background and settings.release_enabled:
            from mes.opcua.registry import default_owner
            from mes.planning.releaser import Releaser

            app_releaser = Releaser(
                db,
                clock,
                owner=default_owner(),
                interval_s=settings.release_interval_s,
                lease_ttl_s=settings.release_lease_ttl_s,
                # New lots wait at their first step: let the dispatcher see them now.
                on_release=wake_dispatcher,
            )
            releaser = asyncio.create_task(app_releaser.run(), name="releaser")
        if owns_database:
            settle_heap()
        try:
            yield
        finally:
            await feed.stop()  # first: open console streams would hold up the shutdown
            await _app.state.whatif.close()
            for task in (releaser, dispatcher, adapters, sealer, watchdog, qtime_watch, pruner):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if owns_database:
                await db.dispose()

    app = FastAPI(
        title="Fab MES",
        version=__version__,
        summary="Lots, routes, recipes and equipment across a network of fabs",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.clock = clock
    app.state.whatif = WhatIfJobs()
    # Verified bearer tokens, per database (mes.auth.principals).
    app.state.principals = WeakKeyDictionary[Database, PrincipalCache]()

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authenticated)])
    for router in (
        # First: a request is matched against the routes in this order (twice, by FastAPI's
        # included routers), and track-in/track-out are most of a fab's requests; their paths
        # match no other route (tests/api/test_route_order.py), so the order changes nothing else.
        lot_moves_router,
        fabs_router,
        equipment_router,
        substates_router,
        pm_router,
        metrics_router,
        products_router,
        routes_router,
        recipe_explain_router,  # before recipes_router: /recipes/resolve is no recipe name
        recipes_router,
        lots_router,
        start_plans_router,
        lot_holds_router,
        lot_wafers_router,
        lot_control_router,
        dispatch_router,
        hold_codes_router,
        carriers_router,
        carrier_moves_router,
        durables_router,
        auth_router,
        audit_router,
        exchange_router,
        lot_jobs_router,
        jobs_router,
        connection_router,
        quality_plans_router,
        quality_charts_router,
        whatif_router,
        reports_router,
    ):
        api.include_router(router)
    app.include_router(login_router, prefix=API_PREFIX)
    app.include_router(api)
    app.include_router(health_router)
    app.add_middleware(CreatedLocation)
    app.add_middleware(RequestLimits, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(Observe)  # outermost: times everything the others do too
    if settings.metrics_enabled:
        app.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)
    install_error_handlers(app)
    console.install(app, feed)
    install_contract(app)
    tracing.instrument_app(app)
    return app
