"""Reading a fab description: which tools to simulate, on which ports.

The format is the seeded fab's (``mes/seed/example_fab.json``): ``tool_groups`` give each
group's ``processing_kind``; each entry of ``tools`` has ``code``, ``tool_group`` and optionally
``opcua_endpoint`` (its port is used), ``chambers``, ``max_lots`` (largest batch, in lots),
``min_lots``, ``vendor``, ``model``, ``fab``, ``area``. A tool may give ``processing_kind``
itself instead of a group. Tools without an endpoint get consecutive ports from ``base_port``.
Other top-level keys (products, routes, ...) are ignored, so the seed file can be used as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mes.opcua.model import ProcessingKind

from .spec import ToolSpec, family_of

DEFAULT_BASE_PORT = 4841


class FabFileError(ValueError):
    pass


def load_fab(
    path: Path | str,
    *,
    base_port: int = DEFAULT_BASE_PORT,
    fab: str | None = None,
    only: set[str] | None = None,
) -> list[ToolSpec]:
    data = json.loads(Path(path).read_text("utf-8"))
    return parse_fab(data, base_port=base_port, fab=fab, only=only)


def parse_fab(
    data: dict[str, Any],
    *,
    base_port: int = DEFAULT_BASE_PORT,
    fab: str | None = None,
    only: set[str] | None = None,
) -> list[ToolSpec]:
    kinds = {g["code"]: g.get("processing_kind", "") for g in data.get("tool_groups", [])}
    specs: list[ToolSpec] = []
    next_port = base_port
    used: set[int] = set()
    for raw in data.get("tools", []):
        code = raw.get("code")
        if not isinstance(code, str) or not code:
            raise FabFileError("every tool needs a code")
        if (fab and raw.get("fab") != fab) or (only and code not in only):
            continue
        group = raw.get("tool_group", "")
        try:
            kind = ProcessingKind(raw.get("processing_kind") or kinds.get(group, ""))
        except ValueError:
            raise FabFileError(f"{code}: unknown processing kind (tool group {group!r})") from None
        endpoint = raw.get("opcua_endpoint")
        if endpoint:
            port = urlparse(endpoint).port
            if port is None:
                raise FabFileError(f"{code}: endpoint {endpoint!r} has no port")
        else:
            while next_port in used:
                next_port += 1
            port = next_port
            next_port += 1
        if port in used:
            raise FabFileError(f"{code}: port {port} used twice")
        used.add(port)
        max_lots = int(raw.get("max_lots", 1))
        try:
            specs.append(
                ToolSpec(
                    tool_id=code,
                    kind=kind,
                    family=raw.get("family") or family_of(group, kind),
                    port=port,
                    tool_group=group,
                    chambers=tuple(raw.get("chambers", ())),
                    min_batch=int(raw.get("min_lots", 1)),
                    max_batch=max_lots,
                    manufacturer=raw.get("vendor", "Simulated Equipment Inc."),
                    model=raw.get("model", "SIM-1"),
                    location="/".join(str(raw[k]) for k in ("fab", "area") if raw.get(k)),
                    drift_per_wafer=float(raw.get("drift_per_wafer", 0.0)),
                    sensors=int(raw.get("sensors", 0)),
                )
            )
        except ValueError as exc:
            raise FabFileError(f"{code}: {exc}") from exc
    return specs
