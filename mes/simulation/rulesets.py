"""The rule sets a simulation compares: built-in names or a rule-set document (the body
``POST /dispatch/rule-sets`` accepts), each resolved per tool family to a ``policy.RuleSet``.

Built-ins: ``fifo`` (first come, first served), ``cr`` (critical ratio, FIFO among ties),
``default`` (the MES default rule set), ``testbed`` (each family's prescribed
``RULE``/``FWLRANK`` as the MES importer maps it) and ``setup_aware`` (the best set found on
HV/LM; ``SimRules.document()`` gives it as ``POST /dispatch/rule-sets`` takes it). Every
built-in carries the ``batch`` rule at weight 0: it does not move the ranking, but its value
tells ``choose_starts`` that a batch below the step's minimum is worth waiting for (up to the
rule's ``max_wait_s``, 24 h here), as the testbed's minimum batch sizes require (``default``
keeps the MES default set's own batch rule).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mes.dispatch.policy as policy
import mes.smt2020.tables as tables
from mes.simulation.model import Family

# The testbed's batch minimum (BATCHMN) is a minimum: its tables give no time after which a
# smaller batch may start. The MES's 2 h default (``batch.max_wait_s``) ran HV/LM's 8-h
# furnaces at 1-3 lots where the minimum is 5, ~10 points busier than at 8 h or more
# (docs/simulation.md, the batch minimum); 24 h only guards a batch that would never fill.
BATCH_GATE: Mapping[str, Any] = {"rule": "batch", "weight": 0, "params": {"max_wait_s": 86400}}

BUILTIN: Mapping[str, tuple[Mapping[str, Any], ...]] = {
    "fifo": ({"rule": "fifo", "weight": 1}, BATCH_GATE),
    "cr": ({"rule": "critical_ratio", "weight": 1}, BATCH_GATE),
    "default": policy.DEFAULT_RULE_SET_SPEC,
    # The best set found by hand on HV/LM (docs/simulation.md, two years): hot lots first,
    # then no setup change while lots of the tool's setup wait, a change to the setup most
    # lots wait for per tool in it, then critical ratio, FIFO among ties.
    "setup_aware": (
        {"rule": "priority", "weight": 1000},
        {"rule": "setup", "weight": 200},
        {"rule": "setup_demand", "weight": 50},
        {"rule": "critical_ratio", "weight": 5},
        {"rule": "fifo", "weight": 1},
        BATCH_GATE,
    ),
}


class RuleChoiceError(ValueError):
    """An unknown rule-set name or a file that is no rule-set document."""


@dataclass(frozen=True)
class SimRules:
    """One rule set under comparison: a name, a set for every family, or per-family sets."""

    name: str
    spec: tuple[Mapping[str, Any], ...] = ()
    per_family: bool = False  # the testbed's own rules per family (tool.txt.1l)
    # Specs of some families by name (what-if: the production set of each tool group).
    family_specs: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    _cache: dict[str, policy.RuleSet] = field(default_factory=dict, compare=False, repr=False)

    def for_family(self, family: Family) -> policy.RuleSet:
        found = self._cache.get(family.name)
        if found is None:
            spec: Sequence[Mapping[str, Any]] = self.family_specs.get(family.name, self.spec)
            if self.per_family:
                spec = _with_gate(tables.rule_set_for(family.source))
            found = policy.RuleSet.build(spec, name=self.name)
            self._cache[family.name] = found
        return found

    def document(self) -> dict[str, Any]:
        """The rule-set document ``POST /dispatch/rule-sets`` accepts (fab to be filled in)."""
        return {"rules": [dict(e) for e in self.spec], "note": f"simulation rule set {self.name}"}


def _with_gate(spec: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    if any(e.get("rule") == "batch" for e in spec):
        return tuple(spec)
    return (*spec, BATCH_GATE)


def from_spec(name: str, spec: Sequence[Mapping[str, Any]]) -> SimRules:
    try:
        policy.RuleSet.build(spec)
    except policy.RuleSetError as exc:
        raise RuleChoiceError(f"{name}: {exc}") from exc
    return SimRules(name, tuple(dict(e) for e in spec))


def resolve(choice: str) -> SimRules:
    """A built-in name, or the path of a JSON rule-set document (``{"rules": [...]}``)."""
    key = choice.strip()
    if key.lower() == "testbed":
        return SimRules("testbed", per_family=True)
    if key.lower() in BUILTIN:
        return SimRules(key.lower(), tuple(BUILTIN[key.lower()]))
    path = Path(key)
    if not path.is_file():
        raise RuleChoiceError(
            f"{choice!r} is neither a rule set ({', '.join([*BUILTIN, 'testbed'])}) nor a file"
        )
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise RuleChoiceError(f"{path}: not JSON ({exc})") from exc
    rules = data.get("rules") if isinstance(data, dict) else data
    if not isinstance(rules, list):
        raise RuleChoiceError(f"{path}: a rule-set document has a list of rules")
    name = data.get("name") if isinstance(data, dict) and data.get("name") else path.stem
    return from_spec(str(name), rules)


def resolve_all(choices: str | Sequence[str]) -> list[SimRules]:
    items = choices.split(",") if isinstance(choices, str) else list(choices)
    out = [resolve(c) for c in items if c.strip()]
    if not out:
        raise RuleChoiceError("no rule set given")
    return out
