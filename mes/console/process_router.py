"""Engineering pages of the console: routes with their versions, steps, the change against the
version before and activation (e-signature); the qualification matrix (tool by recipe) with
qualifying and withdrawing. Reads go through the domains' own queries, edits through the same
service functions as the API. (The dispatching rule sets are ``rule_sets_router``.)"""

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
from mes.fabs.models import Fab, ToolGroup
from mes.kit.api import CODE_PATTERN
from mes.recipes import qualifications as recipe_qualifications
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


async def _codes(session: AsyncSession) -> tuple[list[str], list[str]]:
    fabs = list(await session.scalars(select(Fab.code).order_by(Fab.code)))
    groups = list(await session.scalars(select(ToolGroup.code).order_by(ToolGroup.code)))
    return fabs, groups


@router.get("/qualifications", response_class=HTMLResponse)
async def qualification_page(
    request: Request, user: User, fab: Code | None = None, tool_group: Code | None = None
) -> Response:
    """The standing qualifications of one tool group's recipes as a tool-by-recipe matrix."""
    fabs, groups = await read(request, _codes)
    chosen_fab = fab or (fabs[0] if fabs else "")
    chosen_group = tool_group or (groups[0] if groups else "")
    now = request.app.state.clock.now()
    rows = await read(
        request,
        lambda s: recipe_qualifications.qualification_matrix(
            s, now=now, tool_group=chosen_group, fab=chosen_fab
        ),
    )
    # Cells: (tool, recipe) -> the versions qualified there (chambers named).
    cells: dict[tuple[str, str], list[str]] = {}
    for _q, recipe, number, tool, chamber in rows:
        cells.setdefault((tool, recipe), []).append(
            f"v{number}" + (f" {chamber}" if chamber else "")
        )
    tools = sorted({tool for tool, _r in cells})
    recipes = sorted({recipe for _t, recipe in cells})
    return render(
        request, "qualifications.html", user, fabs=fabs, groups=groups, fab=chosen_fab,
        tool_group=chosen_group, tools=tools, recipes=recipes, cells=cells,
    )  # fmt: skip
