"""Declarative base with a constraint naming convention, so migrations can name what they alter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, Integer, MetaData, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mes.db.types import JsonDocument, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Integer primary keys that are BIGINT on PostgreSQL but INTEGER on SQLite, where only
# "INTEGER PRIMARY KEY" is the autoincrementing rowid alias.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

# Standard SQL, so the same migration text works on SQLite and PostgreSQL.
CURRENT_TIMESTAMP = text("CURRENT_TIMESTAMP")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JsonDocument,
    }


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TimestampMixin:
    """Row bookkeeping. Business times (when a lot moved) come from the Clock, not from here.

    The values are computed in Python so the ORM knows them after a flush without a reload.
    """

    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=_utcnow, server_default=CURRENT_TIMESTAMP
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=_utcnow, onupdate=_utcnow, server_default=CURRENT_TIMESTAMP
    )
