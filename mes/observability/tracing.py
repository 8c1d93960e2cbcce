"""OpenTelemetry tracing of requests and database statements, on only when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the standard OpenTelemetry variable; the spans go there
over OTLP/HTTP). Unset, nothing of OpenTelemetry is even imported: tracing costs nothing.

The packages come with the ``otel`` extra (``pip install fab-mes[otel]``; the image has it).
The usual ``OTEL_*`` variables apply (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, headers).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
_started: bool | None = None  # None: not tried yet in this process


def enabled() -> bool:
    return bool(os.environ.get(ENDPOINT_VARIABLE, "").strip())


def start(role: str) -> bool:
    """Set up the tracer provider and instrument SQLAlchemy and asyncpg, once per process and
    before the first engine is made (engines made earlier are not traced). True if tracing."""
    global _started
    if _started is not None:
        return _started
    _started = False
    if not enabled():
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "%s is set but OpenTelemetry is not installed (the otel extra)", ENDPOINT_VARIABLE
        )
        return False
    name = os.environ.get("OTEL_SERVICE_NAME") or f"fab-mes-{role}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # The instrumentation declares SQLAlchemy < 2.1; the engine events it uses are unchanged
    # in 2.1 (tests/observability/test_tracing.py sees the statements traced).
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    _started = True
    log.info("tracing %s to %s", name, os.environ[ENDPOINT_VARIABLE])
    return True


def instrument_app(app: Any) -> bool:
    """Trace the FastAPI app's requests (the probes and /metrics excepted)."""
    if not start("api"):
        return False
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    return True
