"""Puts the console into the service's FastAPI app: routes, static files, its event stream,
and the redirect to the login page for a missing or broken session."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from mes.console.actions_router import router as actions_router
from mes.console.engineering_router import router as engineering_router
from mes.console.feed import ChangeFeed, Interest
from mes.console.lot_actions_router import router as lot_actions_router
from mes.console.pages_router import router as pages_router
from mes.console.process_router import router as process_router
from mes.console.qualifications_router import router as qualifications_router
from mes.console.reports_router import router as reports_router
from mes.console.rule_sets_router import router as rule_sets_router
from mes.console.sessions import LoginRequired, User
from mes.console.spc_inbox_router import router as spc_inbox_router
from mes.console.spc_router import router as spc_router
from mes.console.tool_actions_router import router as tool_actions_router
from mes.console.web import STATIC_DIR, login_redirect, problem_fragment
from mes.errors import MesError

events_router = APIRouter(prefix="/console", include_in_schema=False)

Names = Annotated[str, Query(max_length=512, pattern=r"^[A-Za-z0-9_.,\-]*$")]


def _split(value: str) -> list[str]:
    return [v for v in value.split(",") if v][:50]


@events_router.get("/events")
async def events(
    request: Request, user: User, names: Names = "", prefixes: Names = "", fabs: Names = ""
) -> StreamingResponse:
    """One stream per page: the named events it asked for (``names``, or ``prefixes`` within
    ``fabs``), each telling the page which of its parts to fetch again."""
    feed: ChangeFeed = request.app.state.console_feed
    interest = Interest(
        names=frozenset(_split(names)),
        prefixes=tuple(_split(prefixes)),
        fabs=frozenset(_split(fabs)) or None,
    )
    return StreamingResponse(
        feed.stream(interest),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def install(app: FastAPI, feed: ChangeFeed) -> None:
    app.state.console_feed = feed
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(events_router)
    app.include_router(pages_router)
    app.include_router(actions_router)
    app.include_router(tool_actions_router)
    app.include_router(lot_actions_router)
    app.include_router(engineering_router)
    app.include_router(spc_router)
    app.include_router(spc_inbox_router)
    app.include_router(process_router)
    app.include_router(reports_router)
    app.include_router(rule_sets_router)
    app.include_router(qualifications_router)

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/console", status_code=307)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        return login_redirect(request, exc)

    api_handler = app.exception_handlers[MesError]
    unexpected_handler = app.exception_handlers[Exception]

    @app.exception_handler(MesError)
    async def _refused(request: Request, exc: MesError) -> Response:
        # Console pages answer a refusal (an unknown lot, an expired form) as a page or a
        # fragment; the API keeps its problem+json.
        if request.url.path.startswith("/console"):
            return problem_fragment(request, getattr(request.state, "console_user", None), exc)
        answer = api_handler(request, exc)
        return await answer if not isinstance(answer, Response) else answer

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        answer = unexpected_handler(request, exc)  # logs it, answers problem+json
        response = await answer if not isinstance(answer, Response) else answer
        if not request.url.path.startswith("/console"):
            return response
        internal = MesError("an unexpected error occurred; nothing was applied", code="internal")
        internal.status, internal.title = 500, "Internal error"
        return problem_fragment(request, getattr(request.state, "console_user", None), internal)
