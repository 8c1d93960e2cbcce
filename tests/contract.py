"""The API tests as a check of the contract: every problem+json answer they receive must be one
that /openapi.json declares for the operation (its status, and its code in ``x-problem-codes``).

``ContractCheck`` is an httpx response hook on the test clients (tests/conftest.py): an answer
the document does not declare fails the test that received it, naming what is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx

PROBLEM_JSON = "application/problem+json"

# (method, path template, status, code) of every problem seen in this run.
SEEN: set[tuple[str, str, int, str]] = set()


@dataclass
class ContractCheck:
    document: dict[str, Any]
    operations: list[tuple[str, re.Pattern[str], str, dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self.operations = []
        for path, item in self.document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
            for method, operation in item.items():
                self.operations.append((method.upper(), pattern, path, operation))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        # Literal paths first (/recipes/resolve before /recipes/{recipe}), as the router does.
        matches = [
            (template, op)
            for m, pattern, template, op in self.operations
            if m == method and pattern.match(path)
        ]
        matches.sort(key=lambda found: found[0].count("{"))
        return matches[0] if matches else None

    async def __call__(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        found = self.operation(response.request.method, response.request.url.path)
        if found is None or found[0] == "/readyz":  # no operation, or the probe's own shape
            return
        template, operation = found
        await response.aread()
        where = f"{response.request.method} {template}"
        content_type = response.headers.get("content-type", "")
        assert content_type.startswith(PROBLEM_JSON), f"{where}: error as {content_type}"
        code = response.json().get("code")
        declared = operation["responses"].get(str(response.status_code))
        assert declared is not None, (
            f"{where} answered {response.status_code} ({code}), which its contract does not "
            f"declare (declared: {sorted(k for k in operation['responses'] if k >= '400')})"
        )
        assert PROBLEM_JSON in declared["content"], f"{where} {response.status_code}"
        assert code in declared["x-problem-codes"], (
            f"{where} answered {response.status_code} {code}, not among its declared codes "
            f"{declared['x-problem-codes']}"
        )
        SEEN.add((response.request.method, template, response.status_code, code))


def contract_summary() -> str | None:
    if not SEEN:
        return None
    operations = {(method, path) for method, path, _, _ in SEEN}
    codes = {code for *_, code in SEEN}
    return (
        f"API contract: {len(SEEN)} distinct problems ({len(codes)} codes) over "
        f"{len(operations)} operations, each declared in /openapi.json"
    )
