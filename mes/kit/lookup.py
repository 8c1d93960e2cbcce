"""Load-or-refuse helpers: a missing business id is a 404 with the domain's own code."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from mes.errors import NotFound

M = TypeVar("M")


async def get_by_key(
    session: AsyncSession,
    model: type[M],
    key_column: InstrumentedAttribute[Any],
    value: Any,
    *,
    code: str,
    what: str,
    options: tuple[Any, ...] = (),
    for_update: bool = False,
) -> M:
    stmt = select(model).where(key_column == value).options(*options)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.scalars(stmt)).unique().one_or_none()
    if found is None:
        raise NotFound(f"{what} {value!r} does not exist", code=code)
    return found
