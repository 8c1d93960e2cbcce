"""The ASGI application: ``create_app(settings)`` wires settings, database, routers, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from mes import __version__
from mes.clock import Clock, SystemClock
from mes.config import Settings
from mes.db.engine import Database
from mes.durables.router import router as durables_router
from mes.equipment.router import router as equipment_router
from mes.errors import install_error_handlers
from mes.fabs.router import router as fabs_router
from mes.health import router as health_router
from mes.lots.router import router as lots_router
from mes.recipes.router import router as recipes_router
from mes.routes.router import router as routes_router

API_PREFIX = "/api/v1"


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the service. Tests pass their own database (bound to a rolled-back transaction)."""
    settings = settings or Settings()
    owns_database = database is None
    db = database or Database.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
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
    app.state.clock = clock or SystemClock()

    api = APIRouter(prefix=API_PREFIX)
    for router in (
        fabs_router,
        equipment_router,
        routes_router,
        recipes_router,
        lots_router,
        durables_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health_router)
    install_error_handlers(app)
    return app
