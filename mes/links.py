"""Where a created resource lives and what a client can do next: ``Location`` and OpenAPI links.

Every 201 answer carries ``Location``, the path of what it created (its own GET where it has
one, else the collection it joined). The OpenAPI document declares links from an answer to the
operations that can follow it (start a lot, then track it in, out, hold and release it...), so
a generated client — or the fuzzer's stateful phase — can chain calls without guessing ids.
Both come from the tables below; ``check_tables`` (run when the document is built) refuses a
path or parameter that no operation has, so a renamed route cannot leave a dangling link.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API = "/api/v1"
CODE = "$response.body#/code"

# The path of what a POST created: a template, and where each of its parameters comes from
# ("/pointer" into the answer's body, or "path:<name>" of the request's path).
LOCATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "/fabs": ("/fabs/{fab}", {"fab": "/code"}),
    "/fabs/{fab}/areas": ("/fabs/{fab}/areas/{area}", {"fab": "path:fab", "area": "/code"}),
    "/tool-groups": ("/tool-groups/{group}", {"group": "/code"}),
    "/equipment": ("/equipment/{tool}", {"tool": "/code"}),
    "/equipment/{tool}/state-corrections": (
        "/equipment/{tool}/state-corrections",
        {"tool": "path:tool"},
    ),
    "/e10-substates": ("/e10-substates", {}),
    "/pm/plans": ("/pm/plans", {}),
    "/products": ("/products/{product}", {"product": "/code"}),
    "/routes": ("/routes/{route}", {"route": "/code"}),
    "/routes/{route}/versions": (
        "/routes/{route}/versions/{version}",
        {"route": "path:route", "version": "/version"},
    ),
    "/routes/{route}/versions/{version}/steps": (
        "/routes/{route}/versions/{version}",
        {"route": "path:route", "version": "path:version"},
    ),
    "/recipes/context-rules": ("/recipes/context-rules", {}),
    "/recipes": ("/recipes/{recipe}", {"recipe": "/name"}),
    "/recipes/{recipe}/versions": (
        "/recipes/{recipe}/versions/{version}",
        {"recipe": "path:recipe", "version": "/version"},
    ),
    "/recipes/{recipe}/versions/{version}/qualifications": (
        "/recipes/{recipe}/versions/{version}/qualifications",
        {"recipe": "path:recipe", "version": "path:version"},
    ),
    "/lots": ("/lots/{lot}", {"lot": "/code"}),
    "/lots/bulk-start": ("/lots", {}),
    "/lots/{lot}/future-actions": ("/lots/{lot}/future-actions", {"lot": "path:lot"}),
    "/lots/{lot}/split": ("/lots/{lot}", {"lot": "/child/code"}),
    "/dispatch/rule-sets": ("/dispatch/rule-sets", {}),
    "/hold-codes": ("/hold-codes", {}),
    "/start-plans": ("/start-plans/{plan}", {"plan": "/code"}),
    "/quality/plans": ("/quality/plans/{plan}", {"plan": "/name"}),
    "/quality/plans/{plan}/versions": (
        "/quality/plans/{plan}/versions/{version}",
        {"plan": "path:plan", "version": "/version"},
    ),
    "/quality/charts": ("/quality/charts/{chart_id}", {"chart_id": "/id"}),
    "/quality/charts/{chart_id}/limits": (
        "/quality/charts/{chart_id}/limits",
        {"chart_id": "path:chart_id"},
    ),
    "/carriers": ("/carriers/{carrier}", {"carrier": "/code"}),
    "/durables": ("/durables/{durable}", {"durable": "/code"}),
    "/sorter-jobs": ("/sorter-jobs/{job_id}", {"job_id": "/job/id"}),
    "/users": ("/users/{username}", {"username": "/username"}),
    "/users/{username}/certifications": ("/users/{username}", {"username": "path:username"}),
    "/users/{username}/tokens": ("/users/{username}/tokens", {"username": "path:username"}),
    "/lots/{lot}/jobs": ("/jobs/{job_order_id}", {"job_order_id": "/job_order_id"}),
    "/jobs": ("/jobs/{job_order_id}", {"job_order_id": "/job_order_id"}),
}

# (method, path, status) of an answer -> the operations it leads to, with their parameters.
LINKS: dict[tuple[str, str, str], list[tuple[str, str, dict[str, str]]]] = {
    ("post", "/lots", "201"): [
        ("get", "/lots/{lot}", {"lot": CODE}),
        ("post", "/lots/{lot}/track-in", {"lot": CODE}),
        ("post", "/lots/{lot}/hold", {"lot": CODE}),
        ("post", "/lots/{lot}/split", {"lot": CODE}),
        ("post", "/lots/{lot}/jobs", {"lot": CODE}),
        ("get", "/lots/{lot}/history", {"lot": CODE}),
    ],
    ("post", "/lots/{lot}/track-in", "200"): [
        ("post", "/lots/{lot}/track-out", {"lot": "$response.body#/lot/code"}),
    ],
    ("post", "/lots/{lot}/track-out", "200"): [
        ("post", "/lots/{lot}/track-in", {"lot": CODE}),
        ("post", "/lots/{lot}/hold", {"lot": CODE}),
    ],
    ("post", "/lots/{lot}/hold", "200"): [
        ("post", "/lots/{lot}/release", {"lot": CODE}),
        ("get", "/lots/{lot}/history", {"lot": CODE}),
    ],
    ("post", "/lots/{lot}/release", "200"): [
        ("post", "/lots/{lot}/track-in", {"lot": CODE}),
    ],
    ("post", "/lots/{lot}/split", "201"): [
        ("get", "/lots/{lot}", {"lot": "$response.body#/child/code"}),
        ("post", "/lots/{lot}/hold", {"lot": "$response.body#/child/code"}),
    ],
    ("post", "/jobs", "201"): [
        ("get", "/jobs/{job_order_id}", {"job_order_id": "$response.body#/job_order_id"}),
        ("post", "/jobs/{job_order_id}/commands", {"job_order_id": "$response.body#/job_order_id"}),
    ],
    ("post", "/fabs", "201"): [
        ("get", "/fabs/{fab}", {"fab": CODE}),
        ("patch", "/fabs/{fab}", {"fab": CODE}),
        ("post", "/fabs/{fab}/areas", {"fab": CODE}),
    ],
    ("post", "/fabs/{fab}/areas", "201"): [
        ("get", "/fabs/{fab}/areas/{area}", {"fab": "$request.path.fab", "area": CODE}),
    ],
    ("post", "/tool-groups", "201"): [("get", "/tool-groups/{group}", {"group": CODE})],
    ("post", "/equipment", "201"): [
        ("get", "/equipment/{tool}", {"tool": CODE}),
        ("patch", "/equipment/{tool}", {"tool": CODE}),
        ("post", "/equipment/{tool}/state", {"tool": CODE}),
    ],
    ("post", "/products", "201"): [("get", "/products/{product}", {"product": CODE})],
    ("post", "/routes", "201"): [
        ("get", "/routes/{route}", {"route": CODE}),
        ("post", "/routes/{route}/versions", {"route": CODE}),
    ],
    ("post", "/routes/{route}/versions", "201"): [
        (
            "post",
            "/routes/{route}/versions/{version}/steps",
            {"route": "$request.path.route", "version": "$response.body#/version"},
        ),
        (
            "post",
            "/routes/{route}/versions/{version}/activate",
            {"route": "$request.path.route", "version": "$response.body#/version"},
        ),
    ],
    ("post", "/recipes", "201"): [
        ("get", "/recipes/{recipe}", {"recipe": "$response.body#/name"}),
        ("post", "/recipes/{recipe}/versions", {"recipe": "$response.body#/name"}),
    ],
    ("post", "/recipes/{recipe}/versions", "201"): [
        (
            "post",
            "/recipes/{recipe}/versions/{version}/approve",
            {"recipe": "$request.path.recipe", "version": "$response.body#/version"},
        ),
        (
            "post",
            "/recipes/{recipe}/versions/{version}/qualifications",
            {"recipe": "$request.path.recipe", "version": "$response.body#/version"},
        ),
    ],
    ("post", "/carriers", "201"): [
        ("get", "/carriers/{carrier}", {"carrier": CODE}),
        ("post", "/carriers/{carrier}/clean", {"carrier": CODE}),
    ],
    ("post", "/durables", "201"): [
        ("get", "/durables/{durable}", {"durable": CODE}),
        ("post", "/durables/{durable}/move", {"durable": CODE}),
        ("post", "/durables/{durable}/state", {"durable": CODE}),
    ],
    ("post", "/users", "201"): [
        ("get", "/users/{username}", {"username": "$response.body#/username"}),
        ("post", "/users/{username}/tokens", {"username": "$response.body#/username"}),
    ],
    ("post", "/users/{username}/tokens", "201"): [
        (
            "post",
            "/users/{username}/tokens/{public_id}/revoke",
            {"username": "$request.path.username", "public_id": "$response.body#/public_id"},
        ),
    ],
}


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + API + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")


# Literal paths before templated ones (/lots/bulk-start before /lots/{lot}/...).
_LOCATION_PATTERNS = sorted(
    ((_pattern(path), target) for path, target in LOCATIONS.items()),
    key=lambda found: found[0].pattern.count("(?P"),
)


def _pointer(body: Any, pointer: str) -> Any:
    for part in pointer.strip("/").split("/"):
        body = body[part] if isinstance(body, dict) else None
    return body


def location(path: str, body: bytes) -> str | None:
    """The Location of a 201 answer to a POST on ``path`` with ``body``."""
    for pattern, (template, params) in _LOCATION_PATTERNS:
        if (match := pattern.match(path)) is None:
            continue
        answer = json.loads(body) if body else {}
        values = {}
        for name, source in params.items():
            value = match[source[5:]] if source.startswith("path:") else _pointer(answer, source)
            if value is None:
                return None
            values[name] = str(value)
        return API + template.format(**values)
    return None


class CreatedLocation:
    """Adds ``Location`` to every 201 answer (the body is small: one created record)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_with_location(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] == 201:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            headers = list(start["headers"])
            where = location(scope["path"], body)
            if where is not None:
                headers.append((b"location", where.encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_with_location)


def add_to(document: dict[str, Any]) -> None:
    """Put the Location headers and the links into an OpenAPI document."""
    paths = document["paths"]
    check_tables(paths)
    for path in LOCATIONS:
        created = paths[API + path]["post"]["responses"]["201"]
        created["headers"] = {
            "Location": {
                "description": "the path of what was created",
                "required": True,
                "schema": {"type": "string"},
            }
        }
    for (method, path, status), targets in LINKS.items():
        response = paths[API + path][method]["responses"][status]
        links = response.setdefault("links", {})
        for target_method, target_path, parameters in targets:
            target = paths[API + target_path][target_method]
            links[target["operationId"]] = {
                "operationId": target["operationId"],
                "parameters": parameters,
            }


def _require(condition: bool, what: object) -> None:
    if not condition:
        raise LookupError(f"mes.links names what the API does not have: {what}")


def check_tables(paths: dict[str, Any]) -> None:
    """Every table entry names an operation and parameters that exist (KeyError otherwise)."""
    for path, (template, params) in LOCATIONS.items():
        _require("201" in paths[API + path]["post"]["responses"], path)
        _require(set(re.findall(r"\{(\w+)\}", template)) == set(params), path)
    for (method, path, status), targets in LINKS.items():
        _require(status in paths[API + path][method]["responses"], (method, path, status))
        for target_method, target_path, parameters in targets:
            target = paths[API + target_path][target_method]
            names = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
            _require(names == set(parameters), (target_method, target_path))
