"""Route structure rules, checked before a route version is stored or activated.

Pure functions over plain step descriptions, so the import of a route from another fab and the
API apply exactly the same checks. Step references (Q-time end, rework return) use sequence
numbers inside the same version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StepShape:
    sequence: int
    tool_group: str
    recipe: str
    qtime_to_sequence: int | None = None
    qtime_max_s: int | None = None
    rework_to_sequence: int | None = None
    batch_min: int | None = None
    batch_max: int | None = None
    sampling_rate: float = 1.0


@dataclass(frozen=True)
class RouteProblem:
    sequence: int | None
    message: str


def route_problems(steps: Sequence[StepShape]) -> list[RouteProblem]:
    """Everything structurally wrong with a list of steps (empty list: the route is sound)."""
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
    return problems
