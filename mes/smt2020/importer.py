"""Import an SMT2020-format testbed (``tables.read_testbed``) into the MES as one fab's master
data and WIP: tool families become tool groups with their tools, routes become active route
versions with their steps (batch sizes, setups, Q-time windows, tool dedication, sampling,
rework), every (family, step description) — (route, step) where the family batches only lots
of one route and step — becomes an approved recipe qualified on the family's
tools, the setup tables become setup changes and minimum runs, the testbed's dispatching rules
become the fab's rule sets, and the initial WIP becomes waiting lots at their steps.

Like ``mes process import`` it is an administrative bulk load: rows are written directly (not
through the one-at-a-time services) and checked with the same pure rules (route structure);
tools are installed through the equipment service's bulk ``install`` (their first history record);
every row is in the audit trail (operation ``smt2020.import``). Master data shared across fabs
(tool groups, products, routes, recipes) is reused when it exists, so a second fab imported
from the same folder runs the same routes copy-exact. Times are shifted so that the testbed's
time zero is ``start_at`` (default: now).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.dispatch import service as dispatch_service
from mes.dispatch.models import SetupChange, SetupMinRun
from mes.equipment import service as equipment_service
from mes.equipment.models import Equipment, StateChangeSource
from mes.errors import Conflict, InvalidInput
from mes.fabs.models import Area, Fab, ProcessingKind, ToolGroup
from mes.lots import rules as lot_rules
from mes.lots.models import Lot, LotEvent, Wafer
from mes.lots.states import LotState, PriorityClass
from mes.products.models import Product
from mes.recipes.models import Recipe, RecipeQualification, RecipeVersion, RecipeVersionStatus
from mes.recipes.rules import body_checksum
from mes.recipes.schemas import Parameter, RecipeBody
from mes.routes import rules as route_rules
from mes.routes.models import Route, RouteVersion, RouteVersionStatus, Step
from mes.smt2020 import tables

ACTOR = "smt2020.import"
APPROVER = "smt2020.approver"  # the testbed's recipes count as approved by its authors
MAX_CODE = 32


def tool_code(fab: str, family: str, n: int) -> str:
    return f"{fab}-{family}-{n:02d}"


def lot_code(fab: str, name: str) -> str:
    return f"{fab}-{name}"


def priority(prior: int) -> PriorityClass:
    if prior >= 30:
        return PriorityClass.SUPER_HOT
    if prior >= 20:
        return PriorityClass.HOT
    return PriorityClass.NORMAL


def step_rows(testbed: tables.Testbed, steps: Sequence[tables.RouteStep]) -> list[dict[str, Any]]:
    """Route steps as MES step fields, checked by the route rules (pure, for the tests too)."""
    dedicated: dict[int, int] = {}
    for s in steps:
        if s.same_tool_for_step is not None and s.same_tool_for_step > s.step:
            dedicated[s.same_tool_for_step] = s.step
    out: list[dict[str, Any]] = []
    for s in steps:
        batch = s.batch_lots
        qtime = s.cqt_step is not None and s.cqt_s is not None and s.cqt_step > s.step
        out.append(
            {
                "sequence": s.step,
                "operation": s.desc[:64] or f"STEP_{s.step}",
                "family": s.family,
                "recipe_name": testbed.recipe_name(s),
                "process_time_s": round(s.lot_process_s()),
                "batch_min": batch[0] if batch else None,
                "batch_max": batch[1] if batch else None,
                "qtime_to_sequence": s.cqt_step if qtime else None,
                "qtime_max_s": max(1, round(s.cqt_s or 0)) if qtime else None,
                "rework_to_sequence": s.rework_step
                if s.rework_step is not None and s.rework_step <= s.step
                else None,
                "sampling_rate": min(1.0, max(0.0, s.step_percent / 100.0)),
                "setup": s.setup[:32] if s.setup else None,
                "same_tool_as_sequence": dedicated.get(s.step),
            }
        )
    problems = route_rules.route_problems(
        [
            route_rules.StepShape(
                sequence=r["sequence"],
                tool_group=r["family"],
                recipe=r["recipe_name"],
                qtime_to_sequence=r["qtime_to_sequence"],
                qtime_max_s=r["qtime_max_s"],
                rework_to_sequence=r["rework_to_sequence"],
                batch_min=r["batch_min"],
                batch_max=r["batch_max"],
                sampling_rate=r["sampling_rate"],
                same_tool_as_sequence=r["same_tool_as_sequence"],
            )
            for r in out
        ],
        for_activation=True,
    )
    if problems:
        raise InvalidInput(
            f"route {steps[0].route if steps else '?'} does not fit the MES route rules",
            code="smt2020.invalid_route",
            errors=[{"sequence": p.sequence, "msg": p.message} for p in problems],
        )
    return out


async def import_testbed(
    session: AsyncSession,
    testbed: tables.Testbed,
    *,
    fab_code: str,
    clock: Clock,
    start_at: datetime | None = None,
    fab_name: str | None = None,
) -> dict[str, int]:
    """Load ``testbed`` as fab ``fab_code``; returns how many of each kind were created."""
    now = clock.now()
    shift = (start_at or now) - testbed.start
    counts: Counter[str] = Counter()
    longest = max(
        (tool_code(fab_code, f.name, f.count) for f in testbed.families.values()), key=len
    )
    if len(longest) > MAX_CODE:
        raise InvalidInput(
            f"fab code {fab_code!r} is too long for tool codes of this testbed "
            f"({longest} is longer than {MAX_CODE} characters)",
            code="smt2020.fab_code_too_long",
        )

    fab = await session.scalar(select(Fab).where(Fab.code == fab_code))
    if fab is None:
        fab = Fab(code=fab_code, name=fab_name or f"SMT2020 fab {fab_code}")
        session.add(fab)
        await session.flush()
        counts["fabs"] += 1
    elif await session.scalar(select(Equipment.id).where(Equipment.fab_id == fab.id).limit(1)):
        raise Conflict(
            f"fab {fab_code} already has tools; import into a new fab", code="smt2020.fab_not_empty"
        )

    # Areas (STNGRP) and tool groups (families), shared groups reused.
    areas = {a.code: a for a in await session.scalars(select(Area).where(Area.fab_id == fab.id))}
    for family in testbed.families.values():
        code = family.area[:32]
        if code not in areas:
            areas[code] = Area(fab_id=fab.id, code=code, name=family.area[:128])
            session.add(areas[code])
            counts["areas"] += 1
    batch_families = {
        s.family for steps in testbed.routes.values() for s in steps if s.batch_lots is not None
    }
    max_batch: dict[str, int] = defaultdict(lambda: 1)
    for steps in testbed.routes.values():
        for s in steps:
            if s.batch_lots is not None:
                max_batch[s.family] = max(max_batch[s.family], s.batch_lots[1])
    groups = {
        g.code: g
        for g in await session.scalars(
            select(ToolGroup).where(ToolGroup.code.in_(list(testbed.families)))
        )
    }
    for name in testbed.families:
        if name not in groups:
            groups[name] = ToolGroup(
                code=name,
                name=name,
                processing_kind=ProcessingKind.BATCH
                if name in batch_families
                else ProcessingKind.SINGLE_WAFER,
            )
            session.add(groups[name])
            counts["tool_groups"] += 1
    await session.flush()

    # Tools: STNQTY per family; a delay "family" is one pseudo-tool holding that many lots.
    installations: list[equipment_service.Installation] = []
    for family in testbed.families.values():
        n_tools, capacity = (1, family.count) if family.is_delay else (family.count, 1)
        for n in range(1, n_tools + 1):
            installations.append(
                equipment_service.Installation(
                    code=tool_code(fab_code, family.name, n),
                    name=f"{family.name} #{n}",
                    fab_id=fab.id,
                    area_id=areas[family.area[:32]].id,
                    tool_group_id=groups[family.name].id,
                    max_lots=max(capacity, max_batch[family.name]),
                )
            )
    tools = await equipment_service.install(
        session,
        installations,
        actor=ACTOR,
        at=now,
        source=StateChangeSource.SYSTEM,
        reason="installed (SMT2020 import)",
    )
    counts["tools"] += len(tools)

    # Recipes: one per (family, description) — per (route, step) where the family batches so —
    # approved, qualified on the family's new tools.
    wanted: dict[str, tables.RouteStep] = {}
    for steps in testbed.routes.values():
        for s in steps:
            wanted.setdefault(testbed.recipe_name(s), s)
    existing = {
        r.name: r
        for r in await session.scalars(select(Recipe).where(Recipe.name.in_(list(wanted))))
    }
    versions: dict[str, RecipeVersion] = {}
    for name, s in wanted.items():
        recipe = existing.get(name)
        if recipe is None:
            body = RecipeBody(
                parameters=[
                    Parameter(name="process_time", value=round(s.lot_process_s(), 3), unit="s")
                ]
            ).model_dump(mode="json")
            version = RecipeVersion(
                version=1,
                status=RecipeVersionStatus.APPROVED,
                body=body,
                checksum=body_checksum(body),
                created_by=ACTOR,
                approved_by=APPROVER,
                approved_at=now,
            )
            recipe = Recipe(
                name=name,
                tool_group_id=groups[s.family].id,
                description=f"SMT2020 {s.route} step {s.step}: {s.desc}",
                versions=[version],
            )
            session.add(recipe)
            versions[name] = version
            counts["recipes"] += 1
        else:
            newest = await session.scalar(
                select(RecipeVersion)
                .where(
                    RecipeVersion.recipe_id == recipe.id,
                    RecipeVersion.status == RecipeVersionStatus.APPROVED,
                )
                .order_by(RecipeVersion.version.desc())
                .limit(1)
            )
            if newest is not None:
                versions[name] = newest
    await session.flush()
    by_group: dict[int, list[RecipeVersion]] = defaultdict(list)
    for name, version in versions.items():
        by_group[groups[wanted[name].family].id].append(version)
    qualifications = [
        RecipeQualification(
            recipe_version_id=v.id,
            fab_id=fab.id,
            equipment_id=t.id,
            qualified_at=now,
            qualified_by=ACTOR,
        )
        for t in tools
        for v in by_group.get(t.tool_group_id, ())
    ]
    session.add_all(qualifications)
    counts["qualifications"] += len(qualifications)

    # Products and routes (active version 1), reused when they exist.
    step_ids: dict[str, dict[int, int]] = {}
    product_of: dict[str, int] = {}
    route_version_of: dict[str, int] = {}
    for part in testbed.parts:
        product = await session.scalar(select(Product).where(Product.code == part.part[:32]))
        if product is None:
            product = Product(code=part.part[:32], name=part.part, description=part.family)
            session.add(product)
            await session.flush()
            counts["products"] += 1
        route = await session.scalar(select(Route).where(Route.code == part.route[:32]))
        if route is None:
            fields = step_rows(testbed, testbed.routes[part.route])
            route = Route(code=part.route[:32], name=part.route, product_id=product.id)
            route_version = RouteVersion(
                version=1,
                status=RouteVersionStatus.ACTIVE,
                created_by=ACTOR,
                activated_at=now,
                activated_by=ACTOR,
                effective_at=now,
                notes="imported from SMT2020",
                steps=[
                    Step(
                        **{k: v for k, v in f.items() if k != "family"},
                        tool_group_id=groups[f["family"]].id,
                    )
                    for f in fields
                ],
            )
            route.versions = [route_version]
            session.add(route)
            await session.flush()
            counts["routes"] += 1
            counts["steps"] += len(fields)
        version_id = await session.scalar(
            select(RouteVersion.id).where(
                RouteVersion.route_id == route.id, RouteVersion.status == RouteVersionStatus.ACTIVE
            )
        )
        if version_id is None:
            raise Conflict(f"route {route.code} has no active version", code="smt2020.no_route")
        route_version_of[part.part] = version_id
        product_of[part.part] = product.id
        step_ids[part.part] = dict(
            (
                await session.execute(
                    select(Step.sequence, Step.id).where(Step.route_version_id == version_id)
                )
            ).all()
        )

    # Setup changes (step-level times from any setup, then the sequence-dependent table) and
    # minimum runs; existing rows keep their values (shared across fabs).
    changes: dict[tuple[str, str], float] = {}
    for steps in testbed.routes.values():
        for s in steps:
            if s.setup and s.setup_time_s is not None:
                key = ("*", s.setup[:32])
                changes[key] = max(changes.get(key, 0.0), s.setup_time_s)
    for st in testbed.setup_times:
        changes[((st.from_setup or "*")[:32], st.to_setup[:32])] = st.time_s
    known = set((await session.execute(select(SetupChange.from_setup, SetupChange.to_setup))).all())
    for (a, b), t in changes.items():
        if (a, b) not in known:
            session.add(SetupChange(from_setup=a, to_setup=b, time_s=round(t)))
            counts["setup_changes"] += 1
    known_runs = set(await session.scalars(select(SetupMinRun.setup)))
    for mr in testbed.min_runs:
        if mr.setup[:32] not in known_runs:
            session.add(SetupMinRun(setup=mr.setup[:32], min_run=mr.min_run))
            known_runs.add(mr.setup[:32])
            counts["min_runs"] += 1
    await session.flush()

    # The testbed's dispatching rules: the most common as the fab's default, others per group.
    specs = {name: tables.rule_set_for(f) for name, f in testbed.families.items()}
    common = Counter(repr(s) for s in specs.values()).most_common(1)
    if common:
        default = next(s for s in specs.values() if repr(s) == common[0][0])
        await dispatch_service.publish_rule_set(
            session,
            fab=fab_code,
            area=None,
            tool_group=None,
            rules=default,
            note="SMT2020 RULE/FWLRANK (most families)",
            actor=ACTOR,
        )
        counts["rule_sets"] += 1
        for name, spec in sorted(specs.items()):
            if spec != default:
                await dispatch_service.publish_rule_set(
                    session,
                    fab=fab_code,
                    area=None,
                    tool_group=name,
                    rules=spec,
                    note="SMT2020 RULE/FWLRANK of this family",
                    actor=ACTOR,
                )
                counts["rule_sets"] += 1

    # Initial WIP: waiting lots at their current steps.
    lots = []
    for w in testbed.wip:
        code = lot_code(fab_code, w.name)
        if len(code) > lot_rules.MAX_STARTED_LOT_CODE_LENGTH:
            raise InvalidInput(f"lot code {code} is too long", code="smt2020.lot_code_too_long")
        sequence = w.step or min(step_ids[w.part])
        step_id = step_ids[w.part].get(sequence)
        if step_id is None:
            raise InvalidInput(
                f"lot {w.name} is at step {sequence}, which route of {w.part} lacks",
                code="smt2020.unknown_step",
            )
        started = w.start + shift
        lots.append(
            Lot(
                code=code,
                fab_id=fab.id,
                product_id=product_of[w.part],
                route_version_id=route_version_of[w.part],
                current_step_id=step_id,
                state=LotState.WAITING,
                priority_class=priority(w.priority),
                due_at=None if w.due is None else w.due + shift,
                wafer_count=min(w.pieces, 25),
                started_at=started,
                step_entered_at=started,
                wafers=[
                    Wafer(scribe_id=lot_rules.scribe_id(code, slot), fab_id=fab.id, slot=slot)
                    for slot in range(1, min(w.pieces, 25) + 1)
                ],
            )
        )
    session.add_all(lots)
    await session.flush()
    session.add_all(
        LotEvent(
            lot_id=lot.id,
            fab_id=fab.id,
            event_type="START",
            occurred_at=now,
            actor=ACTOR,
            step_id=lot.current_step_id,
            reason="initial WIP of an SMT2020 import",
            before=None,
            after={
                "state": lot.state.value,
                "step_id": lot.current_step_id,
                "equipment_id": None,
                "wafer_count": lot.wafer_count,
                "fab_id": fab.id,
                "priority_class": lot.priority_class.value,
                "active_holds": 0,
            },
        )
        for lot in lots
    )
    await session.flush()
    counts["lots"] += len(lots)
    counts["wafers"] += sum(lot.wafer_count for lot in lots)
    return dict(counts)
