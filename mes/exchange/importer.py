"""Import of process definitions, copy-exact and all-or-nothing (see ``mes.exchange.service``):
each kind of definition compared with what is here, created where missing, left alone where
equal, and reported as a conflict where different."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.equipment.models import Equipment
from mes.exchange.export import spec_doc
from mes.exchange.schemas import ImportSummary, KindSummary, ProcessDocument, RouteDoc, ToolGroupDoc
from mes.exchange.validation import Problems, check_document, version_body
from mes.fabs.models import ToolGroup
from mes.products.models import Product
from mes.recipes import rules as recipe_rules
from mes.recipes import service as recipes_service
from mes.recipes.models import (
    Recipe,
    RecipeContextRule,
    RecipeParameterSpec,
    RecipeQualification,
    RecipeVersion,
)
from mes.routes import service as routes_service
from mes.routes.models import Route, RouteVersion, RouteVersionStatus, Step


class _Importer:
    def __init__(self, session: AsyncSession, doc: ProcessDocument) -> None:
        self.session = session
        self.doc = doc
        self.problems = Problems()
        self.summary = ImportSummary(
            dry_run=False,
            tool_groups=KindSummary(),
            parameter_schemas=KindSummary(),
            products=KindSummary(),
            recipe_versions=KindSummary(),
            route_versions=KindSummary(),
            context_rules=KindSummary(),
            qualifications=KindSummary(),
        )
        self.groups: dict[str, ToolGroup] = {}
        self.products: dict[str, Product] = {}
        self.recipes: dict[str, Recipe] = {}

    async def _load(self) -> None:
        doc = self.doc
        group_codes = {g.code for g in doc.tool_groups} | {r.tool_group for r in doc.recipes}
        group_codes |= {s.tool_group for r in doc.routes for v in r.versions for s in v.steps}
        group_codes |= {c.tool_group for c in doc.context_rules if c.tool_group}
        self.groups = {
            g.code: g
            for g in await self.session.scalars(
                select(ToolGroup).where(ToolGroup.code.in_(group_codes))
            )
        }
        product_codes = {p.code for p in doc.products} | {r.product for r in doc.routes}
        product_codes |= {c.product for c in doc.context_rules if c.product}
        self.products = {
            p.code: p
            for p in await self.session.scalars(
                select(Product).where(Product.code.in_(product_codes))
            )
        }
        names = {r.name for r in doc.recipes} | {q.recipe for q in doc.qualifications}
        names |= {c.recipe for c in doc.context_rules}
        self.recipes = {
            r.name: r
            for r in await self.session.scalars(
                select(Recipe)
                .options(*recipes_service.RECIPE_OPTIONS)
                .where(Recipe.name.in_(names))
            )
        }

    async def import_tool_groups(self) -> None:
        for g in self.doc.tool_groups:
            existing = self.groups.get(g.code)
            if existing is None:
                existing = ToolGroup(code=g.code, name=g.name, processing_kind=g.processing_kind)
                self.session.add(existing)
                self.groups[g.code] = existing
                self.summary.tool_groups.created += 1
            elif existing.processing_kind != g.processing_kind:
                self.problems.clash(
                    f"tool group {g.code}",
                    f"is {existing.processing_kind.value} here, "
                    f"{g.processing_kind.value} in the document",
                )
                continue
            else:
                self.summary.tool_groups.unchanged += 1
            if g.parameter_schema:
                await self._parameter_schema(existing, g)
        await self.session.flush()

    async def _parameter_schema(self, group: ToolGroup, g: ToolGroupDoc) -> None:
        here = (
            []
            if group.id is None
            else await recipes_service.parameter_specs(self.session, group.id)
        )
        theirs = sorted((p.model_dump() for p in g.parameter_schema), key=lambda p: p["name"])
        if not here:
            await self.session.flush()
            for spec in g.parameter_schema:
                self.session.add(RecipeParameterSpec(tool_group_id=group.id, **spec.model_dump()))
            self.summary.parameter_schemas.created += 1
        elif [spec_doc(s).model_dump() for s in here] == theirs:
            self.summary.parameter_schemas.unchanged += 1
        else:
            self.problems.clash(f"tool group {g.code}", "has another recipe parameter schema here")

    def _group(self, code: str, item: str) -> ToolGroup | None:
        group = self.groups.get(code)
        if group is None:
            self.problems.bad(item, f"tool group {code} is neither here nor in the document")
        return group

    async def import_products(self) -> None:
        for p in self.doc.products:
            if p.code in self.products:
                self.summary.products.unchanged += 1
                continue
            product = Product(code=p.code, name=p.name, description=p.description)
            self.session.add(product)
            self.products[p.code] = product
            self.summary.products.created += 1
        await self.session.flush()

    async def import_recipes(self) -> None:
        for r in self.doc.recipes:
            group = self._group(r.tool_group, f"recipe {r.name}")
            if group is None:
                continue
            recipe = self.recipes.get(r.name)
            if recipe is None:
                recipe = Recipe(name=r.name, tool_group_id=group.id, description=r.description)
                recipe.versions = []
                self.session.add(recipe)
                self.recipes[r.name] = recipe
            elif recipe.tool_group_id != group.id:
                self.problems.clash(f"recipe {r.name}", "belongs to another tool group here")
                continue
            have = {v.version: v for v in recipe.versions}
            for v in r.versions:
                existing = have.get(v.version)
                item = f"recipe {r.name} v{v.version}"
                if existing is None:
                    recipe.versions.append(
                        RecipeVersion(
                            version=v.version,
                            status=v.status,
                            body=version_body(v),
                            checksum=v.checksum,
                            created_by=v.created_by,
                            approved_by=v.approved_by,
                            approved_at=v.approved_at,
                            obsoleted_by=v.obsoleted_by,
                            obsoleted_at=v.obsoleted_at,
                        )
                    )
                    self.summary.recipe_versions.created += 1
                elif existing.checksum != v.checksum:
                    self.problems.clash(item, "exists here with other parameters")
                elif existing.status != v.status:
                    self.problems.clash(
                        item, f"is {existing.status.value} here, {v.status.value} in the document"
                    )
                else:
                    self.summary.recipe_versions.unchanged += 1
        await self.session.flush()

    async def import_routes(self) -> None:
        codes = [r.code for r in self.doc.routes]
        existing_routes = {
            r.code: r
            for r in (
                await self.session.scalars(
                    select(Route)
                    .options(*routes_service.ROUTE_OPTIONS)
                    .where(Route.code.in_(codes))
                    .with_for_update(key_share=True, of=Route)
                )
            ).unique()
        }
        for r in self.doc.routes:
            product = self.products.get(r.product)
            if product is None:
                self.problems.bad(
                    f"route {r.code}", f"product {r.product} is neither here nor in the document"
                )
                continue
            route = existing_routes.get(r.code)
            if route is None:
                route = Route(code=r.code, name=r.name, product_id=product.id)
                route.versions = []
                self.session.add(route)
            elif route.product_id != product.id:
                self.problems.clash(f"route {r.code}", "belongs to another product here")
                continue
            await self._route_versions(route, r)
        await self.session.flush()

    async def _route_versions(self, route: Route, r: RouteDoc) -> None:
        have = {v.version: v for v in route.versions}
        incoming: list[RouteVersion] = []
        for v in r.versions:
            item = f"route {r.code} v{v.version}"
            existing = have.get(v.version)
            if existing is not None:
                same_steps = [routes_service.step_in(s).model_dump() for s in existing.steps] == [
                    s.model_dump() for s in v.steps
                ]
                if not same_steps:
                    self.problems.clash(item, "exists here with other steps")
                elif existing.status != v.status:
                    self.problems.clash(
                        item, f"is {existing.status.value} here, {v.status.value} in the document"
                    )
                else:
                    self.summary.route_versions.unchanged += 1
                continue
            steps = []
            for s in v.steps:
                group = self._group(s.tool_group, f"{item} step {s.sequence}")
                if group is None:
                    continue
                steps.append(
                    Step(
                        tool_group_id=group.id,
                        recipe_name=s.recipe,
                        **s.model_dump(exclude={"tool_group", "recipe"}),
                    )
                )
            incoming.append(
                RouteVersion(
                    version=v.version,
                    status=RouteVersionStatus.DRAFT,  # set below, once the old one is retired
                    created_by=v.created_by,
                    activated_at=v.activated_at,
                    activated_by=v.activated_by,
                    effective_at=v.effective_at,
                    notes=v.notes,
                    steps=steps,
                )
            )
            self.summary.route_versions.created += 1
        if not incoming:
            return
        route.versions.extend(incoming)
        await self.session.flush()
        wanted = {v.version: v.status for v in r.versions}
        if any(wanted[n.version] == RouteVersionStatus.ACTIVE for n in incoming):
            # The document names the active version: the one active here is retired first
            # (one active version per route, enforced by a unique index).
            for old in route.versions:
                if old.status == RouteVersionStatus.ACTIVE:
                    old.status = RouteVersionStatus.OBSOLETE
            await self.session.flush()
        if any(wanted[n.version] == RouteVersionStatus.PENDING for n in incoming) and any(
            old.status == RouteVersionStatus.PENDING for old in route.versions
        ):
            self.problems.clash(f"route {r.code}", "already has a version waiting to take effect")
            return
        for n in incoming:
            n.status = wanted[n.version]
        await self.session.flush()

    async def _tool(self, code: str, item: str) -> Equipment | None:
        tool = (
            await self.session.scalars(
                select(Equipment)
                .options(selectinload(Equipment.chambers))
                .where(Equipment.code == code)
            )
        ).one_or_none()
        if tool is None:
            self.problems.bad(item, f"tool {code} does not exist here")
        return tool

    async def import_context_rules(self) -> None:
        here = {
            row.context_key: rule.recipe
            for rule, row in await recipes_service.context_rules(self.session)
        }
        for c in self.doc.context_rules:
            item = f"context rule {c.logical_recipe}"
            named = c.model_dump(include={"product", "step", "tool_group", "tool", "chamber"})
            key = recipe_rules.context_key(c.logical_recipe, named)
            if key in here:
                if here[key] == c.recipe:
                    self.summary.context_rules.unchanged += 1
                else:
                    self.problems.clash(item, f"sends {key} to {here[key]} here, not {c.recipe}")
                continue
            recipe = self.recipes.get(c.recipe)
            if recipe is None:
                self.problems.bad(item, f"recipe {c.recipe} is neither here nor in the document")
                continue
            tool_id = chamber_id = None
            if c.tool is not None:
                tool = await self._tool(c.tool, item)
                if tool is None:
                    continue
                tool_id = tool.id
                if c.chamber is not None:
                    chamber_id = next((ch.id for ch in tool.chambers if ch.name == c.chamber), None)
                    if chamber_id is None:
                        self.problems.bad(item, f"tool {c.tool} has no chamber {c.chamber}")
                        continue
            group = self._group(c.tool_group, item) if c.tool_group else None
            product = self.products.get(c.product) if c.product else None
            if c.product and product is None:
                self.problems.bad(item, f"product {c.product} is neither here nor in the document")
                continue
            self.session.add(
                RecipeContextRule(
                    logical_recipe=c.logical_recipe,
                    product_id=product.id if product else None,
                    operation=c.step,
                    tool_group_id=group.id if group else None,
                    equipment_id=tool_id,
                    chamber_id=chamber_id,
                    recipe_id=recipe.id,
                    context_key=key,
                    created_by=c.created_by,
                    note=c.note,
                )
            )
            self.summary.context_rules.created += 1
        await self.session.flush()

    async def import_qualifications(self) -> None:
        for q in self.doc.qualifications:
            item = f"qualification of {q.recipe} v{q.version} on {q.tool}"
            recipe = self.recipes.get(q.recipe)
            version = (
                next((v for v in recipe.versions if v.version == q.version), None)
                if recipe
                else None
            )
            if recipe is None or version is None:
                self.problems.bad(item, "the recipe version is neither here nor in the document")
                continue
            tool = await self._tool(q.tool, item)
            if tool is None:
                continue
            if tool.tool_group_id != recipe.tool_group_id:
                self.problems.bad(item, "the tool is not in the recipe's tool group")
                continue
            chamber_id = None
            if q.chamber is not None:
                chamber_id = next((ch.id for ch in tool.chambers if ch.name == q.chamber), None)
                if chamber_id is None:
                    self.problems.bad(item, f"tool {q.tool} has no chamber {q.chamber}")
                    continue
            rows = list(
                await self.session.scalars(
                    select(RecipeQualification).where(
                        RecipeQualification.recipe_version_id == version.id,
                        RecipeQualification.equipment_id == tool.id,
                        RecipeQualification.chamber_id.is_(None)
                        if chamber_id is None
                        else RecipeQualification.chamber_id == chamber_id,
                    )
                )
            )
            if any(r.qualified_at == q.qualified_at for r in rows):
                self.summary.qualifications.unchanged += 1
                continue
            if q.disqualified_at is None and any(r.disqualified_at is None for r in rows):
                self.problems.clash(item, "a standing qualification exists here already")
                continue
            self.session.add(
                RecipeQualification(
                    recipe_version_id=version.id,
                    fab_id=tool.fab_id,
                    equipment_id=tool.id,
                    chamber_id=chamber_id,
                    **q.model_dump(exclude={"recipe", "version", "tool", "chamber"}),
                )
            )
            self.summary.qualifications.created += 1
        await self.session.flush()

    async def run(self) -> ImportSummary:
        check_document(self.doc, self.problems)
        self.problems.raise_any()
        await self._load()
        await self.import_tool_groups()
        await self.import_products()
        await self.import_recipes()
        await self.import_routes()
        await self.import_context_rules()
        await self.import_qualifications()
        self.problems.raise_any()
        return self.summary


async def import_document(
    session: AsyncSession, doc: ProcessDocument, *, dry_run: bool
) -> ImportSummary:
    """Apply a process document all-or-nothing; with ``dry_run``, report and apply nothing.

    A refusal raises, and the caller's unit of work rolls everything back; a dry run does the
    whole import inside a savepoint that it then rolls back.
    """
    if not dry_run:
        return await _Importer(session, doc).run()
    savepoint = await session.begin_nested()
    try:
        summary = await _Importer(session, doc).run()
    finally:
        await savepoint.rollback()
    summary.dry_run = True
    return summary
