"""The crash run's reading of the tools' journal: a lot started on a second tool while a job of
another tool still holds it is reported (``crash_tools.lots_on_two_tools``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _crash_tools() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module("crash_tools")
    finally:
        sys.path.remove(str(ROOT / "bench"))


def _record(tool: str, job: str, state: str, lots: list[str]) -> dict[str, Any]:
    started = None if state == "AllowedToStart" else 1.0
    return {"tool": tool, "job": job, "state": state, "started": started, "lots": lots}


def test_a_lot_started_on_a_second_tool_while_running_on_the_first_is_reported() -> None:
    records = [
        _record("S1-WET01", "J1", "AllowedToStart", ["L1"]),
        _record("S1-WET01", "J1", "Running", ["L1"]),
        _record("S1-DEP01", "J2", "Running", ["L1", "L2"]),
        _record("S1-WET01", "J1", "Ended", ["L1"]),
    ]
    assert _crash_tools().lots_on_two_tools(records) == ["L1 on S1-WET01/J1 and S1-DEP01/J2"]


def test_a_lot_moving_from_tool_to_tool_in_turn_is_not_reported() -> None:
    records = [
        _record("S1-WET01", "J1", "Running", ["L1"]),
        _record("S1-WET01", "J1", "Running", ["L1"]),  # a substate change of the same job
        _record("S1-WET01", "J1", "Ended", ["L1"]),
        _record("S1-DEP01", "J2", "AllowedToStart", ["L1"]),
        _record("S1-DEP01", "J2", "Running", ["L1"]),
        _record("S1-DEP01", "J2", "Aborted", ["L1"]),
        _record("S1-DEP02", "J3", "Running", ["L1"]),
    ]
    assert _crash_tools().lots_on_two_tools(records) == []
