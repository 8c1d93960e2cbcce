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


# The example fab's names, put into some of the generated bodies of the lot chain (start lot ->
# track-in -> track-out -> hold -> release): random strings would name no product and no tool,
# and the stateful phase would never get past the first call. Every other case stays as drawn.
LOT_CHAIN: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/lots"): {"product": "LOGIC28", "fab": "F1"},
    ("POST", "/api/v1/lots/bulk-start"): {"product": "LOGIC28", "fab": "F1", "count": 2},
    ("POST", "/api/v1/lots/{lot}/track-in"): {"tool": "F1-WETC01"},
    ("POST", "/api/v1/lots/{lot}/track-out"): {"measurements": []},
    ("POST", "/api/v1/lots/{lot}/hold"): {"hold_code": "QUALITY"},
    ("POST", "/api/v1/lots/{lot}/release"): {"signature": {"reason": "fuzzed release"}},
}
WET_BENCHES = ("F1-WETC01", "F1-WETC02")
# Optional fields that would refer to things that do not exist or pin a stale version.
DROPPED = (
    *("route", "code", "carrier", "version", "step_sequence", "hold_ids", "hold_code"),
    *("wafers_processed", "outcome"),
)
_drawn = 0


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    global _drawn
    preset = LOT_CHAIN.get((case.operation.method.upper(), case.operation.path))
    positive = getattr(getattr(case.meta, "generation", None), "mode", None)
    if preset is None or not isinstance(case.body, dict) or str(positive) != "positive":
        return case
    _drawn += 1
    # Always in the stateful phase (chains need every link to succeed), every other case else.
    if _drawn % 2 or getattr(getattr(case.meta, "phase", None), "name", None) == "stateful":
        body = {k: v for k, v in case.body.items() if k not in DROPPED}
        case.body = {**body, **preset}
        if "tool" in preset:  # two wet benches of two lots each: spread the track-ins
            case.body["tool"] = WET_BENCHES[_drawn % len(WET_BENCHES)]
    return case
