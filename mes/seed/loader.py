"""Load the example fab (``example_fab.json``) through the same services the API uses, so
the example is validated exactly like data an engineer would enter."""

from __future__ import annotations

import json
from importlib import resources
from typing import Literal, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind, Certification, User, UserRole
from mes.auth.passwords import hash_password
from mes.auth.roles import Role
from mes.clock import Clock
from mes.durables import service as durables_service
from mes.durables.rules import DurableLocation
from mes.durables.schemas import CarrierCreate, DurableCreate, DurableMove
from mes.equipment import service as equipment_service
from mes.equipment.models import Equipment, EquipmentSubstate
from mes.equipment.schemas import EquipmentCreate, PmPlanCreate, SubstateCreate
from mes.fabs import service as fabs_service
from mes.fabs.models import Fab
from mes.fabs.schemas import AreaCreate, FabCreate, ToolGroupCreate
from mes.planning import service as planning_service
from mes.planning.schemas import StartPlanCreate
from mes.products import service as products_service
from mes.products.schemas import ProductCreate
from mes.recipes import service as recipes_service
from mes.recipes.schemas import QualificationCreate, RecipeCreate
from mes.routes import service as routes_service
from mes.routes.schemas import RouteCreate

EXAMPLE_FORMAT = "fab-mes-example/1"
SEED_ACTOR = "seed"
SEED_APPROVER = "seed.approver"  # four eyes hold for the example data too


class FabSeed(FabCreate):
    areas: list[AreaCreate]


class RecipeSeed(RecipeCreate):
    approve: bool = True
    # "all": every tool of the recipe's tool group in every fab.
    qualify: Literal["all"] | list[str] = "all"


class RouteSeed(RouteCreate):
    activate: bool = True


class DemoUser(BaseModel):
    username: str
    display_name: str
    roles: list[Role]
    kind: AccountKind = AccountKind.HUMAN
    password: str | None = None
    certified_for: list[str] = Field(default_factory=list)


class CarrierBatch(BaseModel):
    fab: str
    prefix: str = Field(max_length=24)
    count: int = Field(ge=0, le=9999)
    stocker: str | None = Field(default=None, max_length=32)  # where they wait


class DurableSeed(DurableCreate):
    at_tool: str | None = None  # loaded at this tool; else in the library


class ExampleData(BaseModel):
    format: Literal["fab-mes-example/1"]
    fabs: list[FabSeed]
    tool_groups: list[ToolGroupCreate]
    tools: list[EquipmentCreate]
    products: list[ProductCreate]
    recipes: list[RecipeSeed]
    routes: list[RouteSeed]
    carriers: list[CarrierBatch]
    users: list[DemoUser] = Field(default_factory=list)
    substates: list[SubstateCreate] = Field(default_factory=list)
    pm_plans: list[PmPlanCreate] = Field(default_factory=list)
    durables: list[DurableSeed] = Field(default_factory=list)
    # Active: `make run` turns the releaser on (MES_RELEASE_ENABLED), and they fill the line.
    start_plans: list[StartPlanCreate] = Field(default_factory=list)


def read_example() -> ExampleData:
    """The example shipped inside the package."""
    text = resources.files("mes.seed").joinpath("example_fab.json").read_text("utf-8")
    return ExampleData.model_validate(json.loads(text))


M = TypeVar("M", bound=BaseModel)


def _as(model: type[M], seed: BaseModel) -> M:
    """A request body from a seed record, which carries more than the body takes."""
    return model.model_validate(seed.model_dump(include=set(model.model_fields)))


async def database_is_empty(session: AsyncSession) -> bool:
    return await session.scalar(select(Fab.id).limit(1)) is None


async def load(session: AsyncSession, data: ExampleData, *, clock: Clock) -> dict[str, int]:
    """Create everything in ``data``; returns how many of each kind were created."""
    context = AuditContext(
        actor=SEED_ACTOR, role="system", operation="seed.example", at=clock.now()
    )
    bind(session, context)
    for fab in data.fabs:
        await fabs_service.create_fab(session, _as(FabCreate, fab))
        for area in fab.areas:
            await fabs_service.create_area(session, fab.code, area)
    for group in data.tool_groups:
        await fabs_service.create_tool_group(session, group)
    for tool in data.tools:
        await equipment_service.create_equipment(session, tool, actor=SEED_ACTOR, clock=clock)
    for product in data.products:
        await products_service.create_product(session, product)

    qualifications = 0
    for recipe in data.recipes:
        await recipes_service.create_recipe(session, _as(RecipeCreate, recipe), actor=SEED_ACTOR)
        if recipe.approve:
            await recipes_service.approve_version(
                session, recipe.name, 1, actor=SEED_APPROVER, clock=clock
            )
        if recipe.qualify == "all":
            recipe_group = await fabs_service.get_tool_group(session, recipe.tool_group)
            tools = list(
                await session.scalars(
                    select(Equipment.code)
                    .where(Equipment.tool_group_id == recipe_group.id)
                    .order_by(Equipment.code)
                )
            )
        else:
            tools = recipe.qualify
        for tool_code in tools:
            await recipes_service.qualify(
                session,
                recipe.name,
                1,
                QualificationCreate(tool=tool_code),
                actor=SEED_ACTOR,
                clock=clock,
            )
            qualifications += 1

    for route in data.routes:
        await routes_service.create_route(session, _as(RouteCreate, route), actor=SEED_ACTOR)
        if route.activate:
            await routes_service.activate_version(
                session, route.code, 1, actor=SEED_ACTOR, clock=clock
            )

    carriers = 0
    for batch in data.carriers:
        for n in range(1, batch.count + 1):
            await durables_service.create_carrier(
                session,
                CarrierCreate(code=f"{batch.prefix}{n:04d}", fab=batch.fab, stocker=batch.stocker),
            )
            carriers += 1

    for substate in data.substates:
        # The migration seeds the default table; the example may add to it.
        known = await session.scalar(
            select(EquipmentSubstate.id).where(EquipmentSubstate.code == substate.code)
        )
        if known is None:
            await equipment_service.create_substate(session, substate)
    for plan in data.pm_plans:
        await equipment_service.create_plan(session, plan, actor=SEED_ACTOR, clock=clock)
    for durable in data.durables:
        await durables_service.create_durable(session, _as(DurableCreate, durable), clock=clock)
        if durable.at_tool is not None:
            await durables_service.move_durable(
                session,
                durable.code,
                DurableMove(to=DurableLocation.TOOL, tool=durable.at_tool),
                clock=clock,
            )

    for start_plan in data.start_plans:
        await planning_service.create_plan(session, start_plan, actor=SEED_ACTOR, clock=clock)

    for demo in data.users:
        certifications = [
            Certification(
                tool_group=await fabs_service.get_tool_group(session, group_code),
                certified_at=clock.now(),
                certified_by=SEED_ACTOR,
            )
            for group_code in demo.certified_for
        ]
        session.add(
            User(
                username=demo.username,
                display_name=demo.display_name,
                kind=demo.kind,
                roles=[UserRole(role=r) for r in demo.roles],
                password_hash=hash_password(demo.password) if demo.password else None,
                password_changed_at=clock.now() if demo.password else None,
                certifications=certifications,
            )
        )
    await session.flush()

    return {
        "fabs": len(data.fabs),
        "areas": sum(len(f.areas) for f in data.fabs),
        "tool_groups": len(data.tool_groups),
        "tools": len(data.tools),
        "products": len(data.products),
        "recipes": len(data.recipes),
        "qualifications": qualifications,
        "routes": len(data.routes),
        "steps": sum(len(r.steps) for r in data.routes),
        "carriers": carriers,
        "users": len(data.users),
        "pm_plans": len(data.pm_plans),
        "durables": len(data.durables),
        "start_plans": len(data.start_plans),
    }
