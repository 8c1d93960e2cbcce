"""The routes service, the face of the package for other domains and the router: re-exports
what they use from ``drafts`` (routes, drafting versions and their steps) and ``activation``
(validation, signing a version into force, the version in force, diffs)."""

from __future__ import annotations

from mes.routes.activation import (
    EFFECTIVE_TIME_TOLERANCE_S,
    activate_version,
    cancel_activation,
    diff_versions,
    in_force,
    promote_due,
    validate_version,
)
from mes.routes.drafts import (
    ROUTE_OPTIONS,
    add_step,
    add_version,
    create_route,
    find_version,
    get_route,
    remove_step,
    renumber,
    replace_steps,
    shape,
    step_in,
    update_route,
    update_step,
)

__all__ = [
    "EFFECTIVE_TIME_TOLERANCE_S",
    "ROUTE_OPTIONS",
    "activate_version",
    "add_step",
    "add_version",
    "cancel_activation",
    "create_route",
    "diff_versions",
    "find_version",
    "get_route",
    "in_force",
    "promote_due",
    "remove_step",
    "renumber",
    "replace_steps",
    "shape",
    "step_in",
    "update_route",
    "update_step",
    "validate_version",
]
