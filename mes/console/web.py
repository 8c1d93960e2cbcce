"""Templates, static files, error pages: what every console route shares."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from mes.auth import roles
from mes.console.floor import age
from mes.console.sessions import ConsoleUser, LoginRequired
from mes.errors import MesError

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")

# ISA-101: grey for normal, colour only for states that ask for attention. The E10 palette is
# the customary one (green productive, yellow standby, blue engineering, orange scheduled down,
# red unscheduled down, grey non-scheduled); the stylesheet maps these class names.
E10_LABEL = {
    "PRD": "Productive",
    "SBY": "Standby",
    "ENG": "Engineering",
    "SDT": "Scheduled down",
    "UDT": "Unscheduled down",
    "NST": "Not scheduled",
}


def _hhmm(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


templates.env.globals["E10_LABEL"] = E10_LABEL
templates.env.globals["perms"] = roles
templates.env.filters["ts"] = _hhmm


def render(
    request: Request,
    template: str,
    user: ConsoleUser | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    now: datetime = request.app.state.clock.now()
    context.update(
        user=user,
        now=now,
        age=lambda then: age(now, then),
        csrf=user.csrf if user else "",
    )
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def login_redirect(request: Request, exc: LoginRequired) -> Response:
    from urllib.parse import quote

    target = "/console/login?next=" + quote(exc.next_url, safe="/")
    if is_htmx(request) or request.url.path.startswith("/console/events"):
        # htmx follows HX-Redirect with a full page load; a plain 303 would be swapped in.
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def problem_fragment(request: Request, user: ConsoleUser | None, exc: MesError) -> HTMLResponse:
    """A refusal shown where the action was, from its problem+json code, title and detail."""
    return render(
        request,
        "fragments/problem.html" if is_htmx(request) else "problem_page.html",
        user,
        status_code=200 if is_htmx(request) else exc.status,
        problem={"code": exc.code, "title": exc.title, "detail": exc.detail, "status": exc.status},
    )
