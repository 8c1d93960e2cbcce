"""Route structure rules, checked before a route version is stored or activated.

Pure functions over plain step descriptions, so the import of a route from another fab and the
API apply exactly the same checks. Step references (Q-time end, rework return) use sequence
numbers inside the same version.

A route version is ISA-95's *operations definition*: a draft is edited freely as long as its
structure stays sound (references resolve, Q-time forwards, rework backwards); completeness
(every step has a recipe that some tool is qualified for) is demanded only at activation.
Which version is in force at a given time follows from the versions' statuses and effective
times (``version_in_force``), so a scheduled activation needs no timer to take effect.
"""

from __future__ import annotations

import difflib
import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StepShape:
    sequence: int
    tool_group: str
    recipe: str | None
    qtime_to_sequence: int | None = None
    qtime_max_s: int | None = None
    qtime_min_s: int | None = None
    rework_to_sequence: int | None = None
    batch_min: int | None = None
    batch_max: int | None = None
    sampling_rate: float = 1.0
    # Lens/tool dedication: this step runs on the tool that ran that earlier step.
    same_tool_as_sequence: int | None = None


@dataclass(frozen=True)
class RouteProblem:
    sequence: int | None
    message: str


def route_problems(
    steps: Sequence[StepShape], *, for_activation: bool = False
) -> list[RouteProblem]:
    """Everything structurally wrong with a list of steps (empty list: the route is sound).

    ``for_activation`` adds what a draft may still lack but a running route may not.
    """
    problems: list[RouteProblem] = []
    if not steps:
        return [RouteProblem(None, "a route needs at least one step")]
    sequences = [s.sequence for s in steps]
    known = set(sequences)
    if len(known) != len(sequences):
        duplicates = sorted({n for n in sequences if sequences.count(n) > 1})
        problems.append(RouteProblem(None, f"duplicate step sequence numbers {duplicates}"))
    for step in steps:
        if (step.qtime_to_sequence is None) != (step.qtime_max_s is None):
            problems.append(
                RouteProblem(step.sequence, "a Q-time window needs both its end step and length")
            )
        if step.qtime_min_s is not None and (
            step.qtime_max_s is None or step.qtime_min_s >= step.qtime_max_s
        ):
            problems.append(
                RouteProblem(
                    step.sequence, "a minimum Q-time needs a longer maximum on the same window"
                )
            )
        if step.qtime_to_sequence is not None:
            if step.qtime_to_sequence <= step.sequence:
                problems.append(RouteProblem(step.sequence, "a Q-time window must end later"))
            elif step.qtime_to_sequence not in known:
                problems.append(
                    RouteProblem(
                        step.sequence, f"Q-time end step {step.qtime_to_sequence} does not exist"
                    )
                )
        if step.rework_to_sequence is not None:
            if step.rework_to_sequence > step.sequence:
                problems.append(
                    RouteProblem(step.sequence, "rework must return to an earlier step")
                )
            elif step.rework_to_sequence not in known:
                problems.append(
                    RouteProblem(
                        step.sequence, f"rework step {step.rework_to_sequence} does not exist"
                    )
                )
        if step.same_tool_as_sequence is not None:
            if step.same_tool_as_sequence >= step.sequence:
                problems.append(
                    RouteProblem(step.sequence, "a tool dedication must name an earlier step")
                )
            elif step.same_tool_as_sequence not in known:
                problems.append(
                    RouteProblem(
                        step.sequence,
                        f"dedication step {step.same_tool_as_sequence} does not exist",
                    )
                )
        if (step.batch_min is None) != (step.batch_max is None):
            problems.append(
                RouteProblem(step.sequence, "batch size needs both minimum and maximum")
            )
        elif (
            step.batch_min is not None
            and step.batch_max is not None
            and not 1 <= step.batch_min <= step.batch_max
        ):
            problems.append(RouteProblem(step.sequence, "batch size needs 1 <= min <= max"))
        if not 0.0 <= step.sampling_rate <= 1.0:
            problems.append(RouteProblem(step.sequence, "sampling rate must be within 0..1"))
        if for_activation and not step.recipe:
            problems.append(RouteProblem(step.sequence, "the step has no recipe"))
    return problems


def references_to(steps: Sequence[StepShape], sequence: int) -> list[RouteProblem]:
    """Steps that name ``sequence`` as Q-time end or rework return (it cannot be removed)."""
    found = []
    for step in steps:
        if step.qtime_to_sequence == sequence:
            found.append(
                RouteProblem(step.sequence, f"step {step.sequence} ends a Q-time window there")
            )
        if step.rework_to_sequence == sequence and step.sequence != sequence:
            found.append(RouteProblem(step.sequence, f"step {step.sequence} reworks back to it"))
        if step.same_tool_as_sequence == sequence:
            found.append(RouteProblem(step.sequence, f"step {step.sequence} must run on its tool"))
    return found


class RenumberError(ValueError):
    pass


def renumbering(
    current: Sequence[int], order: Sequence[int], *, start: int = 10, increment: int = 10
) -> dict[int, int]:
    """Old sequence -> new sequence when the steps are put in ``order`` and renumbered.

    ``order`` must name every current step exactly once. References are then remapped by the
    caller with ``renumbered``; whether the new order is still sound is ``route_problems``'s
    question (a rework target moved after its step is refused there, not silently repaired).
    """
    if sorted(order) != sorted(current) or len(set(order)) != len(order):
        missing = sorted(set(current) - set(order))
        unknown = sorted(set(order) - set(current))
        repeated = sorted(n for n, c in Counter(order).items() if c > 1)
        raise RenumberError(
            "the new order must name every step once"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else "")
            + (f"; repeated {repeated}" if repeated else "")
        )
    if start < 1 or increment < 1:
        raise RenumberError("start and increment must be positive")
    return {old: start + i * increment for i, old in enumerate(order)}


def renumbered(step: StepShape, mapping: Mapping[int, int]) -> StepShape:
    return replace(
        step,
        sequence=mapping[step.sequence],
        qtime_to_sequence=None
        if step.qtime_to_sequence is None
        else mapping[step.qtime_to_sequence],
        rework_to_sequence=None
        if step.rework_to_sequence is None
        else mapping[step.rework_to_sequence],
        same_tool_as_sequence=None
        if step.same_tool_as_sequence is None
        else mapping[step.same_tool_as_sequence],
    )


# ---- which version is in force ---------------------------------------------------------


class VersionStatus(enum.StrEnum):
    """Mirrors the stored status; kept here so that this module stays free of the ORM."""

    DRAFT = "draft"
    PENDING = "pending"
    ACTIVE = "active"
    OBSOLETE = "obsolete"


@dataclass(frozen=True)
class VersionView:
    version: int
    status: VersionStatus
    effective_at: datetime | None


def version_in_force(versions: Sequence[VersionView], now: datetime) -> VersionView | None:
    """The version new lots take at ``now``: the latest-effective signed version already due.

    A pending version whose effective time has passed is in force even before anything has
    promoted it in the database; the active version stays in force until then.
    """
    due = [
        v
        for v in versions
        if v.status in (VersionStatus.ACTIVE, VersionStatus.PENDING)
        and v.effective_at is not None
        and v.effective_at <= now
    ]
    return max(due, key=lambda v: (v.effective_at, v.version), default=None)


def check_effective_time(effective_at: datetime, now: datetime, *, max_past_s: float) -> None:
    """An effective time may lie slightly in the past (clock skew), never far back: lots already
    started in between would have run under the wrong version."""
    if (now - effective_at).total_seconds() > max_past_s:
        raise ValueError(
            f"the effective time lies more than {max_past_s:.0f} s in the past; "
            "activation cannot be backdated"
        )


# ---- differences between two versions ------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class StepDifference:
    """One step's fate between two versions. ``kind``: added, removed, changed, moved."""

    kind: str
    operation: str
    before_sequence: int | None
    after_sequence: int | None
    changes: tuple[FieldChange, ...] = ()


def _keys(steps: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """(operation, occurrence): an operation that repeats in a route is told apart by order."""
    seen: Counter[str] = Counter()
    keys = []
    for step in steps:
        seen[step["operation"]] += 1
        keys.append((step["operation"], seen[step["operation"]]))
    return keys


def diff_steps(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[StepDifference]:
    """What changed from one version's steps to another's.

    Steps are matched by operation name (the n-th occurrence of a name with the n-th), not by
    sequence number, so renumbering shows as a changed ``sequence`` rather than as every step
    removed and added again. A matched step whose position relative to the others changed is
    reported as ``moved`` (with its field changes, if any). Each step is a mapping of its
    fields, ``operation`` and ``sequence`` included.
    """
    before_keys, after_keys = _keys(before), _keys(after)
    old = dict(zip(before_keys, before, strict=True))
    new = dict(zip(after_keys, after, strict=True))
    common_old = [k for k in before_keys if k in new]
    common_new = [k for k in after_keys if k in old]
    matcher = difflib.SequenceMatcher(a=common_old, b=common_new, autojunk=False)
    in_place = {
        common_new[block.b + i]
        for block in matcher.get_matching_blocks()
        for i in range(block.size)
    }
    differences: list[StepDifference] = []
    for key in before_keys:
        if key not in new:
            differences.append(StepDifference("removed", key[0], old[key]["sequence"], None))
    for key in after_keys:
        step = new[key]
        if key not in old:
            differences.append(StepDifference("added", key[0], None, step["sequence"]))
            continue
        previous = old[key]
        changes = tuple(
            FieldChange(field, previous.get(field), step.get(field))
            for field in sorted(set(previous) | set(step))
            if previous.get(field) != step.get(field)
        )
        if key not in in_place:
            differences.append(
                StepDifference("moved", key[0], previous["sequence"], step["sequence"], changes)
            )
        elif changes:
            differences.append(
                StepDifference("changed", key[0], previous["sequence"], step["sequence"], changes)
            )
    return differences
