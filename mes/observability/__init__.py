"""What a fab's IT watches: Prometheus metrics (``instruments``, served by ``exposition``),
structured logs (``logs``) and optional OpenTelemetry tracing (``tracing``).

The metric objects live in ``instruments`` only; the domains call its small recording functions,
so a metric's name, labels and buckets are defined once (docs/deployment.md lists them).
"""
