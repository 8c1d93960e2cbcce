"""Console actions (POST, CSRF-checked): sign in and out, and the operations of the pages.

Each action validates its form into the API's own command or schema, then runs the API's
service function through ``actions.perform`` (permission, audit, idempotency, e-signature).
htmx posts get a result fragment and an ``HX-Trigger`` that refreshes the page's parts; a plain
form post (no JavaScript) is redirected back to the page.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from mes.audit.context import AuditContext, bind
from mes.auth import roles, service
from mes.auth.roles import Role
from mes.console import detail
from mes.console.actions import perform, signature
from mes.console.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    PostingUser,
    User,
    check_login_csrf,
    csrf_for,
    issue_session,
    login_seed,
)
from mes.console.web import is_htmx, problem_fragment, render
from mes.db.transaction import database, unit_of_work
from mes.errors import InvalidInput, MesError, RuleViolation
from mes.kit.api import CODE_PATTERN
from mes.lots import commands as c
from mes.lots import service as lots_service
from mes.lots import type_rules
from mes.recipes import service as recipes_service

router = APIRouter(prefix="/console", include_in_schema=False)

Code = Annotated[str, Path(min_length=1, max_length=32, pattern=CODE_PATTERN)]


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=512)] = "/console",
) -> Response:
    check_login_csrf(request, csrf)
    settings = request.app.state.settings
    clock = request.app.state.clock
    policy = service.LoginPolicy(
        max_failures=settings.login_max_failures,
        lockout=timedelta(seconds=settings.login_lockout_s),
    )
    # As the API's login: its own transaction, so a failed attempt counts before it is refused.
    async with unit_of_work(database(request)) as session:
        bind(
            session,
            AuditContext(
                actor=username[:64], role="anonymous", operation="auth.login", at=clock.now(),
                request_id=getattr(request.state, "request_id", None),
            ),
        )  # fmt: skip
        outcome = await service.login(session, username[:64], password, clock=clock, policy=policy)
    if outcome.principal is None:
        seed, _fresh = login_seed(request)
        error = (
            "Too many failed sign-ins: the account is locked for a while."
            if outcome.locked_until is not None
            else "Wrong username or password."
        )
        return render(
            request, "login.html", None, status_code=401, next=next, error=error,
            login_csrf=csrf_for(request, "login:" + seed),
        )  # fmt: skip
    target = next if next.startswith("/console") and "//" not in next else "/console"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        issue_session(request, outcome.principal.username),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/console",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout")
async def logout(request: Request, user: PostingUser) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


async def form_of(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def answer(request: Request, user: PostingUser, message: str, back: str) -> Response:
    if not is_htmx(request):
        joiner = "&" if "?" in back else "?"
        return RedirectResponse(back + joiner + "done=" + quote(message), status_code=303)
    response = render(request, "fragments/done.html", user, message=message)
    # After the swap, not on receipt: htmx fires HX-Trigger on the element that sent the form,
    # and when a live refresh has replaced that form meanwhile the event never reaches the body
    # and the page is not refreshed; HX-Trigger-After-Swap falls back to the body.
    response.headers["HX-Trigger-After-Swap"] = "mes-changed"
    return response


async def run_action(request: Request, user: PostingUser, back: str, action) -> Response:  # type: ignore[no-untyped-def]
    try:
        message = await action()
    except MesError as exc:
        return problem_fragment(request, user, exc)
    return answer(request, user, message, back)


@router.post("/lots/{lot}/hold", response_class=HTMLResponse)
async def hold(request: Request, lot: Code, user: PostingUser) -> Response:
    form = await form_of(request)

    async def work(session: AsyncSession) -> str:
        command = c.Hold(hold_code=form.get("hold_code", ""), reason=form.get("reason", "").strip())
        if len(command.reason) < 3:
            raise InvalidInput(
                "say why the lot is held (3 characters or more)", code="lot.reason_required"
            )
        await lots_service.hold(
            session, lot, command, actor=user.principal, clock=request.app.state.clock
        )
        return f"Lot {lot} is on hold ({command.hold_code})."

    return await run_action(request, user, f"/console/lots/{lot}", lambda: perform(
        request, user, roles.LOT_HOLD, "lots.hold", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/lots/{lot}/release", response_class=HTMLResponse)
async def release(request: Request, lot: Code, user: PostingUser) -> Response:
    form = await form_of(request)

    async def action() -> str:
        signed = signature(form.get("reason"), form.get("password"), "responsibility")
        # Exactly the holds the operator saw and ticked: a hold added meanwhile stays.
        ticked = (await request.form()).getlist("hold_ids")
        ids = tuple(int(i) for i in ticked if isinstance(i, str) and i.isdigit())
        command = c.Release(reason=signed.reason, hold_ids=ids)

        async def work(session: AsyncSession) -> str:
            if not ids:  # after the signature check, as the API checks its body
                raise RuleViolation("hold.none_active", "tick the holds to release")
            await lots_service.release(
                session, lot, command, actor=user.principal, clock=request.app.state.clock
            )
            return f"Hold released on lot {lot}."

        return await perform(
            request, user, roles.LOT_RELEASE, "lots.release", work, key=form.get("key"),
            signed=signed,
        )  # fmt: skip

    return await run_action(request, user, f"/console/lots/{lot}", action)


def engineering_release(form: dict[str, str], user: PostingUser) -> c.EngineeringRun | None:
    """The track-in form's engineering release (ticked): the signer is the user tracking the
    lot in, as in the API; whether they are an engineer is the service's rule to check."""
    if form.get("engineering") != "on":
        return None
    text = form.get("eng_recipe_version", "").strip()
    if text and not (text.isdigit() and 1 <= int(text) <= 2**31 - 1):
        raise InvalidInput("the recipe version is a whole number from 1", code="request.invalid")
    release = type_rules.Release(
        signed_by=user.username, signer_is_engineer=Role.ENGINEER in user.principal.roles
    )
    return c.EngineeringRun(release, int(text) if text else None)


@router.post("/lots/{lot}/track-in", response_class=HTMLResponse)
async def track_in(request: Request, lot: Code, user: PostingUser) -> Response:
    """Track in; for an engineering lot optionally its run released under the user's
    e-signature (a tool in ENG, a recipe version not approved or not qualified there)."""
    form = await form_of(request)
    clock = request.app.state.clock

    async def action() -> str:
        engineering = engineering_release(form, user)
        signed = None
        if engineering is not None:
            signed = signature(form.get("eng_reason"), form.get("eng_password"), "approval")

        async def work(session: AsyncSession) -> str:
            command = c.TrackIn(tool=form.get("tool", ""), engineering=engineering)
            _lot, tool, recipe, chambers = await lots_service.track_in(
                session, lot, command, actor=user.principal, clock=clock
            )
            where = f" in chambers {', '.join(chambers)}" if chambers else ""
            released = f" Engineering run released by {user.username}." if engineering else ""
            return (
                f"Lot {lot} tracked in on {tool.code}{where}: run recipe {recipe.recipe.name} "
                f"version {recipe.version}.{released}"
            )

        return await perform(
            request, user, roles.LOT_MOVE, "lots.track_in", work, key=form.get("key"),
            signed=signed,
        )  # fmt: skip

    return await run_action(request, user, f"/console/lots/{lot}", action)


@router.get("/lots/{lot}/track-in-check", response_class=HTMLResponse)
async def track_in_check(request: Request, lot: Code, user: User, tool: str = "") -> Response:
    """May the lot go on this tool now? Track-in itself, rolled back: the same checks."""
    if not tool:
        return HTMLResponse("")
    clock = request.app.state.clock
    async with database(request).write_sessions() as session:
        await session.begin()
        try:
            verdict = await detail.track_in_verdict(session, lot, tool, user.principal, clock)
        finally:
            await session.rollback()
    return render(request, "fragments/precheck.html", user, verdict=verdict, tool=tool, lot=lot)


@router.post("/lots/{lot}/track-out", response_class=HTMLResponse)
async def track_out(request: Request, lot: Code, user: PostingUser) -> Response:
    form = await form_of(request)
    from mes.jobs import service as jobs_service

    async def work(session: AsyncSession) -> str:
        await lots_service.track_out(
            session, lot, c.TrackOut(), actor=user.principal, clock=request.app.state.clock
        )
        job = await jobs_service.open_job_of(session, lot)
        if job is not None:
            raise RuleViolation(
                "lot.job_open",
                f"lot {lot} runs in job {job}, which tracks it out when the tool ends it; "
                "abort the job to take the lot off by hand",
            )
        moved = await lots_service.reload_lot(session, lot)
        where = f"step {moved.current_step.sequence}" if moved.current_step else moved.state.value
        return f"Lot {lot} tracked out: now at {where}."

    return await run_action(request, user, f"/console/lots/{lot}", lambda: perform(
        request, user, roles.LOT_MOVE, "lots.track_out", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/recipes/{recipe}/versions/{version}/approve", response_class=HTMLResponse)
async def approve(
    request: Request,
    recipe: Code,
    version: Annotated[int, Path(ge=1, le=1_000_000)],
    user: PostingUser,
) -> Response:
    form = await form_of(request)

    async def action() -> str:
        signed = signature(form.get("reason"), form.get("password"), "approval")

        async def work(session: AsyncSession) -> str:
            await recipes_service.approve_version(
                session, recipe, version, actor=user.username, clock=request.app.state.clock
            )
            return f"Recipe {recipe} version {version} approved."

        return await perform(
            request, user, roles.RECIPE_APPROVE, "recipes.approve_version", work,
            key=form.get("key"), signed=signed,
        )  # fmt: skip

    return await run_action(request, user, "/console/recipes", action)
