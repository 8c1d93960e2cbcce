"""Serving the metrics: ``/metrics`` on the API, a small port of its own for the roles without
HTTP (adapters, dispatcher: ``MES_METRICS_PORT``), and the ASGI middleware that times every
request and counts lot transactions."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi.routing import iter_route_contexts
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mes.observability import instruments
from mes.observability.logs import REQUEST_STATE

log = logging.getLogger(__name__)

# Where the problem handlers leave the code of the refusal they rendered (scope state), so the
# transaction counter can label the outcome without reading the response body.
PROBLEM_CODE_KEY = "problem_code"
# Lot transactions: the changing methods of the lot routes.
_LOT_ROUTES = "/api/v1/lots"
_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The route label of requests no API route served: unknown paths, static files.
OTHER = "other"


def note_problem(scope_state: Any, code: str) -> None:
    """Called by the problem handlers: this request was refused with ``code``."""
    setattr(scope_state, PROBLEM_CODE_KEY, code)


class Observe:
    """Outermost middleware: binds the request's state for the log lines, then records the
    request's latency by route template and status (paths no API route serves share one
    label, so that random URLs cannot grow the label set) and, for lot routes, the
    transaction's outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Route object → its full path template ("/api/v1/lots/{lot}/track-in"): FastAPI's
        # route knows only its path within its router. Made at the first request, when every
        # router is included.
        self._templates: dict[int, str] | None = None

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return OTHER
        if self._templates is None:
            self._templates = {
                id(context.original_route): context.path_format
                for context in iter_route_contexts(scope["app"].routes)
                if context.path_format
            }
        return self._templates.get(id(route)) or str(getattr(route, "path", OTHER))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        token = REQUEST_STATE.set(state)
        started = time.perf_counter()
        status = 500  # what the server answers if the app ends without a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            REQUEST_STATE.reset(token)
            route = scope.get("route")
            template = self._template(scope)
            method = scope["method"]
            instruments.http_request(method, template, status, time.perf_counter() - started)
            if method in _CHANGING and template.startswith(_LOT_ROUTES):
                outcome = "ok" if status < 400 else state.get(PROBLEM_CODE_KEY, f"http.{status}")
                instruments.lot_transaction(getattr(route, "name", template), outcome)


async def metrics_endpoint(_request: Request) -> Response:
    """Prometheus text format of this process's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def serve_metrics(port: int | None, role: str, host: str = "0.0.0.0") -> int | None:
    """For a role without HTTP: serve ``/metrics`` on ``port`` from a thread (None or 0: off).
    Returns the port it listens on."""
    instruments.role(role)
    if not port:
        return None
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_address[1])
    log.info("metrics of %s on %s:%d/metrics", role, host, bound)
    return bound
