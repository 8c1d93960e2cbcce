from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, Field

from mes.kit.api import CodeStr, ReadModel
from mes.lots.states import MAX_WAFERS_PER_LOT, LotType
from mes.planning.rules import DueRule, RatePer

PriorityMix = dict[str, float]


class StartPlanCreate(BaseModel):
    code: CodeStr
    fab: CodeStr
    product: CodeStr
    route: CodeStr | None = Field(default=None, description="default: the product's only route")
    # At least one lot per hundred hours (or days): a smaller rate is no plan, and its
    # interval would overflow the calendar.
    rate: float = Field(ge=0.01, le=1_000_000, description="lots per `rate_per`")
    rate_per: RatePer = RatePer.DAY
    wafer_count: int = Field(default=25, ge=1, le=MAX_WAFERS_PER_LOT)
    due_rule: DueRule = DueRule.X_FACTOR
    due_value: float = Field(
        default=3.0, gt=0, le=1000, description="x-factor, or days for fixed_days"
    )
    priority_mix: PriorityMix = Field(
        default_factory=lambda: {"normal": 1.0},
        description='weights by priority class, e.g. {"normal": 80, "hot": 15, "super_hot": 5}',
    )
    max_wip: int | None = Field(
        default=None, ge=1, le=100_000, description="release only while fewer lots are in line"
    )
    catch_up_max: int = Field(
        default=1, ge=1, le=1000, description="most lots released at once after downtime"
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="of the priority draw")
    lot_type: LotType = Field(default=LotType.PRODUCTION, description="of the lots it starts")
    starts_at: AwareDatetime | None = Field(default=None, description="default: now")
    active: bool = True
    note: str | None = Field(default=None, max_length=2000)


class StartPlanUpdate(BaseModel):
    """Changes to a plan. ``version`` is the one the caller read (optimistic locking). A new
    rate or start applies from the next release on."""

    version: int = Field(ge=1, le=2**31 - 1)
    route: CodeStr | None = None
    rate: float | None = Field(default=None, ge=0.01, le=1_000_000)
    rate_per: RatePer | None = None
    wafer_count: int | None = Field(default=None, ge=1, le=MAX_WAFERS_PER_LOT)
    due_rule: DueRule | None = None
    due_value: float | None = Field(default=None, gt=0, le=1000)
    priority_mix: PriorityMix | None = None
    max_wip: int | None = Field(default=None, ge=1, le=100_000)
    catch_up_max: int | None = Field(default=None, ge=1, le=1000)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    lot_type: LotType | None = None
    starts_at: AwareDatetime | None = None
    active: bool | None = None
    note: str | None = Field(default=None, max_length=2000)


class StartPlanRead(BaseModel):
    code: str
    fab: str
    product: str
    route: str | None
    rate: float
    rate_per: RatePer
    interval_s: float
    wafer_count: int
    due_rule: DueRule
    due_value: float
    priority_mix: PriorityMix
    max_wip: int | None
    catch_up_max: int
    seed: int
    lot_type: LotType
    starts_at: datetime
    active: bool
    note: str | None
    created_by: str
    version: int
    released: int
    last_sequence: int | None
    next_release_at: datetime | None = Field(description="the next slot's time (None: inactive)")


class ReleaseRead(ReadModel):
    plan: str
    sequence: int
    slot_at: datetime
    released_at: datetime
    lot: str
    priority_class: str
    due_at: datetime | None
    skipped_before: int
    owner: str
