"""SPC charts as master data: define one, switch its rules and actions, set its limits (a new
version each time, audited), and read it back with points, zones, violations, capability."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock
from mes.equipment.models import Equipment
from mes.errors import Conflict, InvalidInput, NotFound
from mes.lots.models import Lot
from mes.quality import edc_rules, rules, spc
from mes.quality import schemas as s
from mes.quality.limits import ChartKind, LimitsError, capability
from mes.quality.models import EdcPlan, SpcChart, SpcLimits, SpcPoint, SpcViolation
from mes.quality.plans import get_plan


async def get_chart(session: AsyncSession, chart_id: int, *, for_update: bool = False) -> SpcChart:
    stmt = select(SpcChart).where(SpcChart.id == chart_id)
    chart = await session.scalar(stmt.with_for_update() if for_update else stmt)
    if chart is None:
        raise NotFound(f"chart {chart_id} does not exist", code="spc.chart_not_found")
    return chart


async def spec_of(session: AsyncSession, chart: SpcChart) -> edc_rules.ParameterSpec | None:
    """The parameter as the plan's newest version (any status) defines it."""
    plan = await session.get(EdcPlan, chart.plan_id)
    assert plan is not None
    found = await get_plan(session, plan.name)
    for version in reversed(found.versions):
        for spec in edc_rules.parameters(version.body):
            if spec.name == chart.parameter:
                return spec
    return None


async def current_limits(session: AsyncSession, chart_id: int) -> SpcLimits | None:
    return await session.scalar(
        select(SpcLimits)
        .where(SpcLimits.chart_id == chart_id)
        .order_by(SpcLimits.version.desc())
        .limit(1)
    )


def _check_actions(actions: Mapping[str, object]) -> None:
    known = {r.value for r in rules.RunRule} | rules.dispersion_codes() | {"*"}
    unknown = sorted(set(actions) - known)
    if unknown:
        raise InvalidInput(f"no run rule {unknown}", code="spc.unknown_rule")


async def create_chart(session: AsyncSession, data: s.ChartCreate, *, actor: str) -> SpcChart:
    if await session.scalar(select(SpcChart.id).where(SpcChart.code == data.code)) is not None:
        raise Conflict(f"chart {data.code!r} already exists", code="spc.duplicate_chart")
    plan = await get_plan(session, data.plan)
    specs = {p.name: p for v in plan.versions for p in edc_rules.parameters(v.body)}
    spec = specs.get(data.parameter)
    if spec is None:
        raise InvalidInput(
            f"plan {plan.name!r} has no parameter {data.parameter!r}", code="spc.unknown_parameter"
        )
    if data.kind != ChartKind.INDIVIDUALS and data.subgroup == "wafer" and spec.sites < 2:
        raise InvalidInput(
            "an X-bar chart of one wafer needs at least 2 sites; use individuals or subgroup lot",
            code="spc.subgroup_too_small",
        )
    _check_actions(data.actions)
    chart = SpcChart(
        code=data.code,
        plan_id=plan.id,
        parameter=data.parameter,
        context=dict(data.context),
        kind=data.kind.value,
        subgroup=data.subgroup,
        rules=data.rules.model_dump(mode="json"),
        actions={k: list(v) for k, v in data.actions.items()},
        baseline_points=data.baseline_points,
        next_lots=data.next_lots,
        created_by=actor,
    )
    session.add(chart)
    await session.flush()
    return chart


async def update_chart(session: AsyncSession, chart_id: int, data: s.ChartUpdate) -> SpcChart:
    """Switch run rules, change the actions, (de)activate: applies from the next point on."""
    chart = await get_chart(session, chart_id, for_update=True)
    if data.rules is not None:
        chart.rules = data.rules.model_dump(mode="json")
    if data.actions is not None:
        _check_actions(data.actions)
        chart.actions = {k: list(v) for k, v in data.actions.items()}
    if data.active is not None:
        chart.active = data.active
    await session.flush()
    return chart


async def set_limits(
    session: AsyncSession, chart_id: int, data: s.LimitsSet, *, actor: str, clock: Clock
) -> SpcLimits:
    """A new limits version: the engineer's centre and sigma, or a new baseline window."""
    chart = await get_chart(session, chart_id, for_update=True)
    current = await current_limits(session, chart.id)
    size = current.subgroup_size if current else 1
    first = last = None
    if data.center is not None and data.sigma is not None:
        center, sigma = data.center, data.sigma
        dispersion = current.dispersion_center if current else 0.0
        source = "engineer"
    elif data.first is not None and data.last is not None and data.first < data.last:
        points = list(
            await session.scalars(
                select(SpcPoint)
                .where(
                    SpcPoint.chart_id == chart.id,
                    SpcPoint.number >= data.first,
                    SpcPoint.number <= data.last,
                )
                .order_by(SpcPoint.number)
            )
        )
        try:
            limits = spc.baseline(chart, points)
        except LimitsError as exc:
            raise InvalidInput(str(exc), code="spc.invalid_baseline") from exc
        center, sigma = limits.center, limits.sigma_within
        dispersion, size = limits.dispersion_center, limits.subgroup_size
        first, last, source = data.first, data.last, "baseline"
    else:
        raise InvalidInput(
            "give center and sigma, or a baseline window first < last", code="spc.invalid_limits"
        )
    row = SpcLimits(
        chart_id=chart.id,
        version=(current.version if current else 0) + 1,
        source=source,
        center=center,
        sigma_within=sigma,
        dispersion_center=dispersion,
        subgroup_size=size,
        baseline_first=first,
        baseline_last=last,
        reason=data.reason,
        set_by=actor,
        set_at=clock.now(),
    )
    session.add(row)
    await session.flush()
    return row


def limits_read(chart: SpcChart, row: SpcLimits) -> s.LimitsRead:
    at = spc.point_limits(chart, row, row.subgroup_size)
    return s.LimitsRead(
        version=row.version,
        source=row.source,
        center=row.center,
        sigma_within=row.sigma_within,
        ucl=at.ucl,
        lcl=at.lcl,
        dispersion_center=row.dispersion_center,
        subgroup_size=row.subgroup_size,
        baseline_first=row.baseline_first,
        baseline_last=row.baseline_last,
        reason=row.reason,
        set_by=row.set_by,
        set_at=row.set_at,
    )


async def chart_read(session: AsyncSession, chart: SpcChart) -> s.ChartRead:
    plan = await session.get(EdcPlan, chart.plan_id)
    assert plan is not None
    spec = await spec_of(session, chart)
    current = await current_limits(session, chart.id)
    return s.ChartRead(
        id=chart.id,
        code=chart.code,
        plan=plan.name,
        parameter=chart.parameter,
        context=chart.context,
        kind=chart.kind,
        subgroup=chart.subgroup,
        rules=s.RuleSet.model_validate(chart.rules),
        actions=chart.actions,
        baseline_points=chart.baseline_points,
        next_lots=chart.next_lots,
        active=chart.active,
        spec={
            "lsl": spec.lsl if spec else None,
            "target": spec.target if spec else None,
            "usl": spec.usl if spec else None,
        },
        limits=limits_read(chart, current) if current else None,
    )


async def chart_data(session: AsyncSession, chart_id: int, *, last: int) -> s.ChartData:
    """The chart with its last ``last`` points, their limits and zones, the rules they broke,
    and the capability of those points against the current limits."""
    chart = await get_chart(session, chart_id)
    read = await chart_read(session, chart)
    versions = {
        r.version: r
        for r in await session.scalars(select(SpcLimits).where(SpcLimits.chart_id == chart.id))
    }
    rows = (
        await session.execute(
            select(SpcPoint, Lot.code, Equipment.code)
            .join(Lot, Lot.id == SpcPoint.lot_id)
            .join(Equipment, Equipment.id == SpcPoint.equipment_id)
            .where(SpcPoint.chart_id == chart.id)
            .order_by(SpcPoint.number.desc())
            .limit(last)
        )
    ).all()[::-1]
    broken: dict[int, list[str]] = {}
    for number, rule in await session.execute(
        select(SpcViolation.point_number, SpcViolation.rule).where(
            SpcViolation.chart_id == chart.id
        )
    ):
        if number is not None:
            broken.setdefault(number, []).append(rule)
    lsl, usl = read.spec["lsl"], read.spec["usl"]
    points = []
    for point, lot, tool in rows:
        row = versions.get(point.limits_version) if point.limits_version else None
        at = spc.point_limits(chart, row, point.size) if row else None
        spread = (
            spc.chart_limits(chart, row).dispersion(point.size)
            if row and point.dispersion is not None
            else None
        )
        points.append(
            s.PointRead(
                number=point.number,
                value=point.value,
                dispersion=point.dispersion,
                size=point.size,
                ucl=at.ucl if at else None,
                lcl=at.lcl if at else None,
                center=at.center if at else None,
                zone=at.zone(point.value) if at else None,
                limits_version=point.limits_version,
                lot=lot,
                slot=point.slot,
                scribe_id=point.scribe_id,
                tool=tool,
                chamber=point.chamber,
                collected_at=point.collected_at,
                violations=sorted(broken.get(point.number, [])),
                out_of_spec=any(rules.out_of_spec(v, lsl, usl) for v in point.values["values"]),
                dispersion_ucl=spread.ucl if spread else None,
                dispersion_lcl=spread.lcl if spread else None,
                dispersion_center=spread.center if spread else None,
            )
        )
    zones = None
    if read.limits is not None:
        current = versions[read.limits.version]
        line = spc.point_limits(chart, current, current.subgroup_size)
        zones = {
            f"{'+' if k > 0 else '-'}{abs(k)}s": line.center + k * line.sigma
            for k in (-3, -2, -1, 1, 2, 3)
        }
        zones["center"] = line.center
    return s.ChartData(chart=read, points=points, zones=zones, capability=_capability(read, points))


def _capability(read: s.ChartRead, points: Sequence[s.PointRead]) -> dict[str, float | None] | None:
    values = [p.value for p in points]
    lsl, usl = read.spec["lsl"], read.spec["usl"]
    if read.limits is None or len(values) < 2 or (lsl is None and usl is None):
        return None
    try:
        found = capability(values, read.limits.sigma_within, lsl, usl)
    except LimitsError:
        return None

    def clean(x: float | None) -> float | None:
        return x if x is None or math.isfinite(x) else None

    return {
        "cp": clean(found.cp),
        "cpk": clean(found.cpk),
        "pp": clean(found.pp),
        "ppk": clean(found.ppk),
        "mean": found.mean,
        "sigma_within": found.sigma_within,
        "sigma_overall": found.sigma_overall,
    }
