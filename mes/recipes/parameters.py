"""The parameters recipes of a tool group may use (name, kind, unit, limits, required), and the
check of a recipe body against them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.errors import InvalidInput
from mes.fabs import service as fabs_service
from mes.fabs.models import ToolGroup
from mes.recipes import rules
from mes.recipes.models import RecipeParameterSpec
from mes.recipes.schemas import ParameterSchema


async def parameter_specs(session: AsyncSession, tool_group_id: int) -> list[RecipeParameterSpec]:
    return list(
        await session.scalars(
            select(RecipeParameterSpec)
            .where(RecipeParameterSpec.tool_group_id == tool_group_id)
            .order_by(RecipeParameterSpec.name)
        )
    )


def _spec(row: RecipeParameterSpec) -> rules.ParameterSpec:
    return rules.ParameterSpec(
        name=row.name,
        kind=row.kind,
        unit=row.unit,
        lower=row.lower,
        upper=row.upper,
        required=row.required,
    )


async def check_body(session: AsyncSession, tool_group_id: int, document: dict[str, Any]) -> None:
    """Refuse a body that the tool group's parameter schema does not allow."""
    specs = {r.name: _spec(r) for r in await parameter_specs(session, tool_group_id)}
    problems = rules.body_problems(document["parameters"], specs)
    if problems:
        raise InvalidInput(
            "the recipe body does not fit its tool group's parameter schema",
            code="recipe.invalid_body",
            errors=[{"msg": p} for p in problems],
        )


async def replace_parameter_schema(
    session: AsyncSession, tool_group_code: str, schema: ParameterSchema
) -> tuple[ToolGroup, list[RecipeParameterSpec]]:
    """Set the parameters recipes of a tool group may use (approved versions stay as they are;
    new drafts and approvals are checked against the new schema)."""
    group = await fabs_service.get_tool_group(session, tool_group_code)
    existing = {r.name: r for r in await parameter_specs(session, group.id)}
    wanted = {p.name: p for p in schema.parameters}
    for name, row in existing.items():
        if name not in wanted:
            await session.delete(row)
    for name, spec in wanted.items():
        if name in existing:
            row = existing[name]
        else:
            row = RecipeParameterSpec(tool_group_id=group.id, name=name)
            session.add(row)
        for field, value in spec.model_dump(exclude={"name"}).items():
            # Assign only real changes, so the audit trail shows what changed.
            if getattr(row, field, None) != value:
                setattr(row, field, value)
    await session.flush()
    return group, await parameter_specs(session, group.id)
