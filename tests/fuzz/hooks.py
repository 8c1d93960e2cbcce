"""Schemathesis hooks loaded by the fuzz harness (SCHEMATHESIS_HOOKS=tests.fuzz.hooks)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.check
def problem_json_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error answer is RFC 9457 problem+json carrying the service's stable code."""
    if response.status_code < 400 or case.path == "/readyz":  # the probe's own shape
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if not content_type.startswith("application/problem+json"):
        raise AssertionError(f"{response.status_code} answered as {content_type!r}")
    body = response.json()
    for key in ("type", "title", "status", "detail", "code", "instance"):
        if key not in body:
            raise AssertionError(f"problem without {key!r}: {body}")
    if body["status"] != response.status_code:
        raise AssertionError(f"problem status {body['status']} on a {response.status_code}")
    return None
