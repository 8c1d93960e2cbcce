"""Console pages (GET): sign-in, network overview, fab board, tool, lot, holds, audit, recipes.

Each page also answers its fragments (``?part=...``) for htmx swaps and live updates: the same
template block, so a refreshed part is exactly what a fresh page would show.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.models import AuditEvent
from mes.audit.service import AuditFilter, audit_query
from mes.auth import roles
from mes.auth.roles import Role
from mes.console import detail, floor
from mes.console.actions import read
from mes.console.sessions import (
    LOGIN_COOKIE,
    User,
    csrf_for,
    login_seed,
)
from mes.console.spc_router import chart_links
from mes.console.web import render
from mes.dispatch import decisions
from mes.errors import NotFound
from mes.fabs.models import Fab
from mes.kit.api import CODE_PATTERN, PageParams
from mes.lots import service as lots_service
from mes.lots.models import Lot
from mes.lots.rules import SCRAP_CODES
from mes.lots.states import LotType
from mes.recipes import service as recipes_service
from mes.recipes.models import Recipe, RecipeVersion, RecipeVersionStatus

router = APIRouter(prefix="/console", include_in_schema=False)

Code = Annotated[str, Query(min_length=1, max_length=32, pattern=CODE_PATTERN)]
Part = Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_\-]+$")]


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/console") -> Response:
    seed, fresh = login_seed(request)
    response = render(
        request,
        "login.html",
        None,
        next=next if next.startswith("/console") else "/console",
        login_csrf=csrf_for(request, "login:" + seed),
        error=None,
    )
    if fresh:
        response.set_cookie(
            LOGIN_COOKIE, seed, httponly=True, samesite="lax", path="/console", max_age=3600
        )
    return response


@router.get("", response_class=HTMLResponse)
async def overview(
    request: Request, user: User, part: Part = None, fab: str | None = None
) -> Response:
    now = request.app.state.clock.now()
    fabs = await read(request, lambda s: floor.network(s, now, fab))
    if part == "fab" and fabs:
        return render(request, "fragments/fab_summary.html", user, fab=fabs[0])
    return render(request, "overview.html", user, fabs=fabs)


@router.get("/scan")
async def scan(
    request: Request, user: User, lot: Annotated[str, Query(max_length=64)] = ""
) -> Response:
    """The scan field: a lot id (typed, pasted or from a barcode reader) -> its page."""
    code = lot.strip()
    found = await read(request, lambda s: s.scalar(select(Lot.code).where(Lot.code == code)))
    if found is None:
        return render(request, "scan.html", user, status_code=404, code=code)
    return RedirectResponse(f"/console/lots/{found}", status_code=303)


@router.get("/fabs/{fab}", response_class=HTMLResponse)
async def board(
    request: Request, fab: str, user: User, area: Code | None = None, tool: Code | None = None
) -> Response:
    exists = await read(request, lambda s: s.scalar(select(Fab.code).where(Fab.code == fab)))
    if exists is None:
        raise NotFound(f"fab {fab!r} does not exist", code="fab.not_found")
    now = request.app.state.clock.now()
    only = [tool] if tool else []
    found = await read(request, lambda s: floor.tiles(s, fab, now=now, area=area, tools=only))
    if tool is not None and found:
        return render(request, "fragments/tile_one.html", user, tile=found[0], fab=fab)
    return render(request, "board.html", user, fab=fab, area=area, areas=floor.by_area(found))


@router.get("/tools/{tool}", response_class=HTMLResponse)
async def tool_page(request: Request, tool: str, user: User, part: Part = None) -> Response:
    clock = request.app.state.clock
    page = await read(request, lambda s: detail.tool_page(s, tool, clock))
    charts = [] if part else await read(request, lambda s: chart_links(s, tool=page.tool.code))
    template = {
        "status": "fragments/tool_status.html",
        "dispatch": "fragments/tool_dispatch.html",
    }.get(part or "", "tool.html")
    return render(
        request,
        template,
        user,
        page=page,
        tool=page.tool,
        charts=charts,
        may_state=user.may(roles.EQUIPMENT_STATE),
        may_move=user.may(roles.LOT_MOVE),
        may_pm=user.may(roles.PM_PERFORM),
    )


@router.get("/lots/{lot}", response_class=HTMLResponse)
async def lot_page(request: Request, lot: str, user: User, part: Part = None) -> Response:
    clock = request.app.state.clock
    page = await read(request, lambda s: detail.lot_page(s, lot, clock))
    charts = [] if part else await read(request, lambda s: chart_links(s, lot=page.lot.code))
    template = {"body": "fragments/lot_body.html", "actions": "fragments/lot_actions.html"}.get(
        part or "", "lot.html"
    )
    return render(
        request,
        template,
        user,
        page=page,
        lot=page.lot,
        charts=charts,
        may_move=user.may(roles.LOT_MOVE),
        may_hold=user.may(roles.LOT_HOLD),
        may_release=user.may(roles.LOT_RELEASE),
        may_split=user.may(roles.LOT_SPLIT),
        may_scrap=user.may(roles.LOT_SCRAP),
        may_ship=user.may(roles.LOT_TRANSFER),
        may_retype=user.may(roles.LOT_TYPE),
        # Only an engineer's signature releases an engineering run (track-in checks it again).
        may_release_run=Role.ENGINEER in user.principal.roles,
        lot_types=[t.value for t in LotType],
        scrap_codes=SCRAP_CODES,
    )


@router.get("/wip", response_class=HTMLResponse)
async def wip(
    request: Request,
    user: User,
    fab: Code | None = None,
    area: Code | None = None,
    product: Code | None = None,
    state: Annotated[str | None, Query(pattern="^(Waiting|Running|OnHold)$")] = None,
) -> Response:
    """WIP by route step and area, with filters (a bar per step and the table)."""
    fabs = await read(request, lambda s: _all_codes(s))
    chosen = fab or (fabs[0] if fabs else "")
    rows = await read(
        request, lambda s: floor.wip_by_step(s, chosen, area=area, product=product, state=state)
    )
    # Lots between fabs: those arriving are part of this fab's WIP before they are received.
    travelling = await read(
        request, lambda s: lots_service.in_transit(s, request.app.state.clock, fab=chosen)
    )
    return render(
        request, "wip.html", user, rows=rows, fab=chosen, fabs=fabs, area=area or "",
        product=product or "", state=state or "",
        widest=max((r.total for r in rows), default=1),
        arriving=[t for t in travelling if t.to_fab == chosen],
        leaving=[t for t in travelling if t.from_fab == chosen],
    )  # fmt: skip


async def _all_codes(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(Fab.code).order_by(Fab.code)))


@router.get("/dispatch", response_class=HTMLResponse)
async def dispatch_log(
    request: Request, user: User, fab: Code | None = None, tool: Code | None = None
) -> Response:
    """The dispatcher's decision log and how often people followed the lists (last 24 h)."""
    fabs = await read(request, lambda s: _all_codes(s))
    chosen = fab or (fabs[0] if fabs else "")
    now = request.app.state.clock.now()

    async def load(session: AsyncSession) -> tuple[list[Any], dict[str, Any]]:
        rows = await decisions.decisions(session, fab=chosen, tool=tool, since=None, limit=200)
        kept = await decisions.compliance(
            session, fab=chosen, since=now - timedelta(hours=24), until=now,
            max_age=timedelta(minutes=15),
        )  # fmt: skip
        return rows, kept

    rows, kept = await read(request, load)
    return render(
        request, "dispatch.html", user, rows=rows, compliance=kept, fab=chosen, fabs=fabs,
        tool=tool or "",
    )  # fmt: skip


@router.get("/holds", response_class=HTMLResponse)
async def holds(request: Request, user: User, fab: Code | None = None) -> Response:
    rows, total = await read(
        request,
        lambda s: lots_service.hold_list(
            s, PageParams(limit=500, offset=0), fab=fab, hold_code=None
        ),
    )
    return render(request, "holds.html", user, rows=rows, total=total, fab=fab)


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    request: Request,
    user: User,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=96)] = None,
) -> Response:
    allowed = user.may(roles.AUDIT_READ)
    rows: list[AuditEvent] = []
    if allowed:
        flt = AuditFilter(actor=actor or None, target_id=target or None)
        stmt = audit_query(flt).limit(200)
        rows = await read(request, lambda s: _all(s, stmt))
    status = 200 if allowed else 403
    return render(
        request, "audit.html", user, status_code=status, rows=rows, allowed=allowed,
        actor=actor or "", target=target or "",
    )  # fmt: skip


async def _all(session: AsyncSession, stmt: Select[AuditEvent]) -> list[AuditEvent]:
    return list(await session.scalars(stmt))


@router.get("/recipes", response_class=HTMLResponse)
async def recipes(request: Request, user: User, part: Part = None) -> Response:
    """Recipe versions awaiting approval (four eyes) and the latest approved ones."""

    async def load(session: AsyncSession) -> tuple[list[Any], dict[tuple[str, int], Any]]:
        rows = await session.execute(
            select(Recipe.name, RecipeVersion)
            .join(Recipe, Recipe.id == RecipeVersion.recipe_id)
            .order_by(RecipeVersion.status, Recipe.name, RecipeVersion.version.desc())
            .limit(300)
        )
        found = [(name, v) for name, v in rows.all()]
        # What a draft changes against the version before it: what the approver signs for.
        changes = {}
        for name, v in found:
            if v.status == RecipeVersionStatus.DRAFT and v.version > 1:
                _a, _b, diff = await recipes_service.diff_versions(
                    session, name, v.version - 1, v.version
                )
                changes[(name, v.version)] = diff
        return found, changes

    rows, changes = await read(request, load)
    drafts = [(n, v) for n, v in rows if v.status == RecipeVersionStatus.DRAFT]
    others = [(n, v) for n, v in rows if v.status != RecipeVersionStatus.DRAFT][:50]
    template = "fragments/recipe_drafts.html" if part == "drafts" else "recipes.html"
    return render(
        request, template, user, drafts=drafts, others=others, changes=changes,
        may_approve=user.may(roles.RECIPE_APPROVE),
    )  # fmt: skip
