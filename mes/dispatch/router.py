"""Dispatching: what-next for a tool, where-next for a lot, and the rule sets behind them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse

from mes.auth import roles
from mes.auth.dependencies import requires
from mes.auth.service import Principal
from mes.db.transaction import ReadSession, WriteSession
from mes.dispatch import decisions, policy, service
from mes.dispatch.models import DispatchRuleSet
from mes.dispatch.schemas import (
    ComplianceRead,
    ContributionRead,
    DecisionRead,
    DispatchListRead,
    ExcludedLot,
    MinRunSet,
    RankedLot,
    Reason,
    RefusedTool,
    RuleRead,
    RuleSetPublish,
    RuleSetRead,
    SendToFab,
    SetupChangeSet,
    SetupDataRead,
    ShadowReportRead,
    ToolOptionRead,
    TransferTimeRead,
    TransferTimeSet,
    WhereNextRead,
)
from mes.kit.api import ClockDep, CodePath, CodeStr, Timestamp
from mes.kit.idempotency import KeyHeader, OnceDep, idempotent
from mes.lots import service as lots_service
from mes.lots.http import Answer, lot_read
from mes.lots.schemas import LotRead

router = APIRouter(prefix="/dispatch", tags=["dispatch"])

RuleEditor = Annotated[Principal, requires(roles.DISPATCH_RULES)]
Sender = Annotated[Principal, requires(roles.DISPATCH_SEND)]


def _reason(e: policy.Exclusion | None) -> Reason | None:
    return None if e is None else Reason(code=e.code, detail=e.detail)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@router.get("/rules", response_model=list[RuleRead])
async def rule_catalogue() -> list[RuleRead]:
    """The ranking rules a rule set can combine, with their parameters and formulas."""
    return [
        RuleRead(rule=r.name, defaults=dict(r.defaults), formula=r.formula)
        for r in policy.RULES.values()
    ]


async def _rule_set_read(session: ReadSession | WriteSession, row: DispatchRuleSet) -> RuleSetRead:
    fabs = await service.fab_codes(session)
    fab, _, rest = row.scope_key.removesuffix(service.SHADOW_SUFFIX).partition("/")
    kind, _, name = rest.partition("/")
    return RuleSetRead(
        scope=row.scope_key,
        fab=fabs.get(row.fab_id, fab),
        area=name if kind == "area" else None,
        tool_group=name if kind == "group" else None,
        version=row.version,
        active=row.active,
        shadow=row.shadow,
        rules=list(row.definition["rules"]),
        created_by=row.created_by,
        created_at=row.created_at,
        note=row.note,
    )


@router.get("/rule-sets", response_model=list[RuleSetRead])
async def list_rule_sets(
    session: ReadSession,
    fab: Annotated[CodeStr | None, Query()] = None,
    include_history: bool = False,
) -> list[RuleSetRead]:
    """Active rule sets per scope (with ``include_history``, every version)."""
    rows = await service.rule_sets(session, fab=fab, include_history=include_history)
    return [await _rule_set_read(session, r) for r in rows]


@router.post("/rule-sets", response_model=RuleSetRead, status_code=status.HTTP_201_CREATED)
async def publish_rule_set(
    body: RuleSetPublish, by: RuleEditor, session: WriteSession, once: OnceDep
) -> RuleSetRead | JSONResponse:
    """Publish a new version of a scope's rule set (fab default, area or tool group); it
    replaces the scope's active version at once. Versions are kept and audited."""

    async def op() -> RuleSetRead:
        row = await service.publish_rule_set(
            session,
            fab=body.fab,
            area=body.area,
            tool_group=body.tool_group,
            rules=[r.model_dump() for r in body.rules],
            note=body.note,
            actor=by.username,
            shadow=body.shadow,
        )
        return await _rule_set_read(session, row)

    return await once.run(op)


@router.put("/transfer-times", response_model=TransferTimeRead)
async def set_transfer_time(
    body: TransferTimeSet, _by: RuleEditor, session: WriteSession
) -> TransferTimeRead:
    """How long a lot travels from one fab to another (where-next adds it to the wait)."""
    await service.set_transfer_time(session, body.from_fab, body.to_fab, body.time_s)
    return TransferTimeRead(**body.model_dump())


@router.get("/setups", response_model=SetupDataRead)
async def setups(session: ReadSession) -> SetupDataRead:
    """Setup change times (sequence-dependent; from "any" when no from-setup) and minimum runs."""
    changes, runs = await service.setup_data(session)
    return SetupDataRead(
        changes=[
            SetupChangeSet(
                from_setup=None if c.from_setup == "*" else c.from_setup,
                to_setup=c.to_setup,
                time_s=c.time_s,
            )
            for c in changes
        ],
        min_runs=[MinRunSet(setup=r.setup, min_run=r.min_run) for r in runs],
    )


@router.put("/setups/changes", response_model=SetupChangeSet)
async def set_setup_change(
    body: SetupChangeSet, _by: RuleEditor, session: WriteSession
) -> SetupChangeSet:
    """Set the time of one setup change (the setup rule and Q-time checks use it)."""
    await service.set_setup_change(session, body.from_setup, body.to_setup, body.time_s)
    return body


@router.put("/setups/min-runs", response_model=MinRunSet)
async def set_min_run(body: MinRunSet, _by: RuleEditor, session: WriteSession) -> MinRunSet:
    """Set the minimum run of a setup (lots before the next changeover)."""
    await service.set_min_run(session, body.setup, body.min_run)
    return body


@router.get("/tools/{tool}/list", response_model=DispatchListRead)
async def what_next(tool: CodePath, session: ReadSession, clock: ClockDep) -> DispatchListRead:
    """What-next: the tool's lots ranked by its rule set, each with every rule's contribution,
    and the lots it may not run with the reasons (stable codes, as track-in refuses them)."""
    dl = await service.dispatch_list(session, tool, clock=clock)
    fabs = await service.fab_codes(session)
    now = clock.now()
    return DispatchListRead(
        tool=dl.tool.code,
        fab=fabs[dl.tool.fab_id],
        rule_set=dl.rule_set,
        rule_set_version=dl.rule_set_version,
        at=now,
        tool_blocked=_reason(dl.tool_exclusion),
        ranked=[
            RankedLot(
                rank=r.rank,
                lot=r.lot.code,
                priority_class=r.lot.priority,
                step_sequence=r.lot.step.sequence,
                operation=r.lot.step.operation,
                recipe=r.lot.recipe_on(dl.tool.id),
                waiting_s=max(0.0, now.timestamp() - r.lot.queued_at),
                score=r.score,
                contributions=[
                    ContributionRead(
                        rule=c.rule,
                        weight=c.weight,
                        value=c.value,
                        contribution=c.contribution,
                        why=c.why,
                    )
                    for c in r.contributions
                ],
            )
            for r in dl.ranked
        ],
        excluded=[
            ExcludedLot(
                lot=e.lot.code,
                state=e.lot.state,
                step_sequence=e.lot.step.sequence,
                operation=e.lot.step.operation,
                reasons=[Reason(code=x.code, detail=x.detail) for x in e.reasons],
            )
            for e in dl.excluded
        ],
    )


@router.get("/lots/{lot}/where-next", response_model=WhereNextRead)
async def where_next(lot: CodePath, session: ReadSession, clock: ClockDep) -> WhereNextRead:
    """Where-next: the tools of every fab that can run the lot's step, soonest expected start
    first (transfer time to the fab + the fab's queue for the group + setup), and the tools
    refused with their reasons."""
    wn = await service.where_next(session, lot, clock=clock)
    fabs = await service.fab_codes(session)
    return WhereNextRead(
        lot=wn.lot.code,
        fab=fabs[wn.lot.fab_id],
        step_sequence=wn.lot.step.sequence,
        operation=wn.lot.step.operation,
        at=clock.now(),
        lot_blocked=_reason(wn.lot_exclusion),
        options=[
            ToolOptionRead(
                rank=o.rank,
                tool=o.tool.code,
                fab=fabs[o.tool.fab_id],
                start_in_s=o.start_in_s,
                transfer_s=o.transfer_s,
                queue_s=o.queue_s,
                busy_s=o.busy_s,
                setup_s=o.setup_s,
            )
            for o in wn.options
        ],
        refused=[
            RefusedTool(
                tool=r.tool.code,
                fab=fabs[r.tool.fab_id],
                reasons=[Reason(code=x.code, detail=x.detail) for x in r.reasons],
            )
            for r in wn.refused
        ],
    )


@router.post("/lots/{lot}/where-next", response_model=LotRead)
async def send_to_fab(
    request: Request,
    lot: CodePath,
    body: SendToFab,
    by: Sender,
    session: WriteSession,
    clock: ClockDep,
    key: KeyHeader = None,
) -> Answer:
    """Choose another fab from where-next: ships the lot there (the lot ship operation, with
    its checks); refused with ``dispatch.no_option`` if no tool of that fab can run the step."""

    async def op() -> LotRead:
        shipped = await service.send_to_fab(
            session, lot, body.to_fab, version=body.version, actor=by, clock=clock
        )
        return lot_read(await lots_service.reload_lot(session, shipped.code))

    return await idempotent(request, session, key, by.username, clock.now(), op)


# --- automatic dispatch: decision log and reports --------------------------------------------


@router.get("/decisions", response_model=list[DecisionRead])
async def list_decisions(
    session: ReadSession,
    fab: Annotated[CodeStr, Query()],
    tool: Annotated[CodeStr | None, Query()] = None,
    since: Timestamp | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[DecisionRead]:
    """The automatic dispatcher's decisions, newest first: per idle tool and cycle the rule
    set and version, the chosen lot, the top of the list with each lot's explanation, the
    excluded lots counted by reason, and the outcome (requested, refused with its code,
    waiting for a batch, none, advisory, shadow)."""
    rows = await decisions.decisions(session, fab=fab, tool=tool, since=since, limit=limit)
    return [
        DecisionRead(
            id=d.id,
            tool=code,
            cycle_at=d.cycle_at,
            rule_set=d.rule_set,
            rule_set_version=d.rule_set_version,
            chosen_lot=d.chosen_lot,
            chosen_score=d.chosen_score,
            outcome=d.outcome,
            refusal_code=d.refusal_code,
            job_order_id=d.job_order_id,
            top=list(d.top.get("ranked") or []),
            excluded=dict(d.excluded),
            owner=d.owner,
        )
        for d, code in rows
    ]


@router.get("/compliance", response_model=ComplianceRead)
async def compliance(
    session: ReadSession,
    clock: ClockDep,
    fab: Annotated[CodeStr, Query()],
    since: Timestamp,
    until: Timestamp | None = None,
    max_age_s: Annotated[int, Query(ge=1, le=24 * 3600)] = 900,
) -> ComplianceRead:
    """How often people ran the lot at the top of the tool's list: every manual track-in (job
    requests included) in [since, until] against the tool's last logged decision at most
    ``max_age_s`` before it; track-ins with no such list are counted apart."""
    found = await decisions.compliance(
        session,
        fab=fab,
        since=since,
        until=until or clock.now(),
        max_age=timedelta(seconds=max_age_s),
    )
    return ComplianceRead.model_validate(found)


@router.get("/shadow-report", response_model=ShadowReportRead)
async def shadow_report(
    session: ReadSession,
    fab: Annotated[CodeStr, Query()],
    since: Timestamp | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> ShadowReportRead:
    """Shadow rule sets against production: decisions compared (same tool and cycle), the
    agreement rate, and where they differ both choices with their scores."""
    found = await decisions.shadow_report(session, fab=fab, since=since, limit=limit)
    return ShadowReportRead.model_validate(found)
