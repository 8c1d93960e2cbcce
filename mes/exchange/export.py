"""Export of process definitions (format ``mes-process/1``, see schemas.py): the routes of some
products with every version, the recipes they name, their tool groups and, on request, the
qualification history. Sorted, so that two exports diff cleanly."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.exchange.schemas import (
    ContextRuleDoc,
    ProcessDocument,
    ProductDoc,
    QualificationDoc,
    RecipeDoc,
    RecipeVersionDoc,
    RouteDoc,
    RouteVersionDoc,
    ToolGroupDoc,
)
from mes.fabs.models import ToolGroup
from mes.products.models import Product
from mes.recipes import service as recipes_service
from mes.recipes.models import Recipe, RecipeParameterSpec
from mes.recipes.schemas import ParameterSpecIn, RecipeBody
from mes.routes import service as routes_service
from mes.routes.models import Route


def spec_doc(row: RecipeParameterSpec) -> ParameterSpecIn:
    return ParameterSpecIn(
        name=row.name,
        kind=row.kind,
        unit=row.unit,
        lower=row.lower,
        upper=row.upper,
        required=row.required,
        description=row.description,
    )


async def export(
    session: AsyncSession,
    *,
    products: list[str] | None,
    include_qualifications: bool,
    now: datetime,
    actor: str,
) -> ProcessDocument:
    """The process definitions of the given products (all products when None): their routes
    with every version, the recipes their steps name (and those context rules send them to),
    the tool groups involved with their parameter schemas, and, on request, the qualification
    history of the exported recipe versions. Sorted, so that two exports diff cleanly."""
    route_stmt = select(Route).options(*routes_service.ROUTE_OPTIONS).order_by(Route.code)
    product_stmt = select(Product).order_by(Product.code)
    if products is not None:
        route_stmt = route_stmt.join(Product, Product.id == Route.product_id).where(
            Product.code.in_(products)
        )
        product_stmt = product_stmt.where(Product.code.in_(products))
    routes = list((await session.scalars(route_stmt)).unique())
    product_rows = list(await session.scalars(product_stmt))

    logical = {s.recipe_name for r in routes for v in r.versions for s in v.steps if s.recipe_name}
    rules_with_rows = await recipes_service.context_rules(
        session, logical_recipes=None if products is None else logical
    )
    recipe_stmt = select(Recipe).options(*recipes_service.RECIPE_OPTIONS).order_by(Recipe.name)
    if products is not None:
        wanted = logical | {rule.recipe for rule, _ in rules_with_rows}
        recipe_stmt = recipe_stmt.where(Recipe.name.in_(wanted))
    recipes = list(await session.scalars(recipe_stmt))

    group_codes = {r.tool_group.code for r in recipes} | {
        s.tool_group.code for r in routes for v in r.versions for s in v.steps
    }
    group_codes |= {rule.tool_group for rule, _ in rules_with_rows if rule.tool_group}
    groups = list(
        await session.scalars(
            select(ToolGroup).where(ToolGroup.code.in_(group_codes)).order_by(ToolGroup.code)
        )
    )
    tool_groups = [
        ToolGroupDoc(
            code=g.code,
            name=g.name,
            processing_kind=g.processing_kind,
            parameter_schema=[
                spec_doc(s) for s in await recipes_service.parameter_specs(session, g.id)
            ],
        )
        for g in groups
    ]

    qualifications: list[QualificationDoc] = []
    if include_qualifications:
        exported = {r.name for r in recipes}
        for q, recipe, version, tool, chamber in await recipes_service.qualification_matrix(
            session, now=now, include_history=True
        ):
            if recipe in exported:
                qualifications.append(
                    QualificationDoc(
                        recipe=recipe,
                        version=version,
                        tool=tool,
                        chamber=chamber,
                        qualified_at=q.qualified_at,
                        qualified_by=q.qualified_by,
                        expires_at=q.expires_at,
                        disqualified_at=q.disqualified_at,
                        disqualified_by=q.disqualified_by,
                        disqualify_reason=q.disqualify_reason,
                    )
                )

    return ProcessDocument(
        exported_at=now,
        exported_by=actor,
        tool_groups=tool_groups,
        products=[
            ProductDoc(code=p.code, name=p.name, description=p.description) for p in product_rows
        ],
        recipes=[
            RecipeDoc(
                name=r.name,
                tool_group=r.tool_group.code,
                description=r.description,
                versions=[
                    RecipeVersionDoc(
                        version=v.version,
                        status=v.status,
                        body=RecipeBody.model_validate(v.body),
                        checksum=v.checksum,
                        created_by=v.created_by,
                        approved_by=v.approved_by,
                        approved_at=v.approved_at,
                        obsoleted_by=v.obsoleted_by,
                        obsoleted_at=v.obsoleted_at,
                    )
                    for v in r.versions
                ],
            )
            for r in recipes
        ],
        routes=[
            RouteDoc(
                code=r.code,
                name=r.name,
                product=r.product.code,
                versions=[
                    RouteVersionDoc(
                        version=v.version,
                        status=v.status,
                        created_by=v.created_by,
                        activated_at=v.activated_at,
                        activated_by=v.activated_by,
                        effective_at=v.effective_at,
                        notes=v.notes,
                        steps=[routes_service.step_in(s) for s in v.steps],
                    )
                    for v in r.versions
                ],
            )
            for r in routes
        ],
        context_rules=[
            ContextRuleDoc(
                logical_recipe=rule.logical_recipe,
                recipe=rule.recipe,
                product=rule.product,
                step=rule.step,
                tool_group=rule.tool_group,
                tool=rule.tool,
                chamber=rule.chamber,
                note=row.note,
                created_by=row.created_by,
            )
            for rule, row in rules_with_rows
        ],
        qualifications=qualifications,
    )
