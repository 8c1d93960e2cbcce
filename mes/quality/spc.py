"""Judging the values of a track-out: out of specification, and every matching SPC chart's new
points against its limits and run rules (the pure ``limits`` and ``rules``), with the OCAP
actions of what fires. Runs inside the track-out's transaction.

A chart's first ``baseline_points`` points (at least) are its baseline (phase I): not judged;
the track-out that completes them computes the limits from all of them and freezes them
(limits version 1, source ``baseline``). Later limits are set by an engineer
(``charts.set_limits``), as new versions. Each point keeps the limits version it was judged
against.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.lots.checks import CheckHold, TrackOutFacts
from mes.quality import ocap, rules
from mes.quality.edc_rules import Collected, ParameterSpec
from mes.quality.limits import ChartKind, ChartLimits, Limits, LimitsError, individuals_limits
from mes.quality.limits import subgroup_limits as xbar_limits
from mes.quality.models import EdcPlan, SpcChart, SpcLimits, SpcPoint, SpcViolation

# The longest pattern a run rule looks at (15 within 1 sigma).
WINDOW = 15
OOS_ACTIONS = ("hold_lot", "notify")
# A baseline completed within a track-out takes all its points, up to this many.
MAX_BASELINE = 1000


@dataclass(frozen=True)
class Subgroup:
    values: tuple[float, ...]
    slot: int | None
    chamber: str | None


def subgroups(kind: str, values: Sequence[Collected]) -> list[Subgroup]:
    """A wafer's sites are one subgroup (``wafer``); or the lot's wafer means are (``lot``)."""
    by_slot: dict[int, list[Collected]] = {}
    for v in values:
        by_slot.setdefault(v.slot, []).append(v)
    wafers = [
        Subgroup(tuple(v.value for v in vs), slot, vs[0].chamber)
        for slot, vs in sorted(by_slot.items())
    ]
    if kind == "wafer":
        return wafers
    chambers = {w.chamber for w in wafers}
    means = tuple(statistics.fmean(w.values) for w in wafers)
    return [Subgroup(means, None, chambers.pop() if len(chambers) == 1 else None)] if means else []


def chart_limits(chart: SpcChart, row: SpcLimits) -> ChartLimits:
    return ChartLimits(
        ChartKind(chart.kind), row.center, row.sigma_within, row.dispersion_center,
        row.subgroup_size,
    )  # fmt: skip


def point_limits(chart: SpcChart, row: SpcLimits, size: int) -> Limits:
    limits = chart_limits(chart, row)
    return limits.location() if chart.kind == ChartKind.INDIVIDUALS else limits.location(size)


def rule_settings(chart: SpcChart) -> rules.RuleSettings:
    return rules.RuleSettings(
        enabled=frozenset(rules.RunRule(r) for r in chart.rules.get("enabled", [])),
        run_length=int(chart.rules.get("run_length", 9)),
    )


def dispersion_rules(chart: SpcChart) -> frozenset[rules.RunRule]:
    """The rules of the chart's dispersion chart (MR, R or S). Unset: rule 1 on R and S
    charts, none on a moving range chart (see ``schemas.RuleSet``)."""
    chosen = chart.rules.get("dispersion")
    if chosen is None:
        chosen = [] if chart.kind == ChartKind.INDIVIDUALS else [rules.RunRule.BEYOND_3_SIGMA]
    return frozenset(rules.RunRule(r) for r in chosen)


def baseline(chart: SpcChart, points: Sequence[SpcPoint]) -> ChartLimits:
    """Limits from baseline points (raises LimitsError when they cannot mean anything)."""
    if chart.kind == ChartKind.INDIVIDUALS:
        return individuals_limits([p.value for p in points])
    return xbar_limits([p.values["values"] for p in points], ChartKind(chart.kind))


async def judge(
    session: AsyncSession,
    facts: TrackOutFacts,
    plan: EdcPlan,
    specs: Sequence[ParameterSpec],
    values: Sequence[Collected],
    *,
    product: str,
    scribes: dict[int, str],
) -> list[CheckHold]:
    holds: list[CheckHold] = []
    for spec in specs:
        bad = [v for v in values if v.parameter == spec.name and spec.out_of_spec(v.value)]
        if bad:
            holds += await _out_of_spec(session, facts, plan, spec, bad)
    names = sorted({v.parameter for v in values})
    if not names:
        return holds
    # Locked (after the lot and the tool, in id order): two tools' track-outs numbering points
    # on one chart queue here instead of colliding.
    charts = await session.scalars(
        select(SpcChart)
        .where(SpcChart.plan_id == plan.id, SpcChart.active, SpcChart.parameter.in_(names))
        .order_by(SpcChart.id)
        .with_for_update()
    )
    context = {"product": product, "operation": facts.step.operation, "tool": facts.tool.code}
    for chart in charts:
        if any(k != "chamber" and context.get(k) != v for k, v in chart.context.items()):
            continue
        chosen = [
            v
            for v in values
            if v.parameter == chart.parameter
            and ("chamber" not in chart.context or v.chamber == chart.context["chamber"])
        ]
        groups = subgroups(chart.subgroup, chosen)
        if groups:
            holds += await _add_points(session, facts, chart, groups, scribes)
    return holds


async def _out_of_spec(
    session: AsyncSession,
    facts: TrackOutFacts,
    plan: EdcPlan,
    spec: ParameterSpec,
    bad: Sequence[Collected],
) -> list[CheckHold]:
    where = ", ".join(f"slot {v.slot} site {v.site}: {v.value:g}" for v in bad[:10])
    violation = SpcViolation(
        fab_id=facts.lot.fab_id,
        chart_id=None,
        plan_id=plan.id,
        parameter=spec.name,
        rule="out_of_spec",
        point_number=None,
        points={"values": [{"slot": v.slot, "site": v.site, "value": v.value} for v in bad]},
        lot_id=facts.lot.id,
        equipment_id=facts.tool.id,
        chamber=bad[0].chamber,
        detail=f"{spec.name} outside [{spec.lsl}, {spec.usl}] on lot {facts.lot.code} ({where})",
        actions={},
        detected_at=facts.at,
    )
    session.add(violation)
    await session.flush()
    return await ocap.apply(session, violation, OOS_ACTIONS, tool=facts.tool, at=facts.at)


async def _add_points(
    session: AsyncSession,
    facts: TrackOutFacts,
    chart: SpcChart,
    groups: Sequence[Subgroup],
    scribes: dict[int, str],
) -> list[CheckHold]:
    """Append a track-out's points to a chart and judge each on the points before it: a few
    queries per chart and track-out, whatever the number of points."""
    versions = {
        row.version: row
        for row in await session.scalars(select(SpcLimits).where(SpcLimits.chart_id == chart.id))
    }
    current = versions[max(versions)] if versions else None
    number = await session.scalar(
        select(func.max(SpcPoint.number)).where(SpcPoint.chart_id == chart.id)
    )
    number = number or 0
    window: list[SpcPoint] = []
    if current is not None:
        window = list(
            await session.scalars(
                select(SpcPoint)
                .where(SpcPoint.chart_id == chart.id, SpcPoint.limits_version.is_not(None))
                .order_by(SpcPoint.number.desc())
                .limit(WINDOW)
            )
        )[::-1]
    # An individuals chart's moving range needs the value before the first new point.
    previous = (
        await session.scalar(
            select(SpcPoint.value)
            .where(SpcPoint.chart_id == chart.id)
            .order_by(SpcPoint.number.desc())
            .limit(1)
        )
        if chart.kind == ChartKind.INDIVIDUALS
        else None
    )
    settings = rule_settings(chart)
    spread_rules = dispersion_rules(chart)
    holds: list[CheckHold] = []
    done: set[str] = set()  # each action once per chart and track-out
    for group in groups:
        number += 1
        point = _point(chart, facts, group, number, scribes, current, previous)
        previous = point.value
        session.add(point)
        if current is None:
            continue
        window = [*window, point][-WINDOW:]
        found: list[tuple[str, list[int]]] = []
        judged = [(p, versions[p.limits_version]) for p in window if p.limits_version is not None]
        location = [
            rules.ChartPoint(p.value, point_limits(chart, row, p.size)) for p, row in judged
        ]
        for v in rules.evaluate_at(location, len(location) - 1, settings):
            found.append((v.rule.value, [judged[i][0].number for i in v.points]))
        if spread_rules and point.dispersion is not None:
            # The dispersion chart (MR, R or S) of the same points, on its own limits.
            spread = [(p, row, p.dispersion) for p, row in judged if p.dispersion is not None]
            dispersion = [
                rules.ChartPoint(d, chart_limits(chart, row).dispersion(p.size))
                for p, row, d in spread
            ]
            for v in rules.evaluate_dispersion_at(
                dispersion, len(dispersion) - 1, spread_rules, settings.run_length
            ):
                code = rules.dispersion_code(chart.kind, v.rule)
                found.append((code, [spread[i][0].number for i in v.points]))
        for code, numbers in found:
            holds += await _violation(session, facts, chart, group, point, code, numbers, done)
    await session.flush()
    if current is None:
        await _freeze_baseline(session, chart, facts)
    return holds


async def _violation(
    session: AsyncSession,
    facts: TrackOutFacts,
    chart: SpcChart,
    group: Subgroup,
    point: SpcPoint,
    code: str,
    numbers: list[int],
    done: set[str],
) -> list[CheckHold]:
    """Record one violation and carry out the actions configured for its code (``*`` if
    none), each action once per chart and track-out (``done``)."""
    configured = chart.actions.get(code, chart.actions.get("*", []))
    violation = SpcViolation(
        fab_id=facts.lot.fab_id,
        chart_id=chart.id,
        plan_id=chart.plan_id,
        parameter=chart.parameter,
        rule=code,
        point_number=point.number,
        points={"points": numbers},
        lot_id=facts.lot.id,
        equipment_id=facts.tool.id,
        chamber=group.chamber,
        detail=f"chart {chart.code}: {code} at point {point.number} "
        f"({point.value:g}, lot {facts.lot.code})",
        actions={},
        detected_at=facts.at,
    )
    session.add(violation)
    await session.flush()
    todo = [a for a in configured if a not in done]
    done.update(todo)
    return await ocap.apply(
        session, violation, todo, tool=facts.tool, at=facts.at, next_lots=chart.next_lots
    )


def _point(
    chart: SpcChart,
    facts: TrackOutFacts,
    group: Subgroup,
    number: int,
    scribes: dict[int, str],
    limits: SpcLimits | None,
    previous: float | None,
) -> SpcPoint:
    values = group.values
    dispersion = None
    if chart.kind == ChartKind.INDIVIDUALS and len(values) == 1:
        dispersion = rules.moving_range(previous, values[0])
    elif len(values) > 1:
        spread = max(values) - min(values)
        dispersion = statistics.stdev(values) if chart.kind == ChartKind.XBAR_S else spread
    return SpcPoint(
        chart_id=chart.id,
        number=number,
        value=statistics.fmean(values),
        dispersion=dispersion,
        size=len(values),
        values={"values": list(values)},
        limits_version=limits.version if limits else None,
        lot_id=facts.lot.id,
        slot=group.slot,
        scribe_id=scribes.get(group.slot) if group.slot is not None else None,
        equipment_id=facts.tool.id,
        chamber=group.chamber,
        collected_at=facts.at,
    )


async def _freeze_baseline(session: AsyncSession, chart: SpcChart, facts: TrackOutFacts) -> None:
    """Once the chart has its baseline points, compute the limits from them and freeze them
    (version 1): the phase I points, the last ``MAX_BASELINE`` at most (a baseline without
    variation waits for more points)."""
    recent = list(
        await session.scalars(
            select(SpcPoint)
            .where(SpcPoint.chart_id == chart.id)
            .order_by(SpcPoint.number.desc())
            .limit(max(chart.baseline_points, MAX_BASELINE))
        )
    )[::-1]
    if len(recent) < chart.baseline_points:
        return
    try:
        limits = baseline(chart, recent)
    except LimitsError:
        return
    session.add(
        SpcLimits(
            chart_id=chart.id,
            version=1,
            source="baseline",
            center=limits.center,
            sigma_within=limits.sigma_within,
            dispersion_center=limits.dispersion_center,
            subgroup_size=limits.subgroup_size,
            baseline_first=recent[0].number,
            baseline_last=recent[-1].number,
            reason=f"baseline of {len(recent)} points",
            set_by=ocap.ACTOR,
            set_at=facts.at,
        )
    )
    await session.flush()
