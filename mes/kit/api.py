"""Request and response building blocks shared by the routers."""

from __future__ import annotations

import math
import re
import types
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

from fastapi import Depends, Path, Query, Request
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mes.clock import Clock

T = TypeVar("T")

# Business ids (fab F1, tool ETCH01, lot L24-0001.01): bounded, so no path reaches the database
# with a value that a column cannot hold.
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}$"
CodeStr = Annotated[str, Field(min_length=1, max_length=32, pattern=CODE_PATTERN)]
CodePath = Annotated[str, Path(min_length=1, max_length=32, pattern=CODE_PATTERN)]
VersionPath = Annotated[int, Path(ge=1, le=1_000_000)]
Name = Annotated[str, Field(min_length=1, max_length=128)]
Actor = Annotated[str, Field(min_length=1, max_length=64)]

MAX_PAGE_SIZE = 500

# Times a caller sends: with a UTC offset (a naive time is ambiguous across fabs' time zones)
# and within two centuries, so that no date arithmetic on them (a due date, a PM interval, a
# report window) leaves the calendar and fails deep in a request.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _within_calendar(value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"must lie between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    return value


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_number(value: Any) -> Any:
    # Pydantic would read 1700000000 or "0.5" as seconds since 1970; the schema says date-time.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("a time is an ISO 8601 date-time with a UTC offset, not a number")
    return value


def _day_not_a_number(value: Any) -> Any:
    # Pydantic reads 0 or "19000" as a count of days or seconds since 1970.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("a day is an ISO 8601 date (2026-03-01), not a number")
    return value


CalendarDay = Annotated[date, BeforeValidator(_day_not_a_number)]

Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_within_calendar)
]


class PageParams(BaseModel):
    limit: int
    offset: int


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageQuery = Annotated[PageParams, Depends(page_params)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


# Control characters other than tab and line breaks, and lone UTF-16 surrogates (which JSON
# can spell as "\\ud800" but no database can store): refused in every text a caller sends.
UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def printable(value: Any) -> Any:
    """``value`` unchanged, if no text in it (at any depth) holds an unprintable character and
    no number is NaN or infinite (JSON has neither; Python's parser lets them through)."""
    if isinstance(value, str):
        if UNPRINTABLE.search(value):
            raise ValueError("control characters and lone surrogates are not allowed in text")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            printable(key)
            printable(item)
    elif isinstance(value, list | tuple):
        for item in value:
            printable(item)
    return value


class InputModel(BaseModel):
    """A request body: a field the model does not know is refused (422), not dropped, so that a
    misspelt field (``priorty``) cannot pass for a request that set it; and no text in it may
    carry control characters (a NUL byte reached PostgreSQL and failed there, a 500)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _printable(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None:
            field = cls.model_fields[info.field_name]
            if _bool_where_not_allowed(field.annotation, value):
                raise ValueError("true/false is not a number")
        return printable(value)


def _admits_bool(annotation: Any) -> bool:
    """Whether a field typed ``annotation`` may hold true/false (bool, Any, or a union with
    either); Pydantic's lax mode would otherwise read ``false`` as the number 0."""
    if annotation in (bool, Any, object):
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _admits_bool(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_admits_bool(arg) for arg in get_args(annotation))
    return False


def _bool_where_not_allowed(annotation: Any, value: Any) -> bool:
    if isinstance(value, bool):
        return not _admits_bool(annotation)
    origin = get_origin(annotation)
    if origin is Annotated:
        return _bool_where_not_allowed(get_args(annotation)[0], value)
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        args = [arg for arg in get_args(annotation) if arg is not Ellipsis]
        # A list of one element type: every element is checked against it.
        return len(args) == 1 and any(_bool_where_not_allowed(args[0], item) for item in value)
    return False


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


async def fetch_page(
    session: AsyncSession,
    stmt: Select[*tuple[Any, ...]],
    page: PageParams,
    *,
    scalars: bool = True,
) -> tuple[list[Any], int]:
    """Run ``stmt`` for one page and count all rows it matches.

    With ``scalars`` the first column of each row is returned (ORM entities), else whole rows.
    """
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    paged = stmt.limit(page.limit).offset(page.offset)
    if scalars:
        return list((await session.scalars(paged)).all()), int(total or 0)
    return [tuple(row) for row in (await session.execute(paged)).all()], int(total or 0)


async def request_clock(request: Request) -> Clock:
    # async: FastAPI runs a plain def dependency in a worker thread, a hop that cost about 5 %
    # of a lot move's CPU in the benchmark.
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(request_clock)]
