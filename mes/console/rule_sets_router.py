"""The console's dispatching rule sets: every scope's version (production and shadow), a form to
publish a new version, and the shadow sets' comparison with production over a period.

Publishing validates the form into the API's own body (``RuleSetPublish``) and runs the API's
service function under the API's permission and audit name; the shadow report is the API's
``decisions.shadow_report``. The form is plain HTML (a fixed number of rule rows): no script
builds it, and a form sent without htmx works the same.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth import roles
from mes.console.actions import perform, read
from mes.console.actions_router import form_of, run_action
from mes.console.sessions import PostingUser, User
from mes.console.web import render
from mes.dispatch import decisions, policy
from mes.dispatch import rule_sets as dispatch_rule_sets
from mes.dispatch.models import DispatchRuleSet
from mes.dispatch.schemas import RuleSetPublish
from mes.errors import InvalidInput
from mes.fabs.models import Area, Fab, ToolGroup
from mes.kit.api import CODE_PATTERN

router = APIRouter(prefix="/console", include_in_schema=False)

Code = Annotated[str, Query(min_length=1, max_length=32, pattern=CODE_PATTERN)]
RULE_ROWS = 6  # rows of the publish form: enough for the sets in use (two to four rules)
DIFFERENCES_SHOWN = 50


async def _choices(session: AsyncSession, fab: str | None) -> dict[str, list[str]]:
    fabs = list(await session.scalars(select(Fab.code).order_by(Fab.code)))
    chosen = fab or (fabs[0] if fabs else "")
    areas = list(
        await session.scalars(
            select(Area.code).join(Fab, Fab.id == Area.fab_id).where(Fab.code == chosen)
            .order_by(Area.code)
        )
    )  # fmt: skip
    groups = list(await session.scalars(select(ToolGroup.code).order_by(ToolGroup.code)))
    return {"fabs": fabs, "areas": areas, "groups": groups}


def _scope_value(row: DispatchRuleSet) -> str:
    """The publish form's scope field for a stored set: "", "area/<code>" or "group/<code>"."""
    key = row.scope_key.removesuffix(dispatch_rule_sets.SHADOW_SUFFIX)
    _fab, _, rest = key.partition("/")
    return rest


@router.get("/rule-sets", response_class=HTMLResponse)
async def rule_sets_page(
    request: Request,
    user: User,
    fab: Code | None = None,
    history: Annotated[bool, Query()] = False,
    start: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24,
) -> Response:
    """The rule sets of a fab (history: every version), the publish form (``start``: filled
    with that stored version's rules) and the shadow report over the last ``hours``."""
    now = request.app.state.clock.now()

    async def load(session: AsyncSession) -> tuple[dict[str, list[str]], str, list[Any], Any]:
        choices = await _choices(session, fab)
        chosen = fab or (choices["fabs"][0] if choices["fabs"] else "")
        rows = await dispatch_rule_sets.rule_sets(session, fab=chosen, include_history=history)
        report = None
        if chosen:
            report = await decisions.shadow_report(
                session, fab=chosen, since=now - timedelta(hours=hours), limit=DIFFERENCES_SHOWN
            )
        return choices, chosen, rows, report

    choices, chosen, rows, report = await read(request, load)
    base = next((r for r in rows if r.id == start), None)
    if start is not None and base is None:
        every = await read(
            request,
            lambda s: dispatch_rule_sets.rule_sets(s, fab=chosen, include_history=True),
        )
        base = next((r for r in every if r.id == start), None)
    rules = list(base.definition.get("rules", [])) if base is not None else []
    filled = [
        {
            "rule": r.get("rule", ""),
            "weight": f"{r.get('weight', 1):g}",
            "params": ", ".join(f"{k}={v:g}" for k, v in sorted(r.get("params", {}).items())),
        }
        for r in rules
    ]
    blank = {"rule": "", "weight": "", "params": ""}
    draft = {
        "scope": _scope_value(base) if base is not None else "",
        "shadow": bool(base.shadow) if base is not None else False,
        "rows": filled + [blank] * max(0, max(RULE_ROWS, len(rules) + 2) - len(rules)),
    }
    catalogue = [(r.name, ", ".join(f"{k} {v:g}" for k, v in r.defaults.items())) for r in
                 policy.RULES.values()]  # fmt: skip
    return render(
        request, "rule_sets.html", user, fab=chosen, rows=rows, history=history, hours=hours,
        report=report, draft=draft, base=base, catalogue=catalogue,
        may_publish=user.may(roles.DISPATCH_RULES), fabs=choices["fabs"],
        areas=choices["areas"], groups=choices["groups"],
    )  # fmt: skip


def _params(text: str, row: int) -> dict[str, float]:
    """``name=value, name=value`` as the API's params object."""
    found: dict[str, float] = {}
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError(part)
            found[name.strip()] = float(value)
        except ValueError as exc:
            raise InvalidInput(
                f"rule row {row}: parameters are written name=value, name=value "
                f"(numbers); {part!r} is not",
                code="request.invalid",
            ) from exc
    return found


def publish_body(form: dict[str, str]) -> RuleSetPublish:
    """The form as the API's body, refused as the API refuses a malformed one."""
    rules = []
    for i in range(32):
        name = form.get(f"rule_{i}", "").strip()
        if not name:
            continue
        weight = form.get(f"weight_{i}", "").strip() or "1"
        params = _params(form.get(f"params_{i}", ""), i + 1)
        rules.append({"rule": name, "weight": weight, "params": params})
    if not rules:
        raise InvalidInput("choose at least one rule", code="dispatch.invalid_rule_set")
    kind, _, name = form.get("scope", "").partition("/")
    try:
        return RuleSetPublish.model_validate(
            {
                "fab": form.get("fab", ""),
                "area": name if kind == "area" else None,
                "tool_group": name if kind == "group" else None,
                "rules": rules,
                "note": form.get("note", "").strip() or None,
                "shadow": form.get("kind") == "shadow",
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}", code="request.invalid") from exc


@router.post("/rule-sets", response_class=HTMLResponse)
async def publish(request: Request, user: PostingUser) -> Response:
    """Publish a new version of a scope's rule set (production or shadow), as the API does."""
    form = await form_of(request)

    async def action() -> str:
        async def work(session: AsyncSession) -> str:
            # Inside the operation: a user who may not publish is refused before the form is
            # read, as the API's permission comes before its body.
            body = publish_body(form)
            row = await dispatch_rule_sets.publish_rule_set(
                session, fab=body.fab, area=body.area, tool_group=body.tool_group,
                rules=[r.model_dump() for r in body.rules], note=body.note,
                actor=user.username, shadow=body.shadow,
            )  # fmt: skip
            kind = "shadow" if row.shadow else "production"
            return f"Rule set {row.scope_key} version {row.version} ({kind}) is published."

        return await perform(
            request, user, roles.DISPATCH_RULES, "dispatch.publish_rule_set", work,
            key=form.get("key"),
        )  # fmt: skip

    return await run_action(request, user, "/console/rule-sets", action)
