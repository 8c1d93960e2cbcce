from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from mes.carriers.models import SorterJobKind
from mes.durables.rules import CarrierLocation
from mes.equipment.models import LoadPortTransferState
from mes.kit.api import CodeStr, InputModel
from mes.lots.schemas import LotRead, Version

Scribe = Annotated[str, Field(min_length=1, max_length=32)]
Slot = Annotated[int, Field(ge=1, le=25)]
SlotMapIn = Annotated[dict[Scribe, Slot], Field(min_length=1, max_length=25)]
Stocker = Annotated[str, Field(min_length=1, max_length=32)]


class SlotRead(BaseModel):
    slot: int
    wafer: str
    lot: str


class SlotMapRead(BaseModel):
    carrier: str
    capacity: int
    lots: list[str]
    # The 25 slots (up to the capacity) in order; None: empty.
    slots: list[SlotRead | None]


class CarrierMove(InputModel):
    to: Literal[CarrierLocation.STOCKER, CarrierLocation.IN_TRANSIT]
    stocker: Stocker | None = None


class LoadPortRead(BaseModel):
    tool: str
    port_number: int
    transfer_state: LoadPortTransferState
    in_service: bool
    carrier: str | None


class PortLoad(InputModel):
    carrier: CodeStr


class PortUnload(InputModel):
    to: Literal[CarrierLocation.STOCKER, CarrierLocation.IN_TRANSIT] = CarrierLocation.IN_TRANSIT
    stocker: Stocker | None = None


class PortService(InputModel):
    in_service: bool
    reason: str = Field(min_length=1, max_length=2000)


class LotCarrierRequest(InputModel):
    carrier: CodeStr
    # Scribe id -> slot for every active wafer; omitted: the slots the wafers have.
    slots: SlotMapIn | None = None
    version: Version = None


class SorterJobRequest(InputModel):
    kind: SorterJobKind
    lot: CodeStr
    # reslot: the wafers that move and their new slots; split: every moving wafer's slot in
    # the target carrier (omitted: the slots they have); transfer: every wafer's slot.
    slots: SlotMapIn | None = None
    # split: the wafers that go to the child lot
    wafers: list[Scribe] | None = Field(default=None, min_length=1, max_length=24)
    # transfer and split: the carrier the wafers go to (split: omitted, the MES chooses)
    carrier: CodeStr | None = None
    # merge: the lot whose wafers come into ``lot``'s carrier
    source: CodeStr | None = None
    version: Version = None


class SorterMove(BaseModel):
    wafer: str
    from_carrier: str | None
    from_slot: int | None
    to_carrier: str | None
    to_slot: int | None


class SorterJobRead(BaseModel):
    id: int
    kind: SorterJobKind
    fab: str
    lot: str
    other_lot: str | None
    source_carrier: str | None
    target_carrier: str | None
    moves: list[SorterMove]
    requested_by: str
    completed_at: datetime


class SorterJobResult(BaseModel):
    job: SorterJobRead | None  # None: a lot put into its first carrier (no sorter move)
    # The lots as the job left them: the lot, then the split's child or the merge's source.
    lots: list[LotRead]
