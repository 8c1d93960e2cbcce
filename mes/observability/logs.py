"""Logging for every process role: human-readable lines (``text``, the default, and ``make
run``'s) or one JSON object per line (``json``, for a log collector), chosen by
``MES_LOG_FORMAT``.

A JSON line carries the request id and the actor of the HTTP request it was logged in (the
audit trail records the same request id, so a log line and an audit record can be matched),
or the process's own actor (``adapter:…``, ``dispatcher:…``) outside requests.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# The ASGI scope state of the request being served (a dict the request id middleware and the
# route guard write into); set by mes.observability.exposition.Observe.
REQUEST_STATE: ContextVar[dict[str, Any] | None] = ContextVar("mes_request_state", default=None)
_process_actor: str | None = None

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Standard LogRecord attributes: anything else a caller passes in ``extra`` goes into the JSON.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
}


def set_process_actor(actor: str) -> None:
    """Who this process acts as, for lines logged outside an HTTP request."""
    global _process_actor
    _process_actor = actor


def request_context() -> tuple[str | None, str | None]:
    """(request id, actor) of the request being served, if any."""
    state = REQUEST_STATE.get()
    if state is None:
        return None, _process_actor
    principal = state.get("principal")
    actor = getattr(principal, "username", None) or _process_actor
    return state.get("request_id"), actor


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        request_id, actor = request_context()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if request_id is not None:
            line["request_id"] = request_id
        if actor is not None:
            line["actor"] = actor
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Root logging for a process role; asyncua's per-connection chatter (INFO) only from
    WARNING up, or a reconnect storm drowns everything else."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, root.level))
    # A server granting a shorter session timeout than asked is ordinary negotiation, yet
    # asyncua warns once per session: 30 lines at every start of the example fab.
    logging.getLogger("asyncua.client.client").addFilter(_not_session_timeout)
    if fmt == "json":
        # uvicorn's own handlers would print its lines as text: let them reach the root's.
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True


def _not_session_timeout(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Requested session timeout")


def uvicorn_log_config(fmt: str) -> dict[str, Any] | None:
    """``log_config`` for uvicorn: its default (text) or none at all (JSON: the root's)."""
    if fmt == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
