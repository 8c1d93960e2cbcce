"""Answers built from recipe records, shared by the routers that show them."""

from __future__ import annotations

from datetime import datetime

from mes.recipes import rules
from mes.recipes.models import RecipeContextRule, RecipeQualification
from mes.recipes.schemas import ContextRuleRead, QualificationRead


def qualification_read(
    recipe: str, version: int, q: RecipeQualification, tool: str, chamber: str | None, now: datetime
) -> QualificationRead:
    return QualificationRead(
        recipe=recipe,
        version=version,
        tool=tool,
        chamber=chamber,
        qualified_at=q.qualified_at,
        expires_at=q.expires_at,
        qualified_by=q.qualified_by,
        disqualified_at=q.disqualified_at,
        disqualified_by=q.disqualified_by,
        disqualify_reason=q.disqualify_reason,
        standing=q.disqualified_at is None and (q.expires_at is None or q.expires_at > now),
    )


def rule_read(rule: rules.ContextRule, row: RecipeContextRule) -> ContextRuleRead:
    return ContextRuleRead(
        id=rule.id,
        logical_recipe=rule.logical_recipe,
        recipe=rule.recipe,
        product=rule.product,
        step=rule.step,
        tool_group=rule.tool_group,
        tool=rule.tool,
        chamber=rule.chamber,
        specificity=list(rule.named()),
        created_by=row.created_by,
        note=row.note,
    )
