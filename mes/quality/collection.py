"""Data collection at track-out: the check ``mes.lots.checks`` runs in every track-out.

The step's plan (``plans.resolve``) says what must be measured. An operator's track-out is
refused whole when a value is of the wrong kind or unit, not in the plan (``edc.invalid_value``)
or when a required value is missing (``edc.missing_values``), so nothing is half-applied. The
tool's track-out (through its adapter) is never refused — the tool has already run the wafers —
a required value it did not report holds the lot ``EDC_MISSING`` instead. The values are stored
with their context (lot, wafer, product, step, tool, chamber), then judged (``spc.judge``).
"""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.db import memo
from mes.errors import InvalidInput, refuses
from mes.lots import checks
from mes.lots.checks import CheckHold, TrackOutFacts
from mes.lots.models import Wafer
from mes.lots.states import WaferState
from mes.products.models import Product
from mes.quality import edc_rules, ocap, plans, spc
from mes.quality.models import EdcValue
from mes.routes.models import RouteVersion, RouteVersionStatus

MISSING_HOLD = "EDC_MISSING"

_ROUTE_OF_VERSION = select(RouteVersion.route_id, RouteVersion.status).where(
    RouteVersion.id == bindparam("id")
)


async def _route_of_version(session: AsyncSession, route_version_id: int) -> int:
    """The route a version belongs to. Set once when the version is made; a released version
    is never deleted, so its route is read once per database (mes.db.memo), not per track-out."""
    key = ("route_of_version", route_version_id)
    known: int | None = memo.recall(session, key)
    if known is not None:
        return known
    row = (await session.execute(_ROUTE_OF_VERSION, {"id": route_version_id})).one_or_none()
    if row is None:
        return 0
    if row.status != RouteVersionStatus.DRAFT:
        memo.remember(session, key, row.route_id)
    return int(row.route_id)


async def _processed_wafers(session: AsyncSession, facts: TrackOutFacts) -> dict[int, str]:
    """slot -> scribe id of the lot's wafers in their slots, less those the tool said it did
    not process."""
    skipped = {scribe for scribe, _ in facts.data.not_processed}
    rows = await session.execute(
        select(Wafer.slot, Wafer.scribe_id).where(
            Wafer.lot_id == facts.lot.id,
            Wafer.state == WaferState.ACTIVE,
            Wafer.slot.is_not(None),
        )
    )
    return {
        slot: scribe for slot, scribe in rows.all() if slot is not None and scribe not in skipped
    }


async def check_track_out(session: AsyncSession, facts: TrackOutFacts) -> list[CheckHold]:
    lot, data = facts.lot, facts.data
    holds = await ocap.watched(session, facts.tool)
    route_id = await _route_of_version(session, lot.route_version_id)
    found = await plans.resolve(
        session,
        operation=facts.step.operation,
        route_id=route_id or 0,
        product_id=lot.product_id,
        tool_group_id=facts.step.tool_group_id,
    )
    if found is None:
        if data.readings and not data.by_tool:
            raise InvalidInput(
                f"no data collection plan applies at step {facts.step.sequence} "
                f"({facts.step.operation}); the values cannot be taken",
                code="edc.invalid_value",
                invalid=[{"parameter": r.parameter, "reason": "no plan"} for r in data.readings][
                    :50
                ],
            )
        return _one_per_code(holds)
    plan, version = found
    specs = edc_rules.parameters(version.body)
    scribes = await _processed_wafers(session, facts)
    collected = edc_rules.collect(specs, data.readings, scribes, by_tool=data.by_tool)
    if not data.by_tool and collected.invalid:
        raise InvalidInput(
            f"{len(collected.invalid)} value(s) refused by plan {plan.name} v{version.version}",
            code="edc.invalid_value",
            invalid=[p.as_json() for p in collected.invalid[:50]],
        )
    if collected.missing:
        names = sorted({m.parameter for m in collected.missing})
        if not data.by_tool:
            raise InvalidInput(
                f"plan {plan.name} v{version.version} requires values not given: "
                + ", ".join(names),
                code="edc.missing_values",
                missing=[m.as_json() for m in collected.missing[:50]],
            )
        holds.append(
            CheckHold(
                MISSING_HOLD,
                f"the tool reported no values for {', '.join(names)} (plan {plan.name})",
            )
        )
    source = "tool" if data.by_tool else "operator"
    if collected.values:
        # One multi-row INSERT, not ORM objects: hundreds of values per lot are common, and the
        # values are data (not audited; the lot event and the violations are).
        await session.execute(
            insert(EdcValue),
            [
                {
                    "fab_id": lot.fab_id,
                    "plan_id": plan.id,
                    "plan_version_id": version.id,
                    "parameter": v.parameter,
                    "lot_id": lot.id,
                    "slot": v.slot,
                    "scribe_id": scribes.get(v.slot),
                    "site": v.site,
                    "value": v.value,
                    "product_id": lot.product_id,
                    "step_id": facts.step.id,
                    "operation": facts.step.operation,
                    "equipment_id": facts.tool.id,
                    "chamber": v.chamber,
                    "source": source,
                    "collected_at": facts.at,
                }
                for v in collected.values
            ],
        )
    product = await session.scalar(select(Product.code).where(Product.id == lot.product_id))
    holds += await spc.judge(
        session,
        facts,
        plan,
        specs,
        collected.values,
        product=str(product),
        scribes=scribes,
    )
    return _one_per_code(holds)


def _one_per_code(holds: list[CheckHold]) -> list[CheckHold]:
    """Several violations in one track-out hold the lot once per hold code."""
    by_code: dict[str, list[str]] = {}
    for h in holds:
        by_code.setdefault(h.hold_code, []).append(h.reason)
    return [
        CheckHold(code, reasons[0] if len(reasons) == 1 else f"{reasons[0]} (+{len(reasons) - 1})")
        for code, reasons in by_code.items()
    ]


def install() -> None:
    """Register data collection and SPC in every track-out of this process (idempotent)."""
    checks.register(check_track_out)
    # The track-out's contract (mes.contract) cannot follow a registered check: name its
    # refusals on the hook the track-out calls.
    refuses("edc.missing_values", "edc.invalid_value", status=422)(checks.run)
