from __future__ import annotations

from datetime import datetime
from zoneinfo import available_timezones

from pydantic import BaseModel, Field, field_validator

from mes.fabs.models import ProcessingKind
from mes.kit.api import CodeStr, InputModel, Name, ReadModel

_ZONES = frozenset(available_timezones()) | {"UTC"}


def _check_zone(value: str | None) -> str | None:
    if value is not None and value not in _ZONES:
        raise ValueError(f"unknown IANA time zone {value!r}")
    return value


class FabCreate(InputModel):
    code: CodeStr = Field(max_length=16)
    name: Name
    timezone: str = Field(default="UTC", max_length=64)

    _zone = field_validator("timezone")(_check_zone)


class FabUpdate(InputModel):
    name: Name | None = None
    timezone: str | None = Field(default=None, max_length=64)

    _zone = field_validator("timezone")(_check_zone)


class FabRead(ReadModel):
    code: str
    name: str
    timezone: str
    created_at: datetime
    updated_at: datetime


class AreaCreate(InputModel):
    code: CodeStr
    name: Name


class AreaUpdate(InputModel):
    name: Name


class AreaRead(BaseModel):
    fab: str
    code: str
    name: str


class ToolGroupCreate(InputModel):
    code: CodeStr
    name: Name
    processing_kind: ProcessingKind


class ToolGroupUpdate(InputModel):
    name: Name


class ToolGroupRead(ReadModel):
    code: str
    name: str
    processing_kind: ProcessingKind
