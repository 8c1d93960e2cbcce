"""Data collection (EDC) rules, pure: what a plan's parameters say, which values a track-out
must bring for them, and which of the values it brings are acceptable.

A parameter names where its values come from (``source``): ``operator`` (typed in at the
track-out), ``metrology`` (the sites a metrology tool measured on each wafer) or
``pv.<Name>.<mean|min|max>`` (a statistic of a process value the tool sampled while the wafer
was in process). An operator's track-out names values by parameter; the tool's by source, so the
same plan serves a step run by hand and one run by the adapter.

The sample plan is a list of wafer slots (empty: every wafer) and a number of sites per wafer.
Of the sampled slots, those holding a processed wafer of the lot must be measured; a lot holding
none of them (a small or split lot) measures its first wafer instead, so no lot passes unmeasured.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mes.lots.commands import Reading
from mes.quality.rules import out_of_spec

# ``pv.<Name>.<stat>``: the statistic over the time each wafer was in process; ``job.pv.…``:
# over the whole job (one value per job, given to every wafer of the lot: sample one wafer).
SOURCE_PATTERN = r"^(operator|metrology|(job\.)?pv\.[A-Za-z][A-Za-z0-9_]{0,47}\.(mean|min|max))$"
_SOURCE_RE = re.compile(SOURCE_PATTERN)
MAX_SITES = 25


class ValueKind(StrEnum):
    NUMBER = "number"
    INTEGER = "integer"


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    kind: ValueKind
    unit: str | None
    source: str
    wafers: tuple[int, ...]  # sampled slots; empty: every wafer
    sites: int
    lsl: float | None
    target: float | None
    usl: float | None
    required: bool

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ParameterSpec:
        return cls(
            name=str(raw["name"]),
            kind=ValueKind(raw.get("kind", "number")),
            unit=raw.get("unit"),
            source=str(raw.get("source", "operator")),
            wafers=tuple(int(s) for s in raw.get("wafers") or ()),
            sites=int(raw.get("sites", 1)),
            lsl=_opt_float(raw.get("lsl")),
            target=_opt_float(raw.get("target")),
            usl=_opt_float(raw.get("usl")),
            required=bool(raw.get("required", True)),
        )

    def out_of_spec(self, value: float) -> bool:
        return out_of_spec(value, self.lsl, self.usl)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def parameters(body: Mapping[str, Any]) -> tuple[ParameterSpec, ...]:
    return tuple(ParameterSpec.from_json(p) for p in body.get("parameters", ()))


def plan_problems(specs: Sequence[ParameterSpec]) -> list[str]:
    """Why a plan body cannot be approved (empty: it can)."""
    problems = []
    if not specs:
        problems.append("a plan needs at least one parameter")
    names = [s.name for s in specs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"parameter {name!r} appears more than once")
    for s in specs:
        where = f"parameter {s.name!r}"
        if not _SOURCE_RE.match(s.source):
            problems.append(f"{where}: source must be operator, metrology or pv.<Name>.<stat>")
        if s.source.startswith("pv.") and s.sites != 1:
            problems.append(f"{where}: a process-value statistic is one value per wafer (sites 1)")
        if not 1 <= s.sites <= MAX_SITES:
            problems.append(f"{where}: sites must be 1..{MAX_SITES}")
        if any(not 1 <= slot <= 25 for slot in s.wafers) or len(set(s.wafers)) != len(s.wafers):
            problems.append(f"{where}: wafers are distinct slots 1..25")
        if s.lsl is not None and s.usl is not None and not s.lsl < s.usl:
            problems.append(f"{where}: lsl must be below usl")
        if s.target is not None and (
            (s.lsl is not None and s.target < s.lsl) or (s.usl is not None and s.target > s.usl)
        ):
            problems.append(f"{where}: the target lies outside the specification limits")
    return problems


def sampled_slots(spec: ParameterSpec, slots: Iterable[int]) -> tuple[int, ...]:
    """The slots of the lot's processed wafers that the sample plan measures."""
    present = sorted(set(slots))
    if not spec.wafers:
        return tuple(present)
    chosen = tuple(s for s in present if s in spec.wafers)
    return chosen or tuple(present[:1])


@dataclass(frozen=True)
class Collected:
    parameter: str
    slot: int
    site: int
    value: float
    chamber: str | None


@dataclass(frozen=True)
class Problem:
    parameter: str
    slot: int | None
    site: int | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "parameter": self.parameter,
            "slot": self.slot,
            "site": self.site,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Missing:
    parameter: str
    slot: int
    sites: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"parameter": self.parameter, "slot": self.slot, "sites": list(self.sites)}


@dataclass(frozen=True)
class Collection:
    values: tuple[Collected, ...]
    invalid: tuple[Problem, ...]
    missing: tuple[Missing, ...]


def _number(value: object, kind: ValueKind) -> float | str:
    """The value as a float, or why it is not one of ``kind``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"a {kind.value} is expected, not {type(value).__name__}"
    number = float(value)
    if not math.isfinite(number):
        return "the value is not finite"
    if kind is ValueKind.INTEGER and not number.is_integer():
        return "an integer is expected"
    return number


def collect(
    specs: Sequence[ParameterSpec],
    readings: Sequence[Reading],
    slots: Iterable[int],
    *,
    by_tool: bool,
) -> Collection:
    """Match a track-out's readings to the plan: the values kept, the readings refused, and the
    required values not there. A tool reports more than a plan asks (every wafer, every site,
    every process value): what the plan does not sample is ignored then, not refused."""
    present = set(slots)
    sampled = {s.name: set(sampled_slots(s, present)) for s in specs}
    by_name = {s.name: s for s in specs}
    by_source: dict[str, list[ParameterSpec]] = {}
    for s in specs:
        if s.source != "operator":
            by_source.setdefault(s.source, []).append(s)
    kept: dict[tuple[str, int, int], Collected] = {}
    invalid: list[Problem] = []
    for r in readings:
        targets = [by_name[r.parameter]] if r.parameter in by_name else []
        if by_tool:
            targets += by_source.get(r.parameter, [])
        if not targets:
            if not by_tool:
                invalid.append(Problem(r.parameter, r.slot, r.site, "not a parameter of the plan"))
            continue
        for spec in targets:
            problem = _judge(spec, r, present, sampled[spec.name], by_tool)
            if problem is None:
                continue  # ignored (a tool's value the plan does not sample)
            if isinstance(problem, str):
                invalid.append(Problem(spec.name, r.slot, r.site, problem))
                continue
            key = (spec.name, problem.slot, problem.site)
            if key in kept:
                if not by_tool:
                    invalid.append(Problem(spec.name, r.slot, r.site, "given twice"))
                continue
            kept[key] = problem
    missing = []
    for spec in specs:
        if not spec.required:
            continue
        for slot in sorted(sampled[spec.name]):
            gaps = tuple(
                site for site in range(1, spec.sites + 1) if (spec.name, slot, site) not in kept
            )
            if gaps:
                missing.append(Missing(spec.name, slot, gaps))
    ordered = tuple(kept[k] for k in sorted(kept))
    return Collection(ordered, tuple(invalid), tuple(missing))


def _judge(
    spec: ParameterSpec, r: Reading, present: set[int], sampled: set[int], by_tool: bool
) -> Collected | str | None:
    number = _number(r.value, spec.kind)
    if isinstance(number, str):
        return number
    if r.unit is not None and r.unit != spec.unit:
        return f"unit {r.unit!r}; the plan measures {spec.name} in {spec.unit!r}"
    if r.slot is None:
        return "names no wafer slot"
    if r.slot not in present:
        return None if by_tool else f"slot {r.slot} holds no processed wafer of the lot"
    if r.slot not in sampled:
        return None if by_tool else f"slot {r.slot} is not in the sample plan"
    site = r.site if r.site is not None else 1
    if not 1 <= site <= spec.sites:
        return None if by_tool else f"site {site} is outside 1..{spec.sites}"
    return Collected(spec.name, r.slot, site, number, r.chamber)


def specificity(route: bool, product: bool, tool_group: bool) -> int:
    """Of the plans matching a step, the most specific applies: product before route before
    tool group (a product's own plan is the most deliberate choice)."""
    return 4 * product + 2 * route + tool_group
