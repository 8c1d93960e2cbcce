"""Request and response building blocks shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
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
