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
        # FOR NO KEY UPDATE on PostgreSQL: the row lock an UPDATE of non-key columns takes. It
        # excludes every other writer of the row, but not the FOR KEY SHARE lock with which
        # PostgreSQL checks a foreign key pointing at the row; plain FOR UPDATE would block
        # those checks too and deadlock lot transactions (a split child re-checks its parent).
        stmt = stmt.with_for_update(key_share=True)
    found = (await session.scalars(stmt)).unique().one_or_none()
    if found is None:
        raise NotFound(f"{what} {value!r} does not exist", code=code)
    return found
