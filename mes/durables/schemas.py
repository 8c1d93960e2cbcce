from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from mes.durables.models import CarrierState
from mes.kit.api import CodeStr


class CarrierCreate(BaseModel):
    code: CodeStr
    fab: CodeStr
    capacity: int = Field(default=25, ge=1, le=25)


class CarrierRead(BaseModel):
    code: str
    fab: str
    capacity: int
    state: CarrierState
    uses_since_clean: int
    last_cleaned_at: datetime | None
