"""Console actions on a lot's wafers, place and type (POST, CSRF-checked): split, merge, scrap,
ship, recall a shipment, future holds (arm, cancel), and the lot type (e-signature).

Each runs the API's service function through ``actions.perform``, as ``actions_router`` does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from mes.auth import roles
from mes.console.actions import perform, signature
from mes.console.actions_router import form_of, run_action
from mes.console.sessions import PostingUser
from mes.errors import InvalidInput
from mes.kit.api import CODE_PATTERN
from mes.lots import commands as c
from mes.lots import service as lots_service
from mes.lots.schemas import FutureActionCreate
from mes.lots.states import FutureActionKind, LotType

router = APIRouter(prefix="/console", include_in_schema=False)

Code = Annotated[str, Path(min_length=1, max_length=32, pattern=CODE_PATTERN)]


async def _wafers(request: Request) -> tuple[str, ...]:
    """The wafers ticked on the form (scribe ids)."""
    form = await request.form()
    chosen = tuple(v for v in form.getlist("wafer") if isinstance(v, str) and v)
    if not chosen:
        raise InvalidInput("tick the wafers first", code="lot.no_wafers_chosen")
    return chosen


@router.post("/lots/{lot}/split", response_class=HTMLResponse)
async def split(request: Request, lot: Code, user: PostingUser) -> Response:
    form = await form_of(request)

    async def action() -> str:
        wafers = await _wafers(request)

        async def work(session: AsyncSession) -> str:
            _parent, child = await lots_service.split(
                session, lot, c.Split(wafers=wafers), actor=user.principal,
                clock=request.app.state.clock,
            )  # fmt: skip
            return f"{len(wafers)} wafer(s) split from {lot} into the new lot {child.code}."

        return await perform(
            request, user, roles.LOT_SPLIT, "lots.split", work, key=form.get("key")
        )

    return await run_action(request, user, f"/console/lots/{lot}", action)


@router.post("/lots/{lot}/scrap", response_class=HTMLResponse)
async def scrap(request: Request, lot: Code, user: PostingUser) -> Response:
    form = await form_of(request)

    async def action() -> str:
        wafers = await _wafers(request)
        signed = signature(form.get("reason"), form.get("password"), "responsibility")
        command = c.Scrap(
            wafers=wafers, reason_code=form.get("reason_code", ""), comment=signed.reason
        )

        async def work(session: AsyncSession) -> str:
            await lots_service.scrap(
                session, lot, command, actor=user.principal, clock=request.app.state.clock
            )
            return f"{len(wafers)} wafer(s) of {lot} scrapped ({command.reason_code})."

        return await perform(
            request, user, roles.LOT_SCRAP, "lots.scrap", work, key=form.get("key"),
            signed=signed,
        )  # fmt: skip

    return await run_action(request, user, f"/console/lots/{lot}", action)


@router.post("/lots/{lot}/ship", response_class=HTMLResponse)
async def ship(request: Request, lot: Code, user: PostingUser) -> Response:
    form = await form_of(request)
    to_fab = form.get("to_fab", "")

    async def work(session: AsyncSession) -> str:
        await lots_service.ship(
            session, lot, c.Ship(to_fab=to_fab), actor=user.principal,
            clock=request.app.state.clock,
        )  # fmt: skip
        return f"Lot {lot} shipped to {to_fab}: in transit until received there."

    return await run_action(request, user, f"/console/lots/{lot}", lambda: perform(
        request, user, roles.LOT_TRANSFER, "lots.ship", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/lots/{lot}/merge", response_class=HTMLResponse)
async def merge(request: Request, lot: Code, user: PostingUser) -> Response:
    """Merge another lot (its every wafer) into this one: the API's checks (same product, route
    version, step and state)."""
    form = await form_of(request)
    source = form.get("source", "").strip()

    async def work(session: AsyncSession) -> str:
        if not source:
            raise InvalidInput("name the lot to merge into this one", code="lot.merge_source")
        await lots_service.merge(
            session, lot, c.Merge(source=source), actor=user.principal,
            clock=request.app.state.clock,
        )  # fmt: skip
        return f"Lot {source} merged into {lot}."

    return await run_action(request, user, f"/console/lots/{lot}", lambda: perform(
        request, user, roles.LOT_SPLIT, "lots.merge", work, key=form.get("key")
    ))  # fmt: skip


def _future_hold(form: dict[str, str]) -> c.AddFutureAction:
    """The form as the API's body (FutureActionCreate): the same bounds, refused the same way."""
    try:
        body = FutureActionCreate.model_validate(
            {
                "step_sequence": form.get("step_sequence", ""),
                "kind": form.get("kind") or FutureActionKind.HOLD_ON_ARRIVAL.value,
                "hold_code": form.get("hold_code", ""),
                "reason": form.get("reason", "").strip(),
            }
        )
    except ValidationError as exc:
        raise InvalidInput(
            "choose a later step, a hold code and say why (3 characters or more)",
            code="lot.future_hold_incomplete",
        ) from exc
    return c.AddFutureAction(
        step_sequence=body.step_sequence, hold_code=body.hold_code, reason=body.reason,
        kind=body.kind,
    )  # fmt: skip


@router.post("/lots/{lot}/future-holds", response_class=HTMLResponse)
async def future_hold(request: Request, lot: Code, user: PostingUser) -> Response:
    """Arm a hold at a later step (on arrival there, or after track-out there)."""
    form = await form_of(request)

    async def work(session: AsyncSession) -> str:
        command = _future_hold(form)
        await lots_service.add_future_action(
            session, lot, command, actor=user.principal, clock=request.app.state.clock
        )
        return f"Lot {lot} will be held ({command.hold_code}) at step {command.step_sequence}."

    return await run_action(request, user, f"/console/lots/{lot}", lambda: perform(
        request, user, roles.LOT_HOLD, "lots.add_future_action", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/lots/{lot}/future-holds/{action_id}/cancel", response_class=HTMLResponse)
async def cancel_future_hold(
    request: Request,
    lot: Code,
    action_id: Annotated[int, Path(ge=1, le=2**62)],
    user: PostingUser,
) -> Response:
    form = await form_of(request)

    async def work(session: AsyncSession) -> str:
        await lots_service.cancel_future_action(
            session, lot, action_id, clock=request.app.state.clock
        )
        return f"The future hold of lot {lot} is cancelled."

    return await run_action(request, user, f"/console/lots/{lot}", lambda: perform(
        request, user, roles.LOT_HOLD, "lots.cancel_future_action", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/lots/{lot}/recall", response_class=HTMLResponse)
async def recall(request: Request, lot: Code, user: PostingUser) -> Response:
    form = await form_of(request)
    reason = form.get("reason", "").strip()

    async def work(session: AsyncSession) -> str:
        if len(reason) < 3:
            raise InvalidInput("say why the shipment is recalled", code="lot.reason_required")
        await lots_service.recall(
            session, lot, c.Recall(reason=reason), actor=user.principal,
            clock=request.app.state.clock,
        )  # fmt: skip
        return f"Shipment of {lot} recalled: it is back at its step here."

    return await run_action(request, user, f"/console/lots/{lot}", lambda: perform(
        request, user, roles.LOT_TRANSFER, "lots.recall", work, key=form.get("key")
    ))  # fmt: skip


@router.post("/lots/{lot}/lot-type", response_class=HTMLResponse)
async def change_lot_type(request: Request, lot: Code, user: PostingUser) -> Response:
    """Change what the lot is for (production, engineering, monitor, dummy, rework) under an
    e-signature, as ``POST /api/v1/lots/{lot}/lot-type``; refused while the lot runs."""
    form = await form_of(request)

    async def action() -> str:
        signed = signature(form.get("reason"), form.get("password"), "approval")

        async def work(session: AsyncSession) -> str:
            try:
                chosen = LotType(form.get("lot_type", ""))
            except ValueError as exc:
                raise InvalidInput(
                    f"lot_type: one of {', '.join(t.value for t in LotType)}",
                    code="request.invalid",
                ) from exc
            command = c.ChangeLotType(lot_type=chosen, reason=signed.reason)
            await lots_service.change_lot_type(
                session, lot, command, actor=user.principal, clock=request.app.state.clock
            )
            return f"Lot {lot} is now of type {chosen.value}."

        return await perform(
            request, user, roles.LOT_TYPE, "lots.change_lot_type", work, key=form.get("key"),
            signed=signed,
        )  # fmt: skip

    return await run_action(request, user, f"/console/lots/{lot}", action)
