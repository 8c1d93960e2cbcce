"""The API contract: every operation's error answers, found in the code and put in /openapi.json.

FastAPI documents a route's success and its 422 only. What else an operation may answer is the
set of ``MesError`` refusals that its endpoint and its dependencies can construct, directly or
through the functions they call. ``refusals_of`` finds them by reading the source: it walks each
function's syntax tree, notes every error built there (``RuleViolation("lot.on_hold", ...)``,
``NotFound(..., code="tool.not_found")``) and follows the calls it can resolve to functions of
``mes`` (module functions, ``module.function``, methods of ``self`` and of annotated parameters).
A code computed at run time cannot be read: a function that raises one names its codes with
``mes.errors.refuses`` instead. The test suite checks the result against every problem the API
tests see (tests/api/test_contract.py), so an unread code fails there, not in a client.

``install_contract`` replaces the app's ``openapi()`` with one that adds, per operation, each
error status with the ``Problem`` schema under ``application/problem+json`` and the codes it may
carry (``x-problem-codes``, and the schema's ``code`` enum), plus the answers every route shares:
401 and 403 from authentication, 422 from request validation, 413 for a body over the limit,
409 from the database's last word on a concurrent write.
"""

from __future__ import annotations

import ast
import inspect
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from types import FunctionType, ModuleType
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi

from mes import errors, links
from mes.db.transaction import WriteSession
from mes.problems import PROBLEM_JSON

PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"


@dataclass(frozen=True, order=True)
class Refusal:
    status: int
    code: str


# The answers of the framework and of the problem handlers (mes.problems), not of an endpoint.
VALIDATION = Refusal(422, "request.invalid")
# A path parameter holding a "/" (sent as %2F) is decoded before routing and then matches no
# route: the router's own 404, possible on every operation with a path parameter.
NO_ROUTE = Refusal(404, "http.not_found")
TOO_LARGE = Refusal(413, "request.too_large")
MALFORMED_BODY = Refusal(400, "request.malformed_body")
WRITE_RACES = frozenset(
    {Refusal(409, errors.StaleVersion.code), Refusal(409, "db.constraint_violated")}
)
# Extra answers shared by every route, registered by other modules (e.g. 503 when the database
# is unreachable), so that the contract says what the middleware does.
SHARED: set[Refusal] = set()

# ----------------------------------------------------------------------------------------------
# Reading the source
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    """What one function can raise: fixed refusals, and refusals whose code is a parameter."""

    refusals: frozenset[Refusal]
    by_parameter: frozenset[tuple[int, str]]  # (status, parameter name) of a computed code


@cache
def _functions_of_file(path: str) -> dict[int, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every function of a source file by its first line (the first decorator's, if any)."""
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    found: dict[int, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[min([node.lineno, *(d.lineno for d in node.decorator_list)])] = node
    return found


def _function_node(fn: FunctionType) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    path = fn.__code__.co_filename
    if not path.endswith(".py"):
        return None
    return _functions_of_file(path).get(fn.__code__.co_firstlineno)


def _resolve_name(name: str, fn: FunctionType) -> Any:
    """A global of ``fn``'s module, or a variable its closure holds (``lot_write``'s guard)."""
    if name in fn.__globals__:
        return fn.__globals__[name]
    if name in fn.__code__.co_freevars and fn.__closure__:
        cell = fn.__closure__[fn.__code__.co_freevars.index(name)]
        try:
            return cell.cell_contents
        except ValueError:  # not yet bound
            return None
    return None


def _annotation_class(annotation: Any) -> Any:
    """``Annotated[LotWrite, Depends(...)]`` -> ``LotWrite``."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation if isinstance(annotation, type) else None


def _parameter_types(fn: FunctionType) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation naming something only a type checker sees
        return {}
    return {name: cls for name, hint in hints.items() if (cls := _annotation_class(hint))}


def _resolve(expr: ast.expr, fn: FunctionType, types: dict[str, Any], owner: Any) -> Any:
    """The object an expression in ``fn`` names, where that can be known without running it."""
    if isinstance(expr, ast.Name):
        return _resolve_name(expr.id, fn)
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        base_name = expr.value.id
        if base_name == "self" and owner is not None:
            base = owner
        elif base_name in types:
            base = types[base_name]
        else:
            base = _resolve_name(base_name, fn)
        if isinstance(base, ModuleType | type):
            return (
                inspect.getattr_static(base, expr.attr, None)
                if isinstance(base, type)
                else getattr(base, expr.attr, None)
            )
    return None


# Code read for refusals: the service's own (the libraries raise no MesError).
READ_PACKAGES: tuple[str, ...] = ("mes.",)


def _as_function(obj: Any) -> FunctionType | None:
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    obj = inspect.unwrap(obj) if callable(obj) else obj
    if isinstance(obj, FunctionType) and obj.__module__.startswith(READ_PACKAGES):
        return obj
    return None


def _constant_str(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _constant_int(node: ast.expr | None) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    return None


def _error_built(
    call: ast.Call, cls: type[errors.MesError], parameters: list[str]
) -> tuple[set[Refusal], set[tuple[int, str]]]:
    """The refusal an error-class call builds: its code literal, or the parameter holding it."""
    if getattr(cls, "replays", False):
        return set(), set()
    keywords = {k.arg: k.value for k in call.keywords if k.arg}
    status = _constant_int(keywords.get("status")) or cls.status
    if issubclass(cls, errors.RuleViolation):
        code_node = call.args[0] if call.args else keywords.get("code")
    else:
        code_node = keywords.get("code")
        if code_node is None:
            return {Refusal(status, cls.code)}, set()
    code = _constant_str(code_node)
    if code is not None:
        return {Refusal(status, code)}, set()
    if isinstance(code_node, ast.Name) and code_node.id in parameters:
        return set(), {(status, code_node.id)}
    return set(), set()


def _argument(call: ast.Call, callee: FunctionType, parameter: str) -> str | None:
    """The literal a call passes for one of the callee's parameters, if it passes one."""
    for keyword in call.keywords:
        if keyword.arg == parameter:
            return _constant_str(keyword.value)
    names = list(inspect.signature(callee).parameters)
    if parameter in names and names.index(parameter) < len(call.args):
        return _constant_str(call.args[names.index(parameter)])
    return None


_in_progress: set[FunctionType] = set()


@cache
def _found(fn: FunctionType) -> _Found:
    node = _function_node(fn)
    declared = frozenset(Refusal(*pair) for pair in getattr(fn, "__refuses__", ()))
    if node is None or fn in _in_progress:
        return _Found(declared, frozenset())
    _in_progress.add(fn)
    try:
        refusals: set[Refusal] = set(declared)
        by_parameter: set[tuple[int, str]] = set()
        parameters = list(inspect.signature(fn).parameters)
        types = _parameter_types(fn)
        owner = _owner_class(fn)
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            target = _resolve(call.func, fn, types, owner)
            if isinstance(target, type) and issubclass(target, errors.MesError):
                fixed, computed = _error_built(call, target, parameters)
                refusals |= fixed
                by_parameter |= computed
                continue
            callee = _as_function(target) or _call_method(target)
            if callee is None:
                continue
            inner = _found(callee)
            refusals |= inner.refusals
            for status, parameter in inner.by_parameter:
                code = _argument(call, callee, parameter)
                if code is not None:
                    refusals.add(Refusal(status, code))
                elif parameter in parameters:
                    by_parameter.add((status, parameter))
        # Functions handed to another as arguments (``tx.run(start)``) are nested defs, read
        # above with the rest of the tree; module functions passed by name are followed here.
        for name in (n for n in ast.walk(node) if isinstance(n, ast.Name)):
            passed = _as_function(_resolve_name(name.id, fn))
            if passed is not None and passed is not fn:
                refusals |= _found(passed).refusals
        return _Found(frozenset(refusals), frozenset(by_parameter))
    finally:
        _in_progress.discard(fn)


def _owner_class(fn: FunctionType) -> Any:
    parts = fn.__qualname__.split(".")
    if len(parts) < 2 or "<locals>" in parts:
        return None
    return getattr(sys.modules.get(fn.__module__), parts[-2], None)


def _call_method(target: Any) -> FunctionType | None:
    """A class called as a dependency or an instance's ``__call__``."""
    if isinstance(target, type) and target.__module__.startswith(READ_PACKAGES):
        return _as_function(inspect.getattr_static(target, "__call__", None))
    return None


def refusals_of(fn: Callable[..., Any]) -> frozenset[Refusal]:
    """Every refusal ``fn`` can raise, as far as its source shows."""
    function = _as_function(fn)
    if function is None:
        function = _as_function(inspect.getattr_static(type(fn), "__call__", None))
    if function is None:
        return frozenset()
    return _found(function).refusals


# ----------------------------------------------------------------------------------------------
# Per operation
# ----------------------------------------------------------------------------------------------


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


_WRITE_SESSION_DEPENDENCY = typing.get_args(WriteSession)[1].dependency


def operation_refusals(route: Any) -> frozenset[Refusal]:
    """What one route (an ``APIRoute`` or FastAPI's ``RouteContext`` of one) may refuse with."""
    found: set[Refusal] = set(SHARED)
    calls = [d.call for d in _dependants(route.dependant) if d.call is not None]
    for call in calls:
        found |= refusals_of(call)
    # Parameters are validated, and a path or query with control characters is refused on
    # every route (mes.problems.RequestLimits).
    found.add(VALIDATION)
    if "{" in route.path:
        found.add(NO_ROUTE)
    if route.body_field is not None:
        found |= {TOO_LARGE, MALFORMED_BODY}
    if _WRITE_SESSION_DEPENDENCY in calls:
        found |= WRITE_RACES
    return frozenset(found)


# ----------------------------------------------------------------------------------------------
# The document
# ----------------------------------------------------------------------------------------------

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error answer (RFC 9457). ``code`` is stable; ``detail`` is for people.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "instance"],
    "properties": {
        "type": {"type": "string", "description": "a URI naming the code"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "``<domain>.<condition>``, e.g. lot.on_hold"},
        "instance": {"type": "string", "description": "the request's path"},
        "errors": {
            "type": "array",
            "description": "one entry per invalid field or item, where there are several",
            "items": {"type": "object"},
        },
    },
    "additionalProperties": True,
}

_TITLES = {
    400: "Bad request",
    401: "Not authenticated (no token, or an invalid or expired one)",
    403: "Authenticated, but not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    428: "Precondition required",
    429: "Too many requests",
    503: "Service unavailable; retry later",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "``Bearer``"}},
    429: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}},
}


def error_responses(refusals: frozenset[Refusal]) -> dict[str, Any]:
    """The OpenAPI responses of a set of refusals, one per status."""
    by_status: dict[int, list[str]] = {}
    for refusal in sorted(refusals):
        by_status.setdefault(refusal.status, []).append(refusal.code)
    responses: dict[str, Any] = {}
    for status, codes in sorted(by_status.items()):
        schema = {
            "allOf": [
                {"$ref": PROBLEM_SCHEMA_REF},
                {"properties": {"status": {"enum": [status]}, "code": {"enum": codes}}},
            ]
        }
        response: dict[str, Any] = {
            "description": f"{_TITLES.get(status, 'Refused')}: {', '.join(codes)}",
            "content": {PROBLEM_JSON: {"schema": schema}},
            "x-problem-codes": codes,
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[str(status)] = response
    return responses


def api_routes(app: FastAPI) -> Iterator[Any]:
    """The app's API operations (FastAPI's route contexts: the route as included)."""
    for context in routing.iter_route_contexts(app.routes):
        if isinstance(context.original_route, routing.APIRoute) and context.include_in_schema:
            yield context


def contract(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document with every operation's error answers."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    for route in api_routes(app):
        responses = error_responses(operation_refusals(route))
        for method in route.methods:
            operation = document["paths"][route.path_format][method.lower()]
            # FastAPI's own 422 gives way to the Problem one; answers a route declares itself
            # (the readiness probe's 503) stay.
            kept = {
                status: response
                for status, response in operation["responses"].items()
                if "HTTPValidationError" not in str(response.get("content"))
            }
            operation["responses"] = kept | responses
    links.add_to(document)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    # FastAPI's own 422 shape is replaced by Problem everywhere.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def install_contract(app: FastAPI) -> None:
    """Serve ``contract(app)`` as /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
