"""Engineering pages of the console: routes with their versions, steps, the change against the
version before and activation (e-signature), through the same service function as the API.
(The qualification matrix is ``qualifications_router``, the rule sets ``rule_sets_router``.)"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.auth import roles
from mes.console.actions import perform, read, signature
from mes.console.actions_router import form_of, run_action
from mes.console.sessions import PostingUser, User
from mes.console.web import render
from mes.kit.api import CODE_PATTERN
from mes.routes import service as routes_service
from mes.routes.models import Route

router = APIRouter(prefix="/console", include_in_schema=False)

Code = Annotated[str, Query(min_length=1, max_length=32, pattern=CODE_PATTERN)]
CodeInPath = Annotated[str, Path(min_length=1, max_length=32, pattern=CODE_PATTERN)]
Version = Annotated[int, Path(ge=1, le=1_000_000)]


async def _routes(session: AsyncSession) -> list[Route]:
    return list(
        await session.scalars(
            select(Route)
            .options(selectinload(Route.versions), selectinload(Route.product))
            .order_by(Route.code)
        )
    )


@router.get("/routes", response_class=HTMLResponse)
async def routes_page(request: Request, user: User) -> Response:
    """Every route with its versions (status, activation, when in force)."""
    found = await read(request, _routes)
    return render(request, "routes.html", user, routes=found)


@router.get("/routes/{route}/versions/{version}", response_class=HTMLResponse)
async def route_version_page(
    request: Request, user: User, route: CodeInPath, version: Version
) -> Response:
    """A version's steps, what changed against the version before, and (for a draft and an
    engineer who may) the activation form."""

    async def load(session: AsyncSession) -> tuple[Any, Any, list[Any]]:
        found = await routes_service.get_route(session, route)
        chosen = routes_service.find_version(found, version)
        changes: list[Any] = []
        if version > 1 and any(v.version == version - 1 for v in found.versions):
            _r, changes = await routes_service.diff_versions(session, route, version - 1, version)
        return found, chosen, changes

    found, chosen, changes = await read(request, load)
    return render(
        request, "route_version.html", user, route=found, version=chosen, changes=changes,
        may_activate=user.may(roles.ROUTE_ACTIVATE),
    )  # fmt: skip


@router.post("/routes/{route}/versions/{version}/activate", response_class=HTMLResponse)
async def activate(
    request: Request, route: CodeInPath, version: Version, user: PostingUser
) -> Response:
    form = await form_of(request)

    async def action() -> str:
        signed = signature(form.get("reason"), form.get("password"), "approval")

        async def work(session: AsyncSession) -> str:
            done = await routes_service.activate_version(
                session, route, version, actor=user.username, clock=request.app.state.clock
            )
            return f"Route {route} version {version} is {done.status.value}."

        return await perform(
            request, user, roles.ROUTE_ACTIVATE, "routes.activate_version", work,
            key=form.get("key"), signed=signed,
        )  # fmt: skip

    return await run_action(request, user, f"/console/routes/{route}/versions/{version}", action)
