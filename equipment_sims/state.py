"""A tool's own small state file: what survives a restart of its server.

Recipes, selected recipe, control state, counters, jobs (running and finished, with every
wafer's progress), what each station is doing, and the alarms. Times are simulated seconds of
the clock whose start is saved with them, so a file written under one clock is read under
another (the times move by the difference of the two starts).

The file is written atomically (a scratch file renamed into place) so a crash mid-write leaves
the previous state.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from mes.opcua.model import ChamberState, ControlState, JobState, JobSubstate, SubstrateState

from .recipes import Recipe
from .records import Alarm, Job, Wafer
from .tool import Tool

FORMAT = 1


def dump_tool(tool: Tool, clock_start: datetime) -> dict[str, Any]:
    jobs = list(tool.jobs.values())
    stations = []
    for station in tool.stations.values():
        job = station.job
        stations.append(
            {
                "name": station.name,
                "state": station.state.value,
                "job": job.job_order_id if job else None,
                "wafers": [job.wafers.index(w) for w in station.wafers] if job else [],
                "started_at": station.started_at,
                "ends_at": station.ends_at,
            }
        )
    return {
        "format": FORMAT,
        "tool_id": tool.spec.tool_id,
        "clock_start": clock_start.isoformat(),
        "now": tool.now,
        "control_state": tool.control_state.value,
        "selected_recipe": tool.selected_recipe,
        "recipes": {rid: r.body for rid, r in tool.recipes.items()},
        "wafers_processed_total": tool.wafers_processed_total,
        "wafers_measured": tool.measurement.wafers_measured,
        "jobs": [_dump_job(job) for job in jobs],
        "stations": stations,
        "alarms": [
            {
                "alarm_id": a.alarm_id,
                "text": a.text,
                "severity": a.severity,
                "breaking": a.breaking,
                "active": a.active,
                "acked": a.acked,
                "raised_at": a.raised_at,
            }
            for a in tool.alarms.values()
        ],
    }


def _dump_job(job: Job) -> dict[str, Any]:
    return {
        "job_order_id": job.job_order_id,
        "recipe_id": job.recipe_id,
        "lots": job.lots,
        "state": job.state.value,
        "substate": job.substate.value,
        "stored_at": job.stored_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "stop_requested": job.stop_requested,
        "chambers": list(job.chambers),
        "wafers": [
            {
                "lot_id": w.lot_id,
                "slot": w.slot,
                "substrate_id": w.substrate_id,
                "state": w.state.value,
                "chamber": w.chamber,
                "started_at": w.started_at,
                "ended_at": w.ended_at,
                "measurements": w.measurements,
            }
            for w in job.wafers
        ],
    }


def restore_tool(tool: Tool, data: dict[str, Any], clock_start: datetime) -> None:
    """Load ``data`` (from ``dump_tool``) into a fresh ``tool``."""
    if data.get("format") != FORMAT or data.get("tool_id") != tool.spec.tool_id:
        raise ValueError("state file is not this tool's")
    shift = (datetime.fromisoformat(data["clock_start"]) - clock_start).total_seconds()

    def t(value: float | None) -> float | None:
        return None if value is None else value + shift

    tool.control_state = ControlState(data["control_state"])
    tool.recipes = {rid: Recipe.from_body(rid, body) for rid, body in data["recipes"].items()}
    tool.selected_recipe = data["selected_recipe"]
    tool.wafers_processed_total = data["wafers_processed_total"]
    tool.measurement.wafers_measured = data["wafers_measured"]
    tool.now = data["now"] + shift
    tool.jobs = {}
    for raw in data["jobs"]:
        wafers = [
            Wafer(
                w["lot_id"],
                w["slot"],
                w["substrate_id"],
                SubstrateState(w["state"]),
                w["chamber"],
                t(w["started_at"]),
                t(w["ended_at"]),
                list(w["measurements"]),
            )
            for w in raw["wafers"]
        ]
        job = Job(
            job_order_id=raw["job_order_id"],
            recipe_id=raw["recipe_id"],
            lots=raw["lots"],
            wafers=wafers,
            state=JobState(raw["state"]),
            substate=JobSubstate(raw["substate"]),
            stored_at=raw["stored_at"] + shift,
            started_at=t(raw["started_at"]),
            ended_at=t(raw["ended_at"]),
            stop_requested=raw["stop_requested"],
            chambers=tuple(raw.get("chambers", ())),
        )
        tool.jobs[job.job_order_id] = job
    for raw in data["stations"]:
        station = tool.stations[raw["name"]]
        station.state = ChamberState(raw["state"])
        station.job = tool.jobs.get(raw["job"]) if raw["job"] else None
        if station.job is not None:
            station.wafers = [station.job.wafers[i] for i in raw["wafers"]]
            station.steps = tool.steps_of(station.job)
        station.started_at = raw["started_at"] + shift
        station.ends_at = raw["ends_at"] + shift
    tool.alarms = {
        a["alarm_id"]: Alarm(
            a["alarm_id"],
            a["text"],
            a["severity"],
            a["breaking"],
            a["active"],
            a["acked"],
            a["raised_at"] + shift,
        )
        for a in data["alarms"]
    }


def write_state(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None
