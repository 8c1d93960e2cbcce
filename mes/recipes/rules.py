"""Recipe body rules: canonical form and checksum.

The checksum is SHA-256 over a canonical JSON form of the body (keys sorted, no insignificant
whitespace, UTF-8), so the same parameters always give the same checksum whatever order or
formatting they arrived in, and the OPC UA adapter can compare it with what a tool reports.

Also here: validation of a body against its tool group's parameter schema, differences between
two bodies, and context resolution (which recipe a step's logical recipe means on a given
product, step, tool group, tool and chamber; SEMI E40/E94 leave this to the host).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def canonical_body(body: dict[str, Any]) -> bytes:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def body_checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_body(body)).hexdigest()


# ---- parameter schema per tool group ---------------------------------------------------


class Kind(enum.StrEnum):
    NUMBER = "number"
    TEXT = "text"
    FLAG = "flag"


@dataclass(frozen=True)
class ParameterSpec:
    """What the tools of a group accept for one parameter."""

    name: str
    kind: Kind
    unit: str | None = None
    lower: float | None = None
    upper: float | None = None
    required: bool = False


def _kind_of(value: Any) -> Kind:
    if isinstance(value, bool):
        return Kind.FLAG
    if isinstance(value, int | float):
        return Kind.NUMBER
    return Kind.TEXT


def body_problems(
    parameters: Sequence[Mapping[str, Any]], specs: Mapping[str, ParameterSpec]
) -> list[str]:
    """Everything in a recipe body that its tool group's parameter schema does not allow.

    A tool group without a schema (no specs) accepts any well-formed body: the schema is how a
    fab opts in to checking, tool group by tool group. With a schema, a recipe may name only
    known parameters, of the right kind and unit, with its value and its own limits inside the
    tool's limits, and must set every required parameter.
    """
    if not specs:
        return []
    problems = []
    given = {p["name"]: p for p in parameters}
    for name, parameter in given.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(f"{name}: not a parameter of this tool group")
            continue
        kind = _kind_of(parameter["value"])
        if kind != spec.kind:
            problems.append(f"{name}: must be a {spec.kind.value}, got a {kind.value}")
            continue
        if (parameter.get("unit") or None) != (spec.unit or None):
            problems.append(f"{name}: unit must be {spec.unit!r}, got {parameter.get('unit')!r}")
        if spec.kind != Kind.NUMBER:
            continue
        for field in ("value", "min", "max"):
            number = parameter.get(field)
            if number is None:
                continue
            if spec.lower is not None and number < spec.lower:
                problems.append(f"{name}: {field} {number} is below the tool limit {spec.lower}")
            if spec.upper is not None and number > spec.upper:
                problems.append(f"{name}: {field} {number} is above the tool limit {spec.upper}")
    for name, spec in specs.items():
        if spec.required and name not in given:
            problems.append(f"{name}: required by this tool group")
    return problems


@dataclass(frozen=True)
class ParameterChange:
    """``kind``: added, removed or changed; ``fields`` lists what changed for ``changed``."""

    kind: str
    name: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    fields: tuple[str, ...] = ()


def diff_bodies(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[ParameterChange]:
    """Parameter-level differences between two recipe bodies, in name order."""
    old = {p["name"]: p for p in before}
    new = {p["name"]: p for p in after}
    changes = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        if a is None:
            changes.append(ParameterChange("added", name, None, b))
        elif b is None:
            changes.append(ParameterChange("removed", name, a, None))
        else:
            fields = tuple(f for f in sorted(a.keys() | b.keys()) if a.get(f) != b.get(f))
            if fields:
                changes.append(ParameterChange("changed", name, a, b, fields))
    return changes


# ---- context resolution ----------------------------------------------------------------

#: Context dimensions from most to least specific. A rule that names a more specific dimension
#: beats any rule that does not, whatever else either names: rules are ranked by the tuple of
#: which dimensions they name, in this order. So a tool rule beats a product+step rule, and a
#: product+step rule beats a product rule or a step rule alone.
PRECEDENCE = ("chamber", "tool", "step", "product", "tool_group")


@dataclass(frozen=True)
class Context:
    """Where a logical recipe is about to run. ``step`` is the step's operation name."""

    product: str
    step: str
    tool_group: str
    tool: str
    chamber: str | None = None


@dataclass(frozen=True)
class ContextRule:
    """A logical recipe means ``recipe`` wherever every named dimension equals the context."""

    id: int
    logical_recipe: str
    recipe: str
    recipe_tool_group: str
    product: str | None = None
    step: str | None = None
    tool_group: str | None = None
    tool: str | None = None
    chamber: str | None = None

    def named(self) -> dict[str, str]:
        return {d: v for d in PRECEDENCE if (v := getattr(self, d)) is not None}


def specificity(rule: ContextRule) -> tuple[bool, ...]:
    return tuple(getattr(rule, d) is not None for d in PRECEDENCE)


def matches(rule: ContextRule, context: Context) -> bool:
    # A recipe is written for one tool group: a rule never sends it to a tool of another.
    if rule.recipe_tool_group != context.tool_group:
        return False
    return all(getattr(context, d) == v for d, v in rule.named().items())


@dataclass(frozen=True)
class Resolution:
    """The recipe to run and why: the winning rule (None: the logical name itself), and every
    rule that matched, most specific first."""

    recipe: str
    rule: ContextRule | None
    matched: tuple[ContextRule, ...]


def resolve(logical_recipe: str, rules: Sequence[ContextRule], context: Context) -> Resolution:
    """The most specific rule for ``logical_recipe`` that matches ``context``.

    Without a matching rule the logical name is the recipe (the common case: one recipe per
    step). Two rules with the same dimensions named cannot both match one context unless they
    are the same rule, which the unique context key prevents; so the winner is unambiguous.
    """
    matched = sorted(
        (r for r in rules if r.logical_recipe == logical_recipe and matches(r, context)),
        key=specificity,
        reverse=True,
    )
    if not matched:
        return Resolution(logical_recipe, None, ())
    return Resolution(matched[0].recipe, matched[0], tuple(matched))


def context_key(logical_recipe: str, named: Mapping[str, str | None]) -> str:
    """The canonical text of a rule's context; two rules for the same context share it.

    JSON, so that no value (operation names are free text) can imitate another dimension.
    """
    pairs = [[d, named[d]] for d in PRECEDENCE if named.get(d) is not None]
    return json.dumps([logical_recipe, pairs], separators=(",", ":"), ensure_ascii=False)
