"""The lot moves router is matched first (mes.main): track-in and track-out are most of a fab's
requests, and FastAPI tries the routes in order. That is safe only while no other route of the
service matches a lot move's path with the same method, which this test holds."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from mes.config import Settings
from mes.main import create_app

_PARAM = re.compile(r"{[^}]+}")


def _routes(settings: Settings) -> list[tuple[str, set[str], Any, str]]:
    """(path template, methods, compiled path, module of the endpoint) of every route, in the
    order they are matched."""
    app = create_app(settings)

    def flatten(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            if hasattr(route, "effective_route_contexts"):
                yield from route.effective_route_contexts()
            else:
                yield route

    return [
        (
            r.path_format,
            set(getattr(r, "methods", None) or ()),
            r.path_regex,
            getattr(getattr(r, "endpoint", None), "__module__", ""),
        )
        for r in flatten(app.router.routes)
        if getattr(r, "path_regex", None) is not None and getattr(r, "path_format", None)
    ]


def _overlapping(routes: list[tuple[str, set[str], Any, str]], module: str) -> list[str]:
    """Routes of ``module`` whose path (parameters filled in) another route's pattern matches
    for a common method, or the reverse: for those, the order of matching decides."""
    found = []
    for path, methods, regex, owner in routes:
        if owner != module:
            continue
        sample = _PARAM.sub("X1", path)
        for other_path, other_methods, other_regex, other_owner in routes:
            if other_owner == module or not methods & other_methods:
                continue
            other_sample = _PARAM.sub("X1", other_path)
            if other_regex.match(sample) or regex.match(other_sample):
                found.append(f"{sorted(methods & other_methods)} {path} ~ {other_path}")
    return found


def test_lot_moves_match_no_other_route(settings: Settings) -> None:
    routes = _routes(settings)
    modules = [owner for _, _, _, owner in routes if owner.startswith("mes.")]
    first = modules.index("mes.lots.moves_router")
    # Only the login (a route or two, outside the authenticated API) is tried before them.
    assert set(modules[:first]) <= {"mes.auth.login_router", "mes.auth.router"}
    assert len(modules[:first]) <= 2
    assert _overlapping(routes, "mes.lots.moves_router") == []


def test_the_check_sees_an_overlap(settings: Settings) -> None:
    # /recipes/resolve (explain) is also a /recipes/{recipe}: it must come first, and does.
    assert _overlapping(_routes(settings), "mes.lots.explain_router") == [
        "['GET'] /api/v1/recipes/resolve ~ /api/v1/recipes/{recipe}"
    ]
