"""The console's qualification matrix (tool by recipe, one tool group of one fab) with qualifying a
recipe version on a tool or one chamber of it, and withdrawing a standing qualification.

Both forms are validated into the API's own bodies (``QualificationCreate``,
``Disqualification``) and run the API's service functions under the API's permissions and audit
names (``recipes.qualify``, ``recipes.disqualify``); each form is shown only to a user who holds
its permission, and the server checks again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mes.auth import roles
from mes.console.actions import perform, read
from mes.console.actions_router import form_of, run_action
from mes.console.sessions import PostingUser, User
from mes.console.web import render
from mes.equipment.models import Equipment
from mes.errors import InvalidInput
from mes.fabs.models import Fab, ToolGroup
from mes.kit.api import CODE_PATTERN
from mes.recipes import qualifications as recipe_qualifications
from mes.recipes.models import Recipe, RecipeVersionStatus
from mes.recipes.schemas import Disqualification, QualificationCreate

router = APIRouter(prefix="/console", include_in_schema=False)

Code = Annotated[str, Query(min_length=1, max_length=32, pattern=CODE_PATTERN)]
SEP = "|"  # joins recipe, version, tool and chamber in a select's value


async def _scope(
    session: AsyncSession, fab: str, group: str
) -> tuple[list[Equipment], list[Recipe]]:
    """The group's tools in the fab (with chambers) and the group's recipes (with versions)."""
    tools = list(
        await session.scalars(
            select(Equipment)
            .join(Fab, Fab.id == Equipment.fab_id)
            .join(ToolGroup, ToolGroup.id == Equipment.tool_group_id)
            .where(Fab.code == fab, ToolGroup.code == group)
            .options(selectinload(Equipment.chambers))
            .order_by(Equipment.code)
        )
    )
    recipes = list(
        await session.scalars(
            select(Recipe)
            .join(ToolGroup, ToolGroup.id == Recipe.tool_group_id)
            .where(ToolGroup.code == group)
            .options(selectinload(Recipe.versions))
            .order_by(Recipe.name)
        )
    )
    return tools, recipes


@router.get("/qualifications", response_class=HTMLResponse)
async def qualification_page(
    request: Request, user: User, fab: Code | None = None, tool_group: Code | None = None
) -> Response:
    """The standing qualifications of one tool group's recipes as a tool-by-recipe matrix, and
    (for who may) the forms to qualify and to withdraw."""
    now = request.app.state.clock.now()

    async def load(session: AsyncSession) -> dict[str, Any]:
        fabs = list(await session.scalars(select(Fab.code).order_by(Fab.code)))
        groups = list(await session.scalars(select(ToolGroup.code).order_by(ToolGroup.code)))
        chosen_fab = fab or (fabs[0] if fabs else "")
        chosen_group = tool_group or (groups[0] if groups else "")
        rows = await recipe_qualifications.qualification_matrix(
            session, now=now, tool_group=chosen_group, fab=chosen_fab
        )
        tools, recipes = await _scope(session, chosen_fab, chosen_group)
        return {
            "fabs": fabs, "groups": groups, "fab": chosen_fab, "tool_group": chosen_group,
            "rows": rows, "tool_rows": tools, "recipe_rows": recipes,
        }  # fmt: skip

    found = await read(request, load)
    # Cells: (tool, recipe) -> the versions qualified there (chambers named).
    cells: dict[tuple[str, str], list[str]] = {}
    standing: list[tuple[str, str]] = []  # (select value, what it reads)
    for _q, recipe, number, tool, chamber in found["rows"]:
        cells.setdefault((tool, recipe), []).append(
            f"v{number}" + (f" {chamber}" if chamber else "")
        )
        value = SEP.join((recipe, str(number), tool, chamber or ""))
        standing.append(
            (value, f"{recipe} v{number} on {tool}" + (f" {chamber}" if chamber else ""))
        )
    tools = sorted({t.code for t in found["tool_rows"]} | {tool for tool, _r in cells})
    recipes = sorted({r.name for r in found["recipe_rows"]} | {recipe for _t, recipe in cells})
    versions = [
        (f"{r.name}{SEP}{v.version}", f"{r.name} v{v.version} ({v.status.value})")
        for r in found["recipe_rows"]
        for v in r.versions
        if v.status != RecipeVersionStatus.OBSOLETE
    ]
    chambers = [
        (f"{t.code}{SEP}{c.name}", f"{t.code} {c.name}")
        for t in found["tool_rows"]
        for c in sorted(t.chambers, key=lambda c: c.name)
    ]
    return render(
        request, "qualifications.html", user, fabs=found["fabs"], groups=found["groups"],
        fab=found["fab"], tool_group=found["tool_group"], tools=tools, recipes=recipes,
        cells=cells, versions=versions, chambers=chambers, standing=standing,
        may_qualify=user.may(roles.RECIPE_QUALIFY),
        may_disqualify=user.may(roles.RECIPE_DISQUALIFY),
    )  # fmt: skip


def _version(value: str) -> tuple[str, int]:
    recipe, _, number = value.partition(SEP)
    if not recipe or not number.isdigit():
        raise InvalidInput("choose a recipe version", code="request.invalid")
    return recipe, int(number)


def _back(form: dict[str, str]) -> str:
    """The matrix the form came from (codes only: anything else falls back to the default)."""
    fab, group = form.get("fab", ""), form.get("tool_group", "")
    if fab.replace("-", "").replace("_", "").isalnum() and group.replace("_", "").isalnum():
        return f"/console/qualifications?fab={fab}&tool_group={group}"
    return "/console/qualifications"


@router.post("/qualifications/qualify", response_class=HTMLResponse)
async def qualify(request: Request, user: PostingUser) -> Response:
    """Qualify a recipe version on a tool, or on one chamber of it (the chamber's value names
    its tool: choosing a chamber chooses the tool)."""
    form = await form_of(request)

    async def work(session: AsyncSession) -> str:
        recipe, number = _version(form.get("version", ""))
        tool, _, chamber = form.get("chamber", "").partition(SEP)
        if not tool:
            tool, chamber = form.get("tool", ""), ""
        expires = form.get("expires_at", "").strip()
        if expires and len(expires) == 16:  # a datetime-local field: minutes, shown in UTC
            expires += ":00Z"
        try:
            body = QualificationCreate.model_validate(
                {"tool": tool, "chamber": chamber or None, "expires_at": expires or None}
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(f"{where}: {first['msg']}", code="request.invalid") from exc
        _q, found, named = await recipe_qualifications.qualify(
            session, recipe, number, body, actor=user.username, clock=request.app.state.clock
        )
        on = found.code + (f" chamber {named}" if named else "")
        return f"{recipe} v{number} is qualified on {on}."

    return await run_action(request, user, _back(form), lambda: perform(
        request, user, roles.RECIPE_QUALIFY, "recipes.qualify", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/qualifications/withdraw", response_class=HTMLResponse)
async def withdraw(request: Request, user: PostingUser) -> Response:
    """Withdraw a standing qualification with a reason: track-in and dispatch stop using it."""
    form = await form_of(request)

    async def work(session: AsyncSession) -> str:
        parts = form.get("qualification", "").split(SEP)
        if len(parts) != 4 or not parts[1].isdigit():
            raise InvalidInput("choose a standing qualification", code="request.invalid")
        recipe, number, tool, chamber = parts[0], int(parts[1]), parts[2], parts[3]
        try:
            body = Disqualification.model_validate(
                {"chamber": chamber or None, "reason": form.get("reason", "").strip()}
            )
        except ValidationError as exc:
            raise InvalidInput(
                "say why the qualification is withdrawn (3 characters or more)",
                code="request.invalid",
            ) from exc
        await recipe_qualifications.disqualify(
            session, recipe, number, tool, body, actor=user.username,
            clock=request.app.state.clock,
        )  # fmt: skip
        on = tool + (f" chamber {chamber}" if chamber else "")
        return f"{recipe} v{number} is no longer qualified on {on}."

    return await run_action(request, user, _back(form), lambda: perform(
        request, user, roles.RECIPE_DISQUALIFY, "recipes.disqualify", work, key=form.get("key")
    ))  # fmt: skip
