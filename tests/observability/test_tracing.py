"""OpenTelemetry tracing: off and free without OTEL_EXPORTER_OTLP_ENDPOINT; with it, request
and database spans reach an OTLP/HTTP receiver (a real one, in this test, on loopback).

Each case runs in a fresh interpreter: tracing is set up once per process and patches
libraries globally."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SCRIPT = """
import asyncio, sys
import httpx
from mes.config import Settings
from mes.db import migrate
from mes.main import create_app

async def main():
    app = create_app(Settings(database_url=sys.argv[1]), background=False)
    await migrate.upgrade(app.state.db.engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://mes.test"
    ) as client:
        assert (await client.get("/api/v1/equipment")).status_code == 401
        login = await client.post("/api/v1/auth/token", data={"username": "x", "password": "y"})
        assert login.status_code == 401, login.text
    await app.state.db.dispose()

asyncio.run(main())
from opentelemetry import trace
provider = trace.get_tracer_provider()
print("provider", type(provider).__name__)
if hasattr(provider, "force_flush"):
    provider.force_flush()
print("sdk", "opentelemetry.sdk" in sys.modules)
print("instrumentation", any(m.startswith("opentelemetry.instrumentation") for m in sys.modules))
"""


def _run(tmp_path: Path, endpoint: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint is not None:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="mes-under-test")
    url = f"sqlite+aiosqlite:///{tmp_path / 'tracing.db'}"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_an_endpoint_nothing_of_tracing_is_set_up(tmp_path: Path) -> None:
    out = _run(tmp_path, None)
    # FastAPI itself imports the OpenTelemetry API when it is installed; the SDK, exporter and
    # instrumentations stay out, and the API's provider is the do-nothing proxy.
    assert "provider ProxyTracerProvider" in out
    assert "sdk False" in out
    assert "instrumentation False" in out


class _Receiver(BaseHTTPRequestHandler):
    exports: list[ExportTraceServiceRequest] = []  # noqa: RUF012  # shared with the test

    def do_POST(self) -> None:  # http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
            self.exports.append(message)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def test_with_an_endpoint_requests_and_statements_are_traced(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = _run(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert "provider TracerProvider" in out
    spans = [
        (resource.resource, span)
        for export in _Receiver.exports
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert spans, "no span arrived"
    services = {
        attribute.value.string_value
        for resource, _span in spans
        for attribute in resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"mes-under-test"}
    names = {span.name for _resource, span in spans}
    assert any("/api/v1/equipment" in name for name in names), names
    assert any("/api/v1/auth/token" in name for name in names), names

    def attributes(span: object) -> dict[str, str]:
        return {a.key: a.value.string_value for a in span.attributes}  # type: ignore[attr-defined]

    statements = [span for _r, span in spans if attributes(span).get("db.system") == "sqlite"]
    assert statements, names  # the login's account lookup, the migration's DDL
