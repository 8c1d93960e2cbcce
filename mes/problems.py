"""problem+json (RFC 9457) rendering of every error the service answers with.

The error tree itself lives in ``mes.errors`` (framework-free); this module is the HTTP face of
it, installed once by ``create_app``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, HTTPException, Request, routing
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mes.db.engine import outage_code
from mes.errors import MesError, StaleVersion
from mes.kit.api import UNPRINTABLE
from mes.observability.exposition import note_problem

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://fab-mes.dev/problems/"


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": instance,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# The framework's own refusals: unknown path or method, a body that is no JSON text at all
# (not UTF-8, say), a body over the size limit.
HTTP_CODES = {
    400: "request.malformed_body",
    404: "http.not_found",
    405: "http.method_not_allowed",
    413: "request.too_large",
}


def _methods_of(request: Request) -> set[str]:
    """The methods of the path as the OpenAPI document has it: of the most literal template
    that matches (``/lots/bulk-start`` is not ``/lots/{lot}``, though both match)."""
    by_template: dict[str, set[str]] = {}
    for route in routing.iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            template = str(getattr(route, "path_format", ""))
            by_template.setdefault(template, set()).update(getattr(route, "methods", None) or ())
    if not by_template:
        return set()
    return by_template[min(by_template, key=lambda template: template.count("{"))]


class RequestLimits:
    """Refuses, before any route sees them, a body over ``max_bytes`` (413) and a path or query
    string with control characters (422: ``%00`` in a query reached the database and failed).

    A declared ``Content-Length`` over the limit is answered at once; a body sent in chunks is
    counted as it arrives and cut off when it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = unquote(scope.get("query_string", b"").decode("latin-1"))
        if UNPRINTABLE.search(scope["path"]) or UNPRINTABLE.search(query):
            response = problem_response(
                status=422,
                code="request.invalid",
                title="Malformed request",
                detail="control characters are not allowed in the path or the query",
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        limit = self.max_bytes
        detail = f"the request body is larger than {limit} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            response = problem_response(
                status=413,
                code=HTTP_CODES[413],
                title="Request body too large",
                detail=detail,
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Raised inside the endpoint's body read: rendered by _http_error.
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


def _json_safe_validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic puts the offending exception object into ``ctx``; keep only what serialises.
    safe = []
    for err in exc.errors():
        safe.append(
            {
                "loc": list(err.get("loc", ())),
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return safe


def _problem(request: Request, **fields: Any) -> JSONResponse:
    # The code goes to the request's state too: the lot transaction counter labels refusals
    # with it (mes.observability.exposition).
    note_problem(request.state, fields["code"])
    return problem_response(**fields)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, expected or not, as one problem+json shape."""

    @app.exception_handler(MesError)
    async def _mes_error(request: Request, exc: MesError) -> JSONResponse:
        return _problem(
            request,
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(
            request,
            status=422,
            code="request.invalid",
            title="Malformed request",
            detail="The request does not match the expected shape; see errors.",
            instance=request.url.path,
            errors=_json_safe_validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, f"http.{exc.status_code}")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Every method of the path, not only those of the first route that matched it.
            headers["Allow"] = ", ".join(sorted(_methods_of(request)))
        return _problem(
            request,
            status=exc.status_code,
            code=code,
            title=str(exc.detail),
            detail=str(exc.detail),
            instance=request.url.path,
            headers=headers,
        )

    @app.exception_handler(StaleDataError)
    async def _stale(request: Request, exc: StaleDataError) -> JSONResponse:
        # Optimistic locking caught a concurrent writer between our read and our update.
        return _problem(
            request,
            status=409,
            code=StaleVersion.code,
            title=StaleVersion.title,
            detail="The record was changed by someone else; reload it and try again.",
            instance=request.url.path,
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # Services check business keys first; this is the database's last word on a race.
        log.info("integrity error on %s: %s", request.url.path, exc.orig)
        return _problem(
            request,
            status=409,
            code="db.constraint_violated",
            title="Conflict with existing data",
            detail="The change violates a database constraint (a duplicate or a missing "
            "reference); nothing was applied.",
            instance=request.url.path,
        )

    async def _database_outage(request: Request, exc: Exception) -> JSONResponse:
        code = outage_code(exc)
        if code is None:
            return await _unexpected(request, exc)
        # Nothing was applied (the transaction rolled back, or never began): safe to retry,
        # and with an Idempotency-Key safe even if the commit's answer was what got lost.
        log.warning("database unavailable on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        retry_after = getattr(request.app.state.settings, "database_retry_after_s", 5)
        locked = code == "db.locked"
        return _problem(
            request,
            status=503,
            code=code,
            title="Database busy" if locked else "Database unavailable",
            detail=(
                "The database is locked by another writer; nothing was applied. Retry later."
                if locked
                else "The database cannot be reached just now; nothing was applied. Retry later."
            ),
            instance=request.url.path,
            headers={"Retry-After": str(1 if locked else retry_after)},
        )

    for outage in (DBAPIError, SqlTimeoutError, TimeoutError, OSError):
        app.add_exception_handler(outage, _database_outage)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if outage_code(exc) is not None:  # raised where the specific handlers do not see it
            return await _database_outage(request, exc)
        log.exception("unhandled error on %s", request.url.path)
        return _problem(
            request,
            status=500,
            code="internal",
            title="Internal error",
            detail="An unexpected error occurred; nothing was applied.",
            instance=request.url.path,
        )
