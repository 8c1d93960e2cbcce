"""Lots: move wafers between lots (split, merge), scrap wafers, add bonus wafers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status

from mes.auth import roles
from mes.kit.api import CodePath
from mes.lots import commands as c
from mes.lots import schemas as s
from mes.lots import service
from mes.lots.http import Answer, LotWrite, lot_write
from mes.lots.models import Lot

router = APIRouter(prefix="/lots", tags=["lots"])

Splitter = Annotated[LotWrite, lot_write(roles.LOT_SPLIT)]
Scrapper = Annotated[LotWrite, lot_write(roles.LOT_SCRAP)]
Bonus = Annotated[LotWrite, lot_write(roles.LOT_BONUS)]


@router.post("/{lot}/split", response_model=s.SplitResult, status_code=status.HTTP_201_CREATED)
async def split(lot: CodePath, body: s.SplitRequest, tx: Splitter) -> Answer:
    """Move chosen wafers into a child lot (`<lot>.01`, …) at the same step; the child goes
    into `carrier`, or (parent in a carrier, none named) a free carrier the MES chooses."""
    command = c.Split(
        wafers=tuple(body.wafers), version=tx.version(body.version), carrier=body.carrier
    )

    async def split_off() -> s.SplitResult:
        parent, child = await service.split(tx.session, lot, command, actor=tx.by, clock=tx.clock)
        return s.SplitResult(parent=await tx.read(parent.code), child=await tx.read(child.code))

    return await tx.run(split_off)


@router.post("/{lot}/merge", response_model=s.LotRead)
async def merge(lot: CodePath, body: s.MergeRequest, tx: Splitter) -> Answer:
    """Merge another lot (same product, route version, step, state) into this one."""
    command = c.Merge(source=body.source, version=tx.version(body.version))
    return await tx.run_lot(
        lambda: service.merge(tx.session, lot, command, actor=tx.by, clock=tx.clock)
    )


@router.post("/{lot}/scrap", response_model=s.LotRead)
async def scrap(lot: CodePath, body: s.ScrapRequest, tx: Scrapper) -> Answer:
    """Scrap wafers with a reason code (e-signature)."""
    command = c.Scrap(
        wafers=tuple(body.wafers),
        reason_code=body.reason_code,
        comment=body.comment,
        version=tx.version(body.version),
    )

    async def signed() -> Lot:
        await tx.sign(body.signature)
        return await service.scrap(tx.session, lot, command, actor=tx.by, clock=tx.clock)

    return await tx.run_lot(signed)


@router.post("/{lot}/bonus", response_model=s.LotRead)
async def bonus(lot: CodePath, body: s.BonusRequest, tx: Bonus) -> Answer:
    """Add wafers to the lot with a reason code."""
    command = c.Bonus(
        count=body.count,
        reason_code=body.reason_code,
        comment=body.comment,
        version=tx.version(body.version),
    )
    return await tx.run_lot(
        lambda: service.bonus(tx.session, lot, command, actor=tx.by, clock=tx.clock)
    )
