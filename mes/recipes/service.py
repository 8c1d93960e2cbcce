"""The recipes service, the face of the package for other domains and the router: re-exports
what they use from ``versions`` (recipes, versions, approval, obsolescence, diffs),
``parameters`` (the parameter schema of a tool group), ``qualifications`` (the qualification
matrix) and ``resolution`` (context rules, what runs where)."""

from __future__ import annotations

from mes.recipes.parameters import check_body, parameter_specs, replace_parameter_schema
from mes.recipes.qualifications import (
    disqualify,
    qualification_matrix,
    qualifications,
    qualify,
    standing,
)
from mes.recipes.resolution import (
    RunnableRecipe,
    context_rules,
    create_context_rule,
    delete_context_rule,
    resolve_in_chambers,
    resolve_on_tool,
)
from mes.recipes.versions import (
    RECIPE_OPTIONS,
    add_version,
    approve_version,
    create_recipe,
    diff_versions,
    find_version,
    get_recipe,
    obsolete_version,
    update_draft,
    update_recipe,
)

__all__ = [
    "RECIPE_OPTIONS",
    "RunnableRecipe",
    "add_version",
    "approve_version",
    "check_body",
    "context_rules",
    "create_context_rule",
    "create_recipe",
    "delete_context_rule",
    "diff_versions",
    "disqualify",
    "find_version",
    "get_recipe",
    "obsolete_version",
    "parameter_specs",
    "qualification_matrix",
    "qualifications",
    "qualify",
    "replace_parameter_schema",
    "resolve_in_chambers",
    "resolve_on_tool",
    "standing",
    "update_draft",
    "update_recipe",
]
